"""The block-storage backend seam: what the volume service asks of a place that holds volumes.

A backend stores volumes and snapshots by the ids the service gives it and keeps no database of
its own: ``volumes()`` and ``snapshots()`` say what is there, so the service can compare them
with its records after a crash.  Every operation is idempotent (a retry after a crash finishes
the work or adopts it) and crash-safe (a failed create leaves nothing behind).  The caller
serializes operations on one id; operations on different ids may run concurrently.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from yunstack.errors import BadRequest, ValidationFailed
from yunstack.tool import run_tool

GIB = 1 << 30
QCOW2_MAGIC = b"QFI\xfb"

# Ids become file names: a fixed alphabet keeps them inside the backend's directories.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

# Backends whose volumes every host opens itself (a Ceph cluster all hosts reach, with the same
# [volume] settings): a guest on another host than the storage host needs no export of them.
SHARED_BACKENDS = frozenset({"rbd"})


# Backends that snapshot a volume while a guest writes to it (crash-consistent): the others snapshot
# closed volumes only.
LIVE_SNAPSHOTS = frozenset({"rbd"})


def reached_directly(backend: str, storage_host: str, guest_host: str | None) -> bool:
    """Whether a guest on ``guest_host`` opens a volume of ``backend`` kept by ``storage_host`` itself."""
    return guest_host == storage_host or backend in SHARED_BACKENDS


# Glance disk_format -> the qemu-img format that reads it.
IMAGE_FORMATS = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vdi": "vdi", "vhd": "vpc",
                 "vhdx": "vhdx", "iso": "raw"}


@dataclass(frozen=True)
class VolumeInfo:
    """What the backend finds of a volume."""

    id: str
    size_bytes: int  # the virtual size


@dataclass(frozen=True)
class LocalDisk:
    """How a QEMU on this same host opens the volume.

    A volume in a file or block device has its ``path``.  One QEMU reaches over its own network
    protocol (``rbd``) has ``path`` ``None`` and ``node``: the QEMU ``blockdev-add`` options of its
    protocol node, e.g. ``{"driver": "rbd", "pool": "volumes", "image": "volume-<id>", "conf":
    "/etc/ceph/ceph.conf", "user": "yunstack"}`` (no secret: the cephx key is found through the
    conf's ``keyring``); ``format`` is the format node on top of it.
    """

    path: Path | None
    format: str  # "qcow2" | "raw"
    node: dict[str, Any] | None = None


@runtime_checkable
class VolumeBackend(Protocol):
    """One place that holds volumes and their snapshots.

    Sizes are whole GiB (``GIB`` bytes).  A volume that is open in a QEMU must not be
    snapshotted, cloned or extended through the backend unless the caller coordinates with that
    QEMU (QMP); backends work on closed volumes.
    """

    name: str  # "file" | "lvm" | "rbd" | "fake"

    async def create(self, volume_id: str, size_gib: int) -> None:
        """Create an empty volume (reads as zeros); one already there with this size is adopted."""

    async def create_from_image(self, volume_id: str, size_gib: int, image: Path, image_format: str,
                                image_id: str) -> None:
        """Create a volume holding the image at ``image`` (Glance ``disk_format`` ``image_format``).

        Raises ``BadRequest`` when the image's virtual size exceeds ``size_gib`` or its format is
        not one of ``IMAGE_FORMATS``.  ``image_id`` names the image: backends may share one copy
        of it between volumes.
        """

    async def create_from_snapshot(self, volume_id: str, size_gib: int, snapshot_id: str) -> None:
        """Create a volume holding the snapshot's data; ``NotFound`` if the snapshot is absent."""

    async def clone(self, volume_id: str, size_gib: int, source_id: str) -> None:
        """Create a volume holding the current data of volume ``source_id`` (``NotFound`` if absent).

        Source and clone are independent afterwards: writes to either stay private.
        """

    async def delete(self, volume_id: str) -> None:
        """Delete a volume; an absent one is no error.  Its snapshots and clones stay usable."""

    async def extend(self, volume_id: str, size_gib: int) -> None:
        """Grow a volume to ``size_gib``; a smaller size raises ``BadRequest``, the same is a no-op."""

    async def snapshot(self, snapshot_id: str, volume_id: str) -> None:
        """Keep the volume's current data under ``snapshot_id``; a snapshot already there is adopted."""

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Delete a snapshot; an absent one is no error.  Volumes made from it stay usable."""

    async def revert(self, volume_id: str, snapshot_id: str) -> None:
        """Give the volume the data of its own snapshot ``snapshot_id`` again (Cinder's revert, 3.40).

        Writes since the snapshot are dropped; the snapshot and everything made from it stay as
        they were.  The caller reverts only to the volume's latest snapshot, of the volume's size,
        with the volume closed.  Repeating it is harmless.  ``NotFound`` if either is absent.
        """

    async def info(self, volume_id: str) -> VolumeInfo | None:
        """The volume's size, or ``None`` when it is absent."""

    async def volumes(self) -> set[str]:
        """Ids of the volumes present (for leftover checks)."""

    async def snapshots(self) -> set[str]:
        """Ids of the snapshots present (for leftover checks)."""

    async def local_disk(self, volume_id: str) -> LocalDisk:
        """How a QEMU on this host opens the volume; ``NotFound`` if absent."""

    async def copy_to(self, volume_id: str, dest: Path, disk_format: str) -> None:
        """Write the volume's bytes to the new file ``dest`` as ``disk_format`` (``raw`` or ``qcow2``): an
        upload to an image.  A volume a guest has open is read as it is (Cinder's upload with force)."""


def check_id(kind: str, value: str) -> str:
    """``value`` if it is a valid id of a ``kind`` ("volume", "snapshot", "image"), else ``ValidationFailed``."""
    if not _ID.fullmatch(value):
        raise ValidationFailed(detail=f"{kind} id {value!r}: use letters, digits, '-' and '_' (at most 128)")
    return value


def size_bytes(size_gib: int) -> int:
    """``size_gib`` in bytes; ``ValidationFailed`` (a ``BadRequest``) unless a whole number of GiB, at least 1."""
    if isinstance(size_gib, bool) or not isinstance(size_gib, int) or size_gib < 1:
        raise ValidationFailed(detail=f"volume size {size_gib!r}: a whole number of GiB, at least 1")
    return size_gib * GIB


def qemu_format(image_format: str) -> str:
    """The qemu-img format of a Glance ``disk_format``; ``ValidationFailed`` for one we cannot read."""
    try:
        return IMAGE_FORMATS[image_format]
    except KeyError:
        raise ValidationFailed(detail=f"image disk_format {image_format!r} cannot be made into a volume; "
                                      f"use one of {', '.join(sorted(IMAGE_FORMATS))}") from None


def too_small(what: str, needed: int, size_gib: int) -> BadRequest:
    """The error for a volume of ``size_gib`` GiB that cannot hold ``needed`` bytes of ``what``."""
    return BadRequest(f"The {what} is {needed} bytes ({needed / GIB:.2f} GiB), larger than the requested "
                      f"volume size of {size_gib} GiB ({size_gib * GIB} bytes).")


async def image_size(qemu_img: str, image: Path, fmt: str) -> int:
    """The image's virtual size; ``BadRequest`` if it refers to other files (backing, data, extent).

    The image service inspects every upload (``yunstack.image.inspect``); this is the second
    line, since a volume made from such an image would read host files for its guest.
    """
    out = await run_tool([qemu_img, "info", "--output=json", "-f", fmt, str(image)], f"reading image {image.name}")
    data = json.loads(out)
    specific = (data.get("format-specific") or {}).get("data") or {}
    extents = {Path(str(e.get("filename", image))).resolve() for e in specific.get("extents") or ()}
    if data.get("backing-filename") or specific.get("data-file") or extents - {image.resolve()}:
        raise BadRequest("The image refers to other files (backing, data or extent files); it cannot be used.")
    return int(data["virtual-size"])


def qcow2_header(path: Path) -> tuple[str | None, int]:
    """(backing file name or ``None``, virtual size) read straight from a qcow2 header.

    A read of a few bytes, no ``qemu-img``: fast enough to look at every file of a backend, and
    safe on an image a QEMU has open.  Raises ``OSError`` if unreadable, ``ValueError`` if not qcow2.
    """
    with path.open("rb") as f:
        head = f.read(32)
        if len(head) < 32 or head[:4] != QCOW2_MAGIC:
            raise ValueError(f"{path} is not a qcow2 image")
        offset, length = struct.unpack_from(">QI", head, 8)
        (size,) = struct.unpack_from(">Q", head, 24)
        if not offset:
            return None, int(size)
        f.seek(offset)
        return f.read(length).decode(errors="surrogateescape"), int(size)
