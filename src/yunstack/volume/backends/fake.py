"""``FakeVolumeBackend``: volumes in memory, for contract, functional and scale tests only.

A fake, not a backend to run: nothing survives the process and no QEMU can open its volumes
(``local_disk`` names a path that does not exist).  It keeps the semantics of the seam: sizes,
idempotent creates and deletes, refusing a shrink or an image larger than the volume, and
snapshots and clones whose data stays independent of their source.  Data goes in and out through
the test hooks ``write`` and ``read`` (sparse, in 4 KiB blocks), so the contract suite checks
copy-on-write behaviour without QEMU.  It reads an image's virtual size (qcow2 header, else the
file's size) but not its data: a volume made from an image reads as zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yunstack.errors import BadRequest, Conflict, DriverError, NotFound
from yunstack.volume.backend import (
    LocalDisk,
    VolumeInfo,
    check_id,
    qcow2_header,
    qemu_format,
    size_bytes,
    too_small,
)

BLOCK = 4096
FAKE_ROOT = Path("/nonexistent/fake-volumes")


@dataclass
class _Data:
    """A virtual size and the blocks written (absent blocks read as zeros)."""

    size: int
    blocks: dict[int, bytes] = field(default_factory=dict)

    def copy(self, size: int | None = None) -> _Data:
        # Blocks are immutable bytes: a shallow copy is a full, independent copy.
        return _Data(self.size if size is None else size, dict(self.blocks))


class FakeVolumeBackend:
    """In-memory volumes and snapshots (see the module docstring: for tests only)."""

    name = "fake"

    def __init__(self) -> None:
        self._volumes: dict[str, _Data] = {}
        self._snapshots: dict[str, _Data] = {}

    async def create(self, volume_id: str, size_gib: int) -> None:
        """Create an empty volume; one already there with this size is adopted."""
        size = self._new(volume_id, size_gib)
        if size:
            self._volumes[volume_id] = _Data(size)

    async def create_from_image(self, volume_id: str, size_gib: int, image: Path, image_format: str,
                                image_id: str) -> None:
        """Create a volume once the image's size fits (its data is not read: the volume reads as zeros)."""
        qemu_format(image_format)
        check_id("image", image_id)
        size = self._new(volume_id, size_gib)
        if not size:
            return
        needed = _image_size(image, image_format)
        if needed > size:
            raise too_small(f"image {image_id}", needed, size_gib)
        self._volumes[volume_id] = _Data(size)

    async def create_from_snapshot(self, volume_id: str, size_gib: int, snapshot_id: str) -> None:
        """Create a volume holding a copy of the snapshot's data."""
        check_id("snapshot", snapshot_id)
        size = self._new(volume_id, size_gib)
        if not size:
            return
        source = self._snapshots.get(snapshot_id)
        if source is None:
            raise NotFound(kind="snapshot", id=snapshot_id)
        if source.size > size:
            raise too_small(f"snapshot {snapshot_id}", source.size, size_gib)
        self._volumes[volume_id] = source.copy(size)

    async def clone(self, volume_id: str, size_gib: int, source_id: str) -> None:
        """Create a volume holding a copy of the source volume's data."""
        check_id("volume", source_id)
        size = self._new(volume_id, size_gib)
        if not size:
            return
        source = self._volumes.get(source_id)
        if source is None:
            raise NotFound(kind="volume", id=source_id)
        if source.size > size:
            raise too_small(f"volume {source_id}", source.size, size_gib)
        self._volumes[volume_id] = source.copy(size)

    async def delete(self, volume_id: str) -> None:
        """Forget the volume; an absent one is no error."""
        self._volumes.pop(check_id("volume", volume_id), None)

    async def extend(self, volume_id: str, size_gib: int) -> None:
        """Grow the volume; a smaller size is refused."""
        size = size_bytes(size_gib)
        data = self._get(volume_id)
        if size < data.size:
            raise BadRequest(f"Volume {volume_id} is {data.size} bytes; it cannot shrink to {size_gib} GiB.")
        data.size = size

    async def snapshot(self, snapshot_id: str, volume_id: str) -> None:
        """Keep a copy of the volume's data; a snapshot already there is adopted."""
        check_id("snapshot", snapshot_id)
        data = self._get(volume_id)
        if snapshot_id not in self._snapshots:
            self._snapshots[snapshot_id] = data.copy()

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Forget the snapshot; an absent one is no error."""
        self._snapshots.pop(check_id("snapshot", snapshot_id), None)

    async def revert(self, volume_id: str, snapshot_id: str) -> None:
        """The volume's data becomes a copy of the snapshot's."""
        self._get(volume_id)
        data = self._snapshots.get(check_id("snapshot", snapshot_id))
        if data is None:
            raise NotFound(kind="snapshot", id=snapshot_id)
        self._volumes[volume_id] = data.copy()

    async def info(self, volume_id: str) -> VolumeInfo | None:
        """The volume's size, or ``None`` when absent."""
        data = self._volumes.get(check_id("volume", volume_id))
        return None if data is None else VolumeInfo(id=volume_id, size_bytes=data.size)

    async def volumes(self) -> set[str]:
        """Ids of the volumes held."""
        return set(self._volumes)

    async def snapshots(self) -> set[str]:
        """Ids of the snapshots held."""
        return set(self._snapshots)

    async def local_disk(self, volume_id: str) -> LocalDisk:
        """A path that does not exist: no QEMU can open a fake volume."""
        self._get(volume_id)
        return LocalDisk(path=FAKE_ROOT / f"{volume_id}.raw", format="raw")

    async def copy_to(self, volume_id: str, dest: Path, disk_format: str) -> None:
        """The volume's bytes as a raw file (a fake keeps no qcow2: ``disk_format`` is not honoured)."""
        volume = self._get(volume_id)
        with dest.open("wb") as fh:
            fh.truncate(volume.size)
            for index, block in sorted(volume.blocks.items()):
                fh.seek(index * BLOCK)
                fh.write(block)

    # -- test hooks ------------------------------------------------------------------------------

    def write(self, volume_id: str, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` of the volume, as a guest would."""
        volume = self._get(volume_id)
        if offset < 0 or offset + len(data) > volume.size:
            raise DriverError(detail=f"write beyond the end of volume {volume_id}")
        pos = offset
        while pos < offset + len(data):
            index, start = divmod(pos, BLOCK)
            chunk = data[pos - offset: pos - offset + BLOCK - start]
            block = bytearray(volume.blocks.get(index, bytes(BLOCK)))
            block[start:start + len(chunk)] = chunk
            volume.blocks[index] = bytes(block)
            pos += len(chunk)

    def read(self, volume_id: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of the volume (zeros where nothing was written)."""
        volume = self._get(volume_id)
        if offset < 0 or offset + length > volume.size:
            raise DriverError(detail=f"read beyond the end of volume {volume_id}")
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        joined = b"".join(volume.blocks.get(i, bytes(BLOCK)) for i in range(first, last + 1))
        return joined[offset - first * BLOCK: offset - first * BLOCK + length]

    # -- helpers ---------------------------------------------------------------------------------

    def _get(self, volume_id: str) -> _Data:
        data = self._volumes.get(check_id("volume", volume_id))
        if data is None:
            raise NotFound(kind="volume", id=volume_id)
        return data

    def _new(self, volume_id: str, size_gib: int) -> int:
        """The new volume's size in bytes, or 0 when it exists already with that size (adopted)."""
        size = size_bytes(size_gib)
        existing = self._volumes.get(check_id("volume", volume_id))
        if existing is None:
            return size
        if existing.size != size:
            raise Conflict(detail=f"volume {volume_id} exists with {existing.size} bytes, not {size}")
        return 0


def _image_size(image: Path, image_format: str) -> int:
    """The image's virtual size: from its header if qcow2 (refusing a backing file), else its length."""
    try:
        if image_format != "qcow2":
            return image.stat().st_size
        backing, size = qcow2_header(image)
    except (OSError, ValueError) as exc:
        raise DriverError(detail=f"reading image {image.name}: {exc}") from exc
    if backing:
        raise BadRequest("The image refers to another file (a backing or data file); it cannot be used.")
    return size
