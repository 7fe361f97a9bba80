"""Copying a powered-off guest's local disks between hosts: ``qemu-nbd`` serves, ``qemu-img`` reads.

The source serves each overlay *file* as raw bytes (``qemu-nbd --read-only -f raw``): the copy is
the qcow2 file itself, so only the clusters the guest wrote travel (the base image is on both
hosts, from the image service), and nothing on the way interprets the image.  The destination
reads it with ``qemu-img convert`` (sparse: runs of zeros are not written), points the copy's
backing file at its own cached base (``rebase -u``: the same bytes under another path) and grows
it to the new flavor's size.

Each export takes one client and ends when that client leaves (``qemu-nbd`` without
``--persistent``), and both ends authenticate with a pre-shared key that the control plane makes
for this one move (TLS-PSK): nobody else on the network reads a guest's disk, and a second reader
is refused.  Why not ``qemu-storage-daemon`` or a mirror job as for live migration: there is no
running QEMU to mirror from, and a one-shot read-only export needs no monitor to tear down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import signal
from pathlib import Path
from urllib.parse import urlsplit

from yunstack.compute.qemu import disk
from yunstack.errors import DriverError

IDENTITY = "yunstack"  # the PSK identity; the key is what authenticates
_SECRET = re.compile(r"^[0-9a-f]{64}$")
_EXPORT = re.compile(r"^disk[0-9]{1,3}$")
KILL_TIMEOUT = 5.0


def export_name(index: int) -> str:
    return f"disk{index}"


def write_key(directory: Path, secret: str) -> Path:
    """The PSK file QEMU's ``tls-creds-psk`` reads (``identity:hexkey``), readable by us only."""
    if not _SECRET.match(secret):
        raise DriverError(detail="the disk copy's key must be 64 lowercase hex digits")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "keys.psk"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{IDENTITY}:{secret}\n")
    return directory


def _opt(value: object) -> str:
    """A value inside QEMU's ``key=value,...`` syntax (a comma is doubled)."""
    return str(value).replace(",", ",,")


def uri(address: str, port: int, index: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"nbd://{host}:{port}/{export_name(index)}"


def parse(source: str) -> tuple[str, int, str]:
    """(address, port, export) of an export URI, refused unless it is exactly what ``uri`` makes.

    The URI comes from another host; it goes into QEMU's option syntax, so nothing but an IP
    address, a port and our own export names may pass.
    """
    try:
        parts = urlsplit(source)
        address = str(ipaddress.ip_address(parts.hostname or ""))
        port = parts.port
    except ValueError:
        raise DriverError(detail=f"not a disk export address: {source!r}") from None
    export = parts.path.lstrip("/")
    if parts.scheme != "nbd" or port is None or not _EXPORT.match(export) or parts.query or parts.fragment:
        raise DriverError(detail=f"not a disk export address: {source!r}")
    return address, port, export


def is_exporter(pid: int, path: Path) -> bool:
    """True when ``pid`` is a live ``qemu-nbd`` serving ``path`` (a pidfile can outlive its process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return state not in ("Z", "X") and str(path).encode() in cmdline and any(
        part.endswith(b"qemu-nbd") for part in cmdline[:1])


async def serve(qemu_nbd: str, path: Path, address: str, port: int, index: int, key_dir: Path,
                pidfile: Path) -> str:
    """Serve ``path`` read-only to one TLS-PSK client on ``address:port``; returns its URI."""
    argv = [qemu_nbd, "--object", f"tls-creds-psk,id=tls0,endpoint=server,dir={_opt(key_dir)}",
            "--tls-creds", "tls0", "--read-only", "--format", "raw", "--bind", address, "--port", str(port),
            "--export-name", export_name(index), "--shared", "1", "--pid-file", str(pidfile), "--fork",
            str(path)]
    # --fork returns once the socket listens: the URI is good when this does.
    await disk.run_tool(argv, f"exporting {path.name}", 60.0)
    return uri(address, port, index)


async def stop(pidfile: Path, path: Path) -> None:
    """End the export of ``path`` whose pid is in ``pidfile`` (gone already: nothing to do)."""
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    if is_exporter(pid, path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_TIMEOUT
        while is_exporter(pid, path) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if is_exporter(pid, path):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


async def pull(qemu_img: str, source: str, key_dir: Path, base: Path, base_format: str, dest: Path,
               size_bytes: int) -> int:
    """Copy the overlay served at ``source`` to ``dest``, on ``base``, at least ``size_bytes`` large.

    Returns the bytes the copy takes on disk.  The file that arrives must be a qcow2 image with no
    external data file: its backing file is replaced by ``base`` before anything opens it with one.
    """
    address, port, export = parse(source)
    part = dest.with_name(dest.name + ".part")
    opts = (f"driver=raw,file.driver=nbd,file.server.type=inet,file.server.host={address},"
            f"file.server.port={port},file.export={export},file.tls-creds=tls0")
    argv = [qemu_img, "convert", "--object",
            f"tls-creds-psk,id=tls0,endpoint=client,dir={_opt(key_dir)},username={IDENTITY}",
            "--image-opts", opts, "-O", "raw", str(part)]
    try:
        await disk.run_tool(argv, f"copying disk {export} from {address}")
        # ``info`` reads the header without opening the backing file (a path on the source host).
        raw = await disk.run_tool([qemu_img, "info", "--output=json", "-f", "qcow2", str(part)],
                                  f"checking the disk {export} that arrived")
        info = json.loads(raw)
        if (info.get("format-specific", {}).get("data", {}) or {}).get("data-file"):
            raise DriverError(detail=f"the disk {export} that arrived uses an external data file; refused")
        await disk.run_tool([qemu_img, "rebase", "-q", "-u", "-F", base_format, "-b", str(base.resolve()),
                             str(part)], f"pointing the disk {export} at this host's base image")
        if size_bytes:
            await disk.resize(qemu_img, part, size_bytes)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return dest.stat().st_blocks * 512
