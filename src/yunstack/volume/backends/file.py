"""The ``file`` volume backend: qcow2 files in one directory tree on this host.

Layout under ``root`` (one file system: layers are made by hard links and renames)::

    volumes/<volume_id>.qcow2    a volume: the writable top of its chain; never a backing file
    frozen/<snapshot_id>.qcow2   a snapshot's layer, read-only from the moment it is frozen
    frozen/clone.<id>.<n>.qcow2  a clone point, shared by clone <id> and its source (``n``: per attempt)
    bases/<image_id>.qcow2       one qcow2 copy of an image, shared by every volume made from it
    snapshots/<snapshot_id>      a snapshot's name: a symlink to ``../frozen/<snapshot_id>.qcow2``

Everything is copy-on-write, with absolute backing paths that are never rewritten (no
``qemu-img rebase`` is needed: a file keeps its path for as long as it exists):

- a volume from an image is an overlay on the image's base, converted once per image;
- a snapshot freezes the volume's current file (hard linked to its layer name) and the volume goes
  on at the same path as a new, empty overlay on it;
- a volume from a snapshot is an overlay on the snapshot's layer;
- a clone freezes the source into a clone point the same way; source and clone are overlays on it;
- a revert to a snapshot makes the volume a new, empty overlay on the snapshot's layer.

References.  A frozen layer or base is *live* while the chain of a volume or of a named snapshot
reaches it.  After each delete and each snapshot the collector walks the chains from the volumes
and the names (reading each file's backing name from its qcow2 header: one small read per file, no
process) and removes every frozen layer and base that is not live.  So deleting a snapshot drops
its name only; its layer goes when nothing is built on it any more.

Chains stay short.  When a layer nobody names has exactly one child and that child is itself a
frozen layer, the collector merges them: ``qemu-img commit`` of the child into the layer, then the
layer takes the child's path.  Whoever reads the child sees the same data at every step, so a crash
in between is harmless.  A chain is therefore as long as its live snapshots and clone points plus
one layer: the one whose only child is the volume itself.  That layer is kept unmerged because the
volume may be open in a QEMU; the next snapshot makes it mergeable.  Bases are never merged: later
volumes of the same image share them.  A merge whose files a QEMU has open fails on QEMU's image
lock and is tried again at a later collection.

Crash safety.  New files are written under a temporary name and renamed into place (after an
fsync).  A snapshot's name is written before its layer is frozen, so a layer without a name is a
deleted snapshot or a clone point: a retry never adopts one, and clone points get a fresh name per
attempt.

Locking.  One backend instance per root.  Its lock is held while a reference to an existing
layer or base is made and while the collector decides, so the collector never removes a file that
is about to be used.  Long copies (an image's conversion, a merge) run outside it.

Open volumes.  The backend works on closed files.  Snapshotting, cloning or extending a volume
open in a QEMU is the caller's job to coordinate: quiesce the guest, then after the backend has
made the new overlay, QMP ``blockdev-snapshot`` onto it (same path); ``block_resize`` to extend.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from yunstack.errors import BadRequest, Conflict, DriverError, NotFound
from yunstack.tool import os_errors, run_tool
from yunstack.volume.backend import (
    LocalDisk,
    VolumeInfo,
    check_id,
    image_size,
    qcow2_header,
    qemu_format,
    size_bytes,
    too_small,
)
from yunstack.volume.locks import KeyedLocks

log = logging.getLogger(__name__)

CONVERT_TIMEOUT = 3600.0  # an image of hundreds of GiB, converted once into its base
COMMIT_TIMEOUT = 3600.0  # a merge copies one layer's data
_BASE_TMP = ".qcow2.new.tmp"  # bases/.<image_id>.qcow2.new.tmp: a conversion under way (see _tmp)


@dataclass
class _Tree:
    """What the collector sees: each file's backing file and size, and the named layers."""

    backing: dict[Path, Path | None] = field(default_factory=dict)
    size: dict[Path, int] = field(default_factory=dict)
    named: set[Path] = field(default_factory=set)
    roots: set[Path] = field(default_factory=set)  # volumes and named layers

    def live(self) -> set[Path]:
        found: set[Path] = set()
        for root in self.roots:
            path: Path | None = root
            while path is not None and path in self.backing and path not in found:
                found.add(path)
                path = self.backing[path]
        return found

    def children(self) -> dict[Path, set[Path]]:
        kids: dict[Path, set[Path]] = {}
        for path, backing in self.backing.items():
            if backing is not None:
                kids.setdefault(backing, set()).add(path)
        return kids


COPY_TIMEOUT = 3600.0  # a whole volume read out: as long as its bytes take


class FileBackend:
    """Volumes as qcow2 files under ``root`` (see the module docstring for the layout)."""

    name = "file"

    def __init__(self, root: Path, qemu_img: str = "qemu-img") -> None:
        self._root = root.resolve()
        self._qemu_img = qemu_img
        self._volumes = self._root / "volumes"
        self._frozen = self._root / "frozen"
        self._bases = self._root / "bases"
        self._names = self._root / "snapshots"
        self._lock = asyncio.Lock()
        self._image_locks = KeyedLocks()  # one conversion per image at a time: fifty volumes of a new image share it
        self._merging: set[Path] = set()  # layers a merge is working on, outside the lock

    # -- the seam --------------------------------------------------------------------------------

    async def create(self, volume_id: str, size_gib: int) -> None:
        """Create an empty qcow2 volume (reads as zeros); one already there with this size is adopted."""
        path, size = self._volume(volume_id), size_bytes(size_gib)
        if self._adopt(path, size):
            return
        _mkdir(self._volumes)
        tmp = _tmp(path)
        try:
            await run_tool([self._qemu_img, "create", "-q", "-f", "qcow2", str(tmp), str(size)],
                           f"creating volume {volume_id}")
            await _install(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    async def create_from_image(self, volume_id: str, size_gib: int, image: Path, image_format: str,
                                image_id: str) -> None:
        """Create an overlay on the image's base, converting the image into it first if needed."""
        path, size = self._volume(volume_id), size_bytes(size_gib)
        fmt = qemu_format(image_format)
        base = self._bases / f"{check_id('image', image_id)}.qcow2"
        if self._adopt(path, size):
            return
        async with self._image_locks.hold(image_id):
            async with self._lock:
                if base.exists():
                    await self._overlay(path, base, size_gib, f"image {image_id}")
                    return
            needed = await image_size(self._qemu_img, image, fmt)
            if needed > size:
                raise too_small(f"image {image_id}", needed, size_gib)
            _mkdir(self._bases)
            tmp = _tmp(base)
            try:
                await run_tool([self._qemu_img, "convert", "-q", "-f", fmt, "-O", "qcow2", str(image), str(tmp)],
                               f"converting image {image_id}", CONVERT_TIMEOUT)
                async with self._lock:
                    await _install(tmp, base)
                    await self._overlay(path, base, size_gib, f"image {image_id}")
            finally:
                tmp.unlink(missing_ok=True)

    async def create_from_snapshot(self, volume_id: str, size_gib: int, snapshot_id: str) -> None:
        """Create an overlay on the snapshot's layer."""
        path, size = self._volume(volume_id), size_bytes(size_gib)
        layer = self._layer(snapshot_id)
        if self._adopt(path, size):
            return
        async with self._lock:
            if not (self._name(snapshot_id).is_symlink() and layer.exists()):
                raise NotFound(kind="snapshot", id=snapshot_id)
            if layer.stat().st_nlink != 1:  # still the volume's own file too: the snapshot was cut short
                raise Conflict(detail=f"snapshot {snapshot_id} is not finished; take it again first")
            await self._overlay(path, layer, size_gib, f"snapshot {snapshot_id}")

    async def clone(self, volume_id: str, size_gib: int, source_id: str) -> None:
        """Freeze the source into a clone point both go on from as overlays."""
        path, size = self._volume(volume_id), size_bytes(size_gib)
        source = self._volume(source_id)
        if self._adopt(path, size):
            return
        async with self._lock:
            needed = self._size_of(source, "volume", source_id)
            if needed > size:
                raise too_small(f"volume {source_id}", needed, size_gib)
            point = self._frozen / f"clone.{volume_id}.{secrets.token_hex(4)}.qcow2"
            await self._freeze(source, point)
            await self._overlay(path, point, size_gib, f"volume {source_id}")

    async def delete(self, volume_id: str) -> None:
        """Remove the volume's file, then collect the layers and bases nobody uses any more."""
        path = self._volume(volume_id)
        async with self._lock:
            with os_errors(f"deleting volume {volume_id}"):
                for gone in (path, _tmp(path), _tmp(path, "freeze"), _tmp(path, "revert")):
                    gone.unlink(missing_ok=True)
        await self._collect()

    async def extend(self, volume_id: str, size_gib: int) -> None:
        """``qemu-img resize`` the volume's top file (grow only)."""
        path, size = self._volume(volume_id), size_bytes(size_gib)
        async with self._lock:  # not while a clone or snapshot freezes this file
            current = self._size_of(path, "volume", volume_id)
            if size < current:
                raise BadRequest(f"Volume {volume_id} is {current} bytes; it cannot shrink to {size_gib} GiB.")
            if size > current:
                await run_tool([self._qemu_img, "resize", "-q", "-f", "qcow2", str(path), str(size)],
                               f"extending volume {volume_id}")

    async def snapshot(self, snapshot_id: str, volume_id: str) -> None:
        """Name the snapshot, then freeze the volume's current file as its layer."""
        path, layer, name = self._volume(volume_id), self._layer(snapshot_id), self._name(snapshot_id)
        async with self._lock:
            named = name.is_symlink()
            if layer.exists() and not _same(layer, path):
                if not named:
                    raise Conflict(detail=f"snapshot {snapshot_id} was deleted and its data is still in use")
                return  # taken already
            if not path.exists():
                raise NotFound(kind="volume", id=volume_id)
            if not named:
                _mkdir(self._names)
                with os_errors(f"naming snapshot {snapshot_id}"):
                    os.symlink(f"../{self._frozen.name}/{layer.name}", name)
                    await asyncio.to_thread(_sync_dir, self._names)
            await self._freeze(path, layer)
        await self._collect()  # the volume's previous layer may have become mergeable

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Drop the snapshot's name; its layer goes once nothing is built on it."""
        name = self._name(snapshot_id)
        async with self._lock:
            with os_errors(f"deleting snapshot {snapshot_id}"):
                name.unlink(missing_ok=True)
        await self._collect()

    async def revert(self, volume_id: str, snapshot_id: str) -> None:
        """The volume goes on as a new, empty overlay on the snapshot's layer (its writes since are dropped)."""
        path, layer, name = self._volume(volume_id), self._layer(snapshot_id), self._name(snapshot_id)
        async with self._lock:
            if not path.exists():
                raise NotFound(kind="volume", id=volume_id)
            if not (name.is_symlink() and layer.exists()):
                raise NotFound(kind="snapshot", id=snapshot_id)
            if _same(layer, path):  # still the volume's own file too: the snapshot was cut short
                raise Conflict(detail=f"snapshot {snapshot_id} is not finished; take it again first")
            if layer not in self._chain(path):
                raise Conflict(detail=f"snapshot {snapshot_id} is not a snapshot of volume {volume_id}")
            size = self._size_of(layer, "snapshot", snapshot_id)
            tmp = _tmp(path, "revert")
            try:
                await run_tool([self._qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(layer),
                                str(tmp), str(size)], f"reverting volume {volume_id} to snapshot {snapshot_id}")
                await _install(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        await self._collect()  # the layers only the dropped top reached go

    async def info(self, volume_id: str) -> VolumeInfo | None:
        """The volume's virtual size from its qcow2 header, or ``None`` when absent."""
        path = self._volume(volume_id)
        try:
            _, size = qcow2_header(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DriverError(detail=f"reading volume {volume_id}: {exc}") from exc
        return VolumeInfo(id=volume_id, size_bytes=size)

    async def volumes(self) -> set[str]:
        """Ids of the files under ``volumes/``."""
        return {p.name.removesuffix(".qcow2") for p in _listing(self._volumes) if p.name.endswith(".qcow2")}

    async def snapshots(self) -> set[str]:
        """Ids of the snapshot names, with their layer or not (a snapshot cut short by a crash)."""
        return {p.name for p in _listing(self._names)}

    async def local_disk(self, volume_id: str) -> LocalDisk:
        """The volume's qcow2 file; QEMU follows its backing chain (formats recorded as qcow2)."""
        path = self._volume(volume_id)
        if not path.exists():
            raise NotFound(kind="volume", id=volume_id)
        return LocalDisk(path=path, format="qcow2")

    async def copy_to(self, volume_id: str, dest: Path, disk_format: str) -> None:
        """One ``qemu-img convert`` of the whole chain into ``dest`` (``-U``: a guest may have it open)."""
        local = await self.local_disk(volume_id)
        await run_tool([self._qemu_img, "convert", "-q", "-U", "-f", "qcow2", "-O", qemu_format(disk_format),
                        str(local.path), str(dest)], f"copying volume {volume_id} out as {disk_format}",
                       timeout=COPY_TIMEOUT)

    # -- making files ----------------------------------------------------------------------------

    def _volume(self, volume_id: str) -> Path:
        return self._volumes / f"{check_id('volume', volume_id)}.qcow2"

    def _layer(self, snapshot_id: str) -> Path:
        return self._frozen / f"{check_id('snapshot', snapshot_id)}.qcow2"

    def _name(self, snapshot_id: str) -> Path:
        return self._names / check_id("snapshot", snapshot_id)

    def _chain(self, path: Path) -> list[Path]:
        """``path`` and the files under it, top first (each file's backing name from its header)."""
        chain: list[Path] = []
        current: Path | None = path
        while current is not None and current not in chain:
            chain.append(current)
            try:
                backing = qcow2_header(current)[0]
            except (OSError, ValueError) as exc:
                raise DriverError(detail=f"reading {current.relative_to(self._root)}: {exc}") from exc
            current = Path(backing) if backing else None
        return chain

    def _adopt(self, path: Path, size: int) -> bool:
        """True if the volume at ``path`` exists already with ``size``; ``Conflict`` if with another."""
        if not path.exists():
            return False
        current = self._size_of(path, "volume", path.stem)
        if current != size:
            raise Conflict(detail=f"volume {path.stem} exists with {current} bytes, not {size}")
        return True

    def _size_of(self, path: Path, kind: str, ident: str) -> int:
        try:
            return qcow2_header(path)[1]
        except FileNotFoundError:
            raise NotFound(kind=kind, id=ident) from None
        except (OSError, ValueError) as exc:
            raise DriverError(detail=f"reading {kind} {ident}: {exc}") from exc

    async def _overlay(self, path: Path, backing: Path, size_gib: int, what: str) -> None:
        """Make the volume at ``path`` a qcow2 overlay on ``backing``.  Called under the lock."""
        needed = qcow2_header(backing)[1]
        if needed > size_bytes(size_gib):
            raise too_small(what, needed, size_gib)
        _mkdir(self._volumes)
        tmp = _tmp(path)
        try:
            await run_tool([self._qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing),
                            str(tmp), str(size_bytes(size_gib))], f"creating volume {path.stem} from {what}")
            await _install(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    async def _freeze(self, path: Path, layer: Path) -> None:
        """Make the volume's current file ``layer`` and go on with an empty overlay on it.  Under the lock.

        The hard link comes first, so the volume's path never goes missing; a retry after a crash
        between the link and the rename finds the two names on one file and finishes.
        """
        _, size = qcow2_header(path)
        if not _same(layer, path):
            _mkdir(self._frozen)
            with os_errors(f"freezing volume {path.stem}"):
                os.link(path, layer)
                await asyncio.to_thread(_sync_dir, self._frozen)
        tmp = _tmp(path, "freeze")
        try:
            # -u: the backing is the file this overlay replaces; nothing to check in it.
            await run_tool([self._qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(layer), "-u",
                            str(tmp), str(size)], f"freezing volume {path.stem} into {layer.stem}")
            await _install(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # -- collecting ------------------------------------------------------------------------------

    async def _collect(self) -> None:
        """Remove dead layers and bases, then merge what can be merged, until nothing changes.

        Runs after the operation proper has succeeded: a failure here is logged, not raised; the
        next collection tries again.
        """
        failed: set[Path] = set()
        try:
            while True:
                async with self._lock:
                    merges = await asyncio.to_thread(self._sweep, frozenset(self._merging | failed),
                                                     frozenset(self._image_locks))
                    for parent, child in merges:
                        self._merging |= {parent, child}
                if not merges:
                    return
                for parent, child in merges:
                    if not await self._merge(parent, child):
                        failed.add(parent)
        except (OSError, ValueError, DriverError) as exc:
            log.warning("volume backend %s: collecting unused layers failed: %s", self._root, exc)

    def _scan(self) -> _Tree:
        tree = _Tree()
        for folder in (self._volumes, self._frozen, self._bases):
            for path in _listing(folder):
                if not path.name.endswith(".qcow2"):
                    continue  # a temporary file
                try:
                    backing, tree.size[path] = qcow2_header(path)
                except FileNotFoundError:
                    continue
                tree.backing[path] = Path(backing) if backing else None
                if folder == self._volumes:
                    tree.roots.add(path)
        for name in _listing(self._names):
            layer = self._frozen / f"{name.name}.qcow2"
            tree.named.add(layer)
            if layer in tree.backing:
                tree.roots.add(layer)
        return tree

    def _sweep(self, busy: frozenset[Path], converting: frozenset[str]) -> list[tuple[Path, Path]]:
        """Remove what is not live; return (layer, only child) pairs to merge.  In a thread, under the lock."""
        for path in _listing(self._bases):  # conversions a crash cut short
            if path.name.endswith(_BASE_TMP) and path.name[1:-len(_BASE_TMP)] not in converting:
                path.unlink(missing_ok=True)
        tree = self._scan()
        live = tree.live()
        for path in tree.backing:
            if path.parent != self._volumes and path not in live and path not in self._merging:
                log.info("volume backend %s: removing unused %s", self._root, path.relative_to(self._root))
                path.unlink(missing_ok=True)
        merges = []
        taken = set(busy)
        for parent, kids in tree.children().items():
            if (parent.parent != self._frozen or parent not in live or parent in tree.named or len(kids) != 1
                    or parent in taken):
                continue
            (child,) = kids
            # A child smaller than its layer would take the layer's larger size along with its path.
            if child.parent == self._frozen and child not in taken and tree.size[child] >= tree.size[parent]:
                merges.append((parent, child))
                taken |= {parent, child}
        return merges

    async def _merge(self, parent: Path, child: Path) -> bool:
        """Commit ``child`` into ``parent`` and give ``parent`` the child's path; False if it did not."""
        try:
            await run_tool([self._qemu_img, "commit", "-q", "-f", "qcow2", "-d", str(child)],
                           f"merging layer {child.stem} into {parent.stem}", COMMIT_TIMEOUT)
            done = None
        except DriverError as exc:
            done = exc  # a QEMU has the chain open, typically: its image lock says no
        async with self._lock:
            self._merging -= {parent, child}
            if done is not None:
                log.info("volume backend %s: kept layer %s: %s", self._root, parent.stem, done)
                return False
            tree = await asyncio.to_thread(self._scan)
            if (tree.backing.get(child) != parent or tree.children().get(parent) != {child}
                    or parent in tree.named):
                return False  # changed meanwhile: the next collection looks again
            await _install(parent, child)
            return True


def _tmp(path: Path, purpose: str = "new") -> Path:
    """The temporary name a new ``path`` is written under (never ``*.qcow2``: the collector skips it)."""
    return path.with_name(f".{path.name}.{purpose}.tmp")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise DriverError(detail=f"listing {folder}: {exc}") from exc


def _mkdir(folder: Path) -> None:
    with os_errors(f"making {folder}"):
        folder.mkdir(parents=True, exist_ok=True)



def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(tmp: Path, dest: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)
    _sync_dir(dest.parent)


async def _install(tmp: Path, dest: Path) -> None:
    """Put the finished ``tmp`` at ``dest`` atomically, durable once this returns."""
    with os_errors(f"installing {dest.name}"):
        await asyncio.to_thread(_replace_durably, tmp, dest)
