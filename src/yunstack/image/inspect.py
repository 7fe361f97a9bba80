"""What uploaded image bytes really are: format detection, safety checks, virtual size.

The declared ``disk_format`` is never trusted.  We read the headers ourselves first (magic bytes,
and for qcow2 and vmdk the fields that point at other files), and only then ask
``qemu-img info --output=json`` (without ``-f``, so qemu probes too) for a second opinion and the
virtual size.  The order matters: ``qemu-img info`` opens a qcow2's external data file and a
vmdk's extents, so a file that names host paths must be refused before qemu ever sees it.

Rules (as Glance enforces them since the 2024 format-inspector fixes):

- the detected format must equal the declared one; ``raw`` means "none of the known formats";
  ``iso`` must be ISO 9660;
- a qcow2 with a backing file or an external data file is refused: a guest booted from it
  would read a host file;
- a vmdk must be a single-extent ``monolithicSparse`` or ``streamOptimized`` file;
- qemu-img must agree with our detection and report no backing file or data file.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from yunstack.errors import BadRequest, DriverMisconfigured, ImageFormatMismatch

SUPPORTED_FORMATS = ("qcow2", "raw", "iso", "vmdk", "vhd", "vhdx", "vdi")

# Our names -> qemu-img's driver names.
QEMU_NAMES = {"qcow2": "qcow2", "raw": "raw", "iso": "raw", "vmdk": "vmdk", "vhd": "vpc",
              "vhdx": "vhdx", "vdi": "vdi"}

_QCOW2_MAGIC = b"QFI\xfb"
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2
_VDI_SIGNATURE = 0xBEDA107F
_ISO_OFFSETS = (0x8001, 0x8801, 0x9001)
_VMDK_SAFE_TYPES = ("monolithicSparse", "streamOptimized")
_VMDK_EXTENT = re.compile(r'^\s*(RW|RDONLY|NOACCESS)\s+\d+\s+\S+', re.MULTILINE)
_VMDK_CREATE_TYPE = re.compile(r'^\s*createType\s*=\s*"([^"]*)"', re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class Inspection:
    """What the bytes are: our format name and the guest-visible size in bytes."""

    format: str
    virtual_size: int


def unsupported(disk_format: str) -> BadRequest:
    """The error for a disk_format we cannot inspect (ami, aki, ploop, ...)."""
    return BadRequest("disk_format {fmt} is not supported; supported formats: {supported}.",
                      fmt=disk_format, supported=", ".join(SUPPORTED_FORMATS))


def _read_at(fh: BinaryIO, offset: int, length: int) -> bytes:
    fh.seek(offset)
    return fh.read(length)


def detect(path: Path) -> str:
    """The format named by the file's magic bytes; ``raw`` when none matches.

    ``vmdk-descriptor`` is returned for a plain-text vmdk descriptor: it only points at other files.
    """
    with open(path, "rb") as fh:
        head = fh.read(512)
        if head.startswith(_QCOW2_MAGIC):
            return "qcow2"
        if head.startswith(b"KDMV"):
            return "vmdk"
        if head.startswith(b"# Disk DescriptorFile"):
            return "vmdk-descriptor"
        if head.startswith(b"conectix"):
            return "vhd"
        if head.startswith(b"vhdxfile"):
            return "vhdx"
        if len(head) >= 0x44 and struct.unpack_from("<I", head, 0x40)[0] == _VDI_SIGNATURE:
            return "vdi"
        for offset in _ISO_OFFSETS:
            if _read_at(fh, offset, 5) == b"CD001":
                return "iso"
    return "raw"


def _check_qcow2_header(path: Path) -> None:
    with open(path, "rb") as fh:
        header = fh.read(104)
    if len(header) < 72:
        raise ImageFormatMismatch(declared="qcow2", actual="a truncated qcow2 header")
    version, backing_offset = struct.unpack_from(">IQ", header, 4)
    if backing_offset != 0:
        raise BadRequest("Image data refused: this qcow2 has a backing file, which would expose "
                         "host files to the guest. Upload a flattened image (qemu-img convert -O qcow2).")
    if version >= 3 and len(header) >= 80:
        (incompatible,) = struct.unpack_from(">Q", header, 72)
        if incompatible & _QCOW2_INCOMPAT_DATA_FILE:
            raise BadRequest("Image data refused: this qcow2 uses an external data file, which would "
                             "expose host files to the guest. Upload a self-contained image.")


def _check_vmdk_header(path: Path) -> None:
    with open(path, "rb") as fh:
        header = fh.read(64)
        if len(header) < 44:
            raise ImageFormatMismatch(declared="vmdk", actual="a truncated vmdk header")
        desc_sector, desc_sectors = struct.unpack_from("<QQ", header, 28)
        if desc_sectors == 0 or desc_sectors > 2048:
            # No embedded descriptor (or an absurd one): streamOptimized files always have one.
            raise BadRequest("Image data refused: the vmdk has no usable embedded descriptor.")
        text = _read_at(fh, desc_sector * 512, desc_sectors * 512).split(b"\0", 1)[0]
    desc = text.decode("latin-1")
    kind = _VMDK_CREATE_TYPE.search(desc)
    if kind is None or kind.group(1) not in _VMDK_SAFE_TYPES:
        raise BadRequest("Image data refused: vmdk createType {kind} is not allowed; only {safe}.",
                         kind=kind.group(1) if kind else "(missing)", safe=" or ".join(_VMDK_SAFE_TYPES))
    if len(_VMDK_EXTENT.findall(desc)) != 1:
        raise BadRequest("Image data refused: a vmdk must have exactly one extent (no external files).")


def qemu_info(path: Path, qemu_img: str = "qemu-img", timeout: float = 60.0) -> dict[str, Any]:
    """``qemu-img info --output=json`` of a file, letting qemu probe the format itself."""
    try:
        done = subprocess.run([qemu_img, "info", "--output=json", str(path)], capture_output=True,
                              text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise DriverMisconfigured(detail=f"{qemu_img} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise BadRequest("Image data refused: qemu-img could not inspect it in {t:.0f}s.", t=timeout) from exc
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no reason given"
        raise BadRequest("Image data refused: qemu-img cannot read it ({why}).", why=why)
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def inspect(path: Path, declared: str, *, qemu_img: str = "qemu-img") -> Inspection:
    """Check that ``path`` holds a safe image of format ``declared``; return its virtual size.

    Raises ``ImageFormatMismatch`` (415) when the bytes are another format, ``BadRequest`` when the
    format is unsupported or the image refers to other files.
    """
    if declared not in SUPPORTED_FORMATS:
        raise unsupported(declared)
    actual = detect(path)
    if actual == "vmdk-descriptor":
        raise BadRequest("Image data refused: a plain-text vmdk descriptor only points at other files; "
                         "upload a monolithicSparse or streamOptimized vmdk.")
    if actual != declared:
        raise ImageFormatMismatch(declared=declared, actual=actual)
    if actual == "qcow2":
        _check_qcow2_header(path)
    elif actual == "vmdk":
        _check_vmdk_header(path)
    info = qemu_info(path, qemu_img)
    probed = str(info.get("format", ""))
    if probed != QEMU_NAMES[actual]:
        raise ImageFormatMismatch(declared=declared, actual=probed or "unknown")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise BadRequest("Image data refused: qemu-img reports a backing file.")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise BadRequest("Image data refused: qemu-img reports an external data file.")
    for extent in data.get("extents") or ():
        if Path(str(extent.get("filename", path))).resolve() != path.resolve():
            raise BadRequest("Image data refused: the vmdk has an extent in another file.")
    return Inspection(format=actual, virtual_size=int(info.get("virtual-size") or path.stat().st_size))
