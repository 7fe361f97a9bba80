"""Disk images through ``qemu-img``: overlays, info, standalone copies and resizes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yunstack.tool as tool
from yunstack.errors import DriverError, DriverMisconfigured

GIB = 1024**3
DISK_CACHE_MODES = ("none", "writeback", "writethrough")  # QEMU's -drive cache= values we allow
QEMU_IMG_TIMEOUT = 600.0


async def run_tool(argv: list[str], what: str, timeout: float = QEMU_IMG_TIMEOUT) -> str:
    """``yunstack.tool.run_tool`` with this module's longer default timeout (image copies are slow)."""
    return await tool.run_tool(argv, what, timeout)


async def info(qemu_img: str, path: Path, *, force_share: bool = False) -> dict[str, Any]:
    """``qemu-img info --output=json`` of one image (``force_share`` reads an image in use)."""
    argv = [qemu_img, "info", "--output=json"] + (["-U"] if force_share else []) + [str(path)]
    data: dict[str, Any] = json.loads(await run_tool(argv, f"reading image info of {path}"))
    return data


async def create_overlay(qemu_img: str, base: Path, base_format: str, dest: Path, size_bytes: int) -> None:
    """Create ``dest`` as a qcow2 copy-on-write overlay on ``base``, ``size_bytes`` large.

    ``size_bytes`` 0 keeps the base image's virtual size; a size below it is refused.
    """
    base_size = int((await info(qemu_img, base))["virtual-size"])
    if size_bytes and size_bytes < base_size:
        raise DriverError(
            detail=f"disk of {size_bytes} bytes is smaller than image {base} ({base_size} bytes)"
        )
    argv = [qemu_img, "create", "-q", "-f", "qcow2", "-F", base_format, "-b", str(base.resolve()),
            str(dest), str(size_bytes or base_size)]
    await run_tool(argv, f"creating overlay {dest} on {base}")


async def convert_standalone(qemu_img: str, source: Path, dest: Path, *, force_share: bool = False) -> None:
    """Write ``source`` (with its whole backing chain) to ``dest`` as one qcow2 without backing."""
    tmp = dest.with_name(dest.name + ".part")
    argv = [qemu_img, "convert", "-O", "qcow2"] + (["-U"] if force_share else []) + [str(source), str(tmp)]
    try:
        await run_tool(argv, f"converting {source} to {dest}")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


async def resize(qemu_img: str, path: Path, size_bytes: int) -> None:
    """Grow the image at ``path`` to ``size_bytes``; shrinking is refused."""
    current = int((await info(qemu_img, path))["virtual-size"])
    if size_bytes < current:
        raise DriverError(detail=f"cannot shrink {path} from {current} to {size_bytes} bytes")
    if size_bytes > current:
        await run_tool([qemu_img, "resize", "-q", str(path), str(size_bytes)], f"resizing {path}")


def supports_direct_io(directory: Path) -> bool:
    """True when files in ``directory`` can be opened with O_DIRECT (QEMU's ``cache=none``).

    tmpfs and some network file systems refuse it; QEMU would then fail to open the disk, so the
    driver probes once per directory with a scratch file instead of guessing from the fs type.
    """
    probe = directory / ".o_direct_probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    os.close(fd)
    return True


def opens_direct(path: Path) -> bool:
    """True when the existing file or device ``path`` opens with O_DIRECT (read-only: nothing is written)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    return True


def volume_cache_mode(configured: str, source: Path) -> str:
    """The ``cache=`` of a volume: the configured mode, ``auto`` resolved on the volume itself.

    The volume's directory belongs to the volume backend, so the probe opens the volume (read-only)
    rather than writing a scratch file next to it as ``cache_mode`` does in the instance directory.
    """
    if configured == "auto":
        return "none" if opens_direct(source) else "writeback"
    return cache_mode(configured, source.parent)


def cache_mode(configured: str, directory: Path) -> str:
    """The ``cache=`` of a root disk in ``directory``: the configured mode, ``auto`` resolved."""
    if configured in DISK_CACHE_MODES:
        return configured
    if configured != "auto":
        raise DriverMisconfigured(
            detail=f"qemu.disk_cache must be 'auto', 'none', 'writeback' or 'writethrough', not {configured!r}")
    return "none" if supports_direct_io(directory) else "writeback"
