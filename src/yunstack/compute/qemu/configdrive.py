"""The OpenStack config drive: an ISO 9660 image labelled ``config-2``, built as Nova does.

Besides Nova's ``openstack/<version>/`` files, every drive carries ``yunstack/host_time``: the
host's clock when the drive was built, in epoch seconds with milliseconds (``1764921600.123``).
A guest started from a memory template wakes up with the template's clock, which is behind by the
time since the template was saved; the tiny image sets its clock from this file when a new drive
is hot-plugged after such a start (``docs/explanation/memory-templates.md``).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from yunstack.compute.driver import ConfigDrive
from yunstack.compute.qemu.disk import run_tool

VERSIONS = ("latest", "2012-08-10")
GENISOIMAGE_TIMEOUT = 60.0


def files(drive: ConfigDrive) -> dict[str, bytes]:
    """The files of ``openstack/<version>/``, by name (the same in every version we serve)."""
    found: dict[str, bytes] = {"meta_data.json": _json(drive.meta_data)}
    if drive.user_data is not None:
        found["user_data"] = drive.user_data
    if drive.network_data is not None:
        found["network_data.json"] = _json(drive.network_data)
    if drive.vendor_data is not None:
        found["vendor_data.json"] = _json(drive.vendor_data)
    return found


def host_time(clock: Callable[[], float] = time.time) -> bytes:
    """``yunstack/host_time``: ``clock()`` in epoch seconds with milliseconds."""
    return f"{clock():.3f}\n".encode()


def write_tree(drive: ConfigDrive, root: Path, *, clock: Callable[[], float] = time.time) -> None:
    """Write the drive's files under ``root/openstack/<version>/`` for every version we serve, and
    ``root/yunstack/host_time`` with ``clock()``."""
    for version in VERSIONS:
        folder = root / "openstack" / version
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files(drive).items():
            (folder / name).write_bytes(content)
    ours = root / "yunstack"
    ours.mkdir(exist_ok=True)
    (ours / "host_time").write_bytes(host_time(clock))


def genisoimage_argv(binary: str, iso: Path, tree: Path) -> list[str]:
    """Nova's genisoimage arguments (``nova.virt.configdrive``)."""
    return [binary, "-o", str(iso), "-ldots", "-allow-lowercase", "-allow-multidot", "-l",
            "-publisher", "yunstack", "-quiet", "-J", "-r", "-V", "config-2", str(tree)]


async def build_iso(drive: ConfigDrive, iso: Path, *, genisoimage: str = "genisoimage") -> None:
    """Build the config drive ISO at ``iso``, replacing it atomically."""
    tmp_iso = iso.with_name(iso.name + ".part")
    with tempfile.TemporaryDirectory(prefix="configdrive-", dir=iso.parent) as tmp:
        write_tree(drive, Path(tmp))
        try:
            await run_tool(genisoimage_argv(genisoimage, tmp_iso, Path(tmp)),
                           f"building config drive {iso}", GENISOIMAGE_TIMEOUT)
            tmp_iso.replace(iso)
        finally:
            tmp_iso.unlink(missing_ok=True)


def _json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(data), sort_keys=True).encode()
