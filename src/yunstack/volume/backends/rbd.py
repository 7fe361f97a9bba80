"""The ``rbd`` volume backend: Ceph RBD images in one pool (and optionally one RBD namespace).

Names in the pool (Cinder's ``volume-<id>`` and ``snapshot-<id>``, so ``rbd ls`` reads the same)::

    volume-<volume_id>                  a volume: format 2, the cluster's default features (layering on)
    volume-<volume_id>@snapshot-<id>    a snapshot: an RBD snapshot of its volume
    volume-<source_id>@clone-<id>       a clone point: volume <id> is an RBD clone of it
    image-<image_id>@base               one raw copy of an image, shared by every volume made from it
    deleted-<token>-<volume_id>         a deleted volume that snapshots or clones still stand on
    tmp-<volume_id>, tmp-image-<id>     a create under way (renamed into place when finished)

Everything is copy-on-write: a volume from an image, a snapshot or another volume is an RBD clone
of a protected snapshot (``base``, ``snapshot-<id>`` or ``clone-<id>``), never a copy; the image
is imported once per image id.  A snapshot is protected when the first volume is made from it.

Deleting keeps parents rather than flattening children (a flatten copies a whole volume, and
Cinder's rbd driver keeps them too): a deleted volume is renamed ``deleted-...`` and stays while
one of its snapshots is named or has a clone; a deleted snapshot is renamed ``deleted-<id>`` and
stays while it has a clone.  After each delete the collector removes the ``clone-*``/``deleted-*``
snapshots and the ``deleted-*``, base and leftover ``tmp-*`` images that nothing stands on any
more, from the deleted thing up through its parents (never a scan of the pool), so deleting
everything leaves the pool empty.  It touches only these names: the pool may hold other images
(Glance's, say).

Cost.  Creating, cloning, snapshotting, extending and deleting look only at the images involved.
Finding a snapshot by its id alone (a volume from a snapshot, deleting a snapshot) asks the image
this process last saw it on; only a snapshot it has not seen (after a restart, say) and
``snapshots()`` list the pool with ``rbd ls -l``, about 6 ms per image.  A read RBD finds
unwritten in a clone goes to its parent, and so on up the chain, which is as deep as the clones a
volume was made through, up to ``max_clone_depth`` (5, as Cinder's ``rbd_max_clone_depth``): a
clone or a volume from a snapshot deeper than that is flattened (its parents' data copied into it)
once made.

Crash safety.  A create builds its image under ``tmp-`` and renames it into place when it has its
size (``rbd rename`` is atomic), so a retry adopts a finished volume or starts over; a delete is
one rename.  The first collection of a process also looks at every hidden image, for what a crash
or a failed collection left.  Locking: one backend instance per pool and namespace; its lock is held while a
reference to an existing image or snapshot is made and while the collector decides.

Open volumes.  librbd takes snapshots and resizes of an image a QEMU has open itself (the
snapshot is crash-consistent; quiescing the guest first is still the caller's choice), and QMP
``block_resize`` on the guest's rbd node grows the image as well.

The ``rbd`` command line (``--format json``, argument lists, no shell) rather than the Python
``rados``/``rbd`` bindings: Ceph ships those as distribution packages built for the system Python
and its librbd (Debian's ``python3-rbd``), not as wheels a venv can install, and they block the
event loop unless run in threads.  A CLI call costs ~0.1 s (connecting to the mon), a few per
operation: 0.13 s for an empty volume, 0.23 s for a volume from an imported image (p50, measured
on a loaded 2-core machine).  QEMU reads and writes the images itself through its ``rbd`` block driver
(``qemu-block-extra``); ``local_disk`` gives its ``blockdev-add`` options, no path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yunstack.errors import BadRequest, Conflict, DriverError, NotFound
from yunstack.tool import run_tool
from yunstack.volume.backend import (
    GIB,
    LocalDisk,
    VolumeInfo,
    check_id,
    image_size,
    qemu_format,
    size_bytes,
    too_small,
)
from yunstack.volume.backends._rbd import EBUSY, EEXIST, ENOENT, RBD_TIMEOUT, RbdFailed, run_rbd
from yunstack.volume.locks import KeyedLocks

log = logging.getLogger(__name__)

CONVERT_TIMEOUT = 3600.0  # an image of hundreds of GiB, imported once
COPY_TIMEOUT = 3600.0  # a whole volume read out
ROLLBACK_TIMEOUT = 3600.0  # a rollback writes back every object of the image

VOLUME, SNAPSHOT, CLONE, IMAGE, DELETED, TMP = "volume-", "snapshot-", "clone-", "image-", "deleted-", "tmp-"
BASE = "base"


@dataclass
class _Pool:
    """What ``rbd ls -l`` shows: each image's size and snapshots."""

    size: dict[str, int] = field(default_factory=dict)
    snaps: dict[str, dict[str, tuple[int, bool]]] = field(default_factory=dict)  # name -> (size, protected)

    def holder(self, snap: str) -> str | None:
        """The image that has the snapshot ``snap``."""
        return next((image for image, snaps in self.snaps.items() if snap in snaps), None)


class RbdBackend:
    """Volumes as RBD images in ``pool`` (see the module docstring for the names)."""

    name = "rbd"

    def __init__(self, pool: str, *, namespace: str = "", conf: str = "", user: str = "", keyring: str = "",
                 max_clone_depth: int = 5, rbd: str = "rbd", qemu_img: str = "qemu-img") -> None:
        self._pool = pool
        self._max_depth = max_clone_depth
        self._namespace = namespace
        self._conf = conf
        self._user = user
        self._qemu_img = qemu_img
        self._cli = [rbd] + (["--conf", conf] if conf else []) + (["--id", user] if user else []) + (
            ["--keyring", keyring] if keyring else [])
        self._lock = asyncio.Lock()
        self._image_locks = KeyedLocks()  # one import per image at a time: fifty volumes of a new image share it
        self._volume_locks = KeyedLocks()  # a revert (long) holds its volume only
        self._busy: set[str] = set()  # tmp- images a create is filling, outside the lock
        self._swept = False  # whether this process has looked at every hidden image yet
        self._holders: dict[str, str] = {}  # snapshot-<id> -> the image it was last seen on (checked before use)

    # -- the seam --------------------------------------------------------------------------------

    async def create(self, volume_id: str, size_gib: int) -> None:
        """``rbd create`` the volume (format 2); one already there with this size is adopted."""
        name, size = _volume(volume_id), size_bytes(size_gib)
        if await self._adopt(name, size):
            return
        await self._rbd(["create", "--image-format", "2", "--size", f"{size_gib}G", self._spec(name)],
                        f"creating volume {volume_id}")

    async def create_from_image(self, volume_id: str, size_gib: int, image: Path, image_format: str,
                                image_id: str) -> None:
        """Clone the image's base, importing the image into it first if needed."""
        name, size = _volume(volume_id), size_bytes(size_gib)
        fmt = qemu_format(image_format)
        base = IMAGE + check_id("image", image_id)
        if await self._adopt(name, size):
            return
        async with self._image_locks.hold(image_id):
            async with self._lock:
                snaps = await self._snaps(base)
                if snaps and BASE in snaps:
                    await self._clone(base, BASE, snaps[BASE], volume_id, size_gib, f"image {image_id}")
                    return
            needed = await image_size(self._qemu_img, image, fmt)
            if needed > size:
                raise too_small(f"image {image_id}", needed, size_gib)
            tmp = TMP + base
            self._busy.add(tmp)
            try:
                await self._remove(tmp)  # what a crash left
                await self._rbd(["create", "--image-format", "2", "--size", f"{needed}B", self._spec(tmp)],
                                f"importing image {image_id}")
                await run_tool([self._qemu_img, "convert", "-q", "-n", "-f", fmt, "-O", "raw", str(image),
                                self._qemu_target(tmp)], f"importing image {image_id}", CONVERT_TIMEOUT)
                await self._rbd(["snap", "create", self._spec(tmp, BASE)], f"importing image {image_id}")
                await self._rbd(["snap", "protect", self._spec(tmp, BASE)], f"importing image {image_id}")
                async with self._lock:
                    await self._rbd(["rename", self._spec(tmp), self._spec(base)], f"importing image {image_id}")
                    await self._clone(base, BASE, (needed, True), volume_id, size_gib, f"image {image_id}")
            finally:
                self._busy.discard(tmp)
                with contextlib.suppress(DriverError):
                    await self._remove(tmp)

    async def create_from_snapshot(self, volume_id: str, size_gib: int, snapshot_id: str) -> None:
        """Clone the snapshot (protecting it first)."""
        name, size = _volume(volume_id), size_bytes(size_gib)
        snap = SNAPSHOT + check_id("snapshot", snapshot_id)
        if await self._adopt(name, size):
            return
        async with self._lock:
            found = await self._find(snap)
            if found is None:
                raise NotFound(kind="snapshot", id=snapshot_id)
            await self._clone(*found, volume_id, size_gib, f"snapshot {snapshot_id}")
        await self._limit_depth(volume_id, found[0])

    async def clone(self, volume_id: str, size_gib: int, source_id: str) -> None:
        """Take a clone point (an RBD snapshot of the source) and clone it."""
        name, size = _volume(volume_id), size_bytes(size_gib)
        source = _volume(source_id)
        if await self._adopt(name, size):
            return
        async with self._lock:
            needed = await self._size(source)
            if needed is None:
                raise NotFound(kind="volume", id=source_id)
            if needed > size:
                raise too_small(f"volume {source_id}", needed, size_gib)
            point, protected = CLONE + volume_id, False
            try:
                await self._rbd(["snap", "create", self._spec(source, point)], f"cloning volume {source_id}")
            except RbdFailed as exc:
                if exc.errno != EEXIST:
                    raise
                snaps = await self._snaps(source) or {}  # a retry reuses the point it took
                needed, protected = snaps[point]
            await self._clone(source, point, (needed, protected), volume_id, size_gib, f"volume {source_id}")
        await self._limit_depth(volume_id, source)

    async def delete(self, volume_id: str) -> None:
        """Rename the volume out of sight, then collect what nothing stands on any more."""
        name, hidden = _volume(volume_id), f"{DELETED}{secrets.token_hex(4)}-{volume_id}"
        async with self._lock:
            try:
                await self._rbd(["rename", self._spec(name), self._spec(hidden)], f"deleting volume {volume_id}")
            except RbdFailed as exc:
                if exc.errno != ENOENT:
                    raise
            else:
                self._holders = {s: hidden if image == name else image for s, image in self._holders.items()}
        await self._collect(hidden)

    async def extend(self, volume_id: str, size_gib: int) -> None:
        """``rbd resize`` (grow only)."""
        name, size = _volume(volume_id), size_bytes(size_gib)
        async with self._lock:
            current = await self._size(name)
            if current is None:
                raise NotFound(kind="volume", id=volume_id)
            if size < current:
                raise BadRequest(f"Volume {volume_id} is {current} bytes; it cannot shrink to {size_gib} GiB.")
            if size > current:
                await self._rbd(["resize", "--no-progress", "--size", f"{size_gib}G", self._spec(name)],
                                f"extending volume {volume_id}")

    async def snapshot(self, snapshot_id: str, volume_id: str) -> None:
        """``rbd snap create volume-<volume_id>@snapshot-<snapshot_id>``; one already there is adopted."""
        name, snap = _volume(volume_id), SNAPSHOT + check_id("snapshot", snapshot_id)
        async with self._lock:
            try:
                await self._rbd(["snap", "create", self._spec(name, snap)], f"taking snapshot {snapshot_id}")
            except RbdFailed as exc:
                if exc.errno == EEXIST:
                    return  # taken already
                if exc.errno != ENOENT:
                    raise
                if await self._find(snap) is None:  # else its volume was deleted since: still taken
                    raise NotFound(kind="volume", id=volume_id) from None
            else:
                self._holders[snap] = name

    async def delete_snapshot(self, snapshot_id: str) -> None:
        """Rename the snapshot out of sight; the collector removes it once it has no clones."""
        snap = SNAPSHOT + check_id("snapshot", snapshot_id)
        async with self._lock:
            found = await self._find(snap)
            if found is None:
                return
            holder = found[0]
            await self._rbd(["snap", "rename", self._spec(holder, snap),
                             self._spec(holder, f"{DELETED}{secrets.token_hex(4)}-{snapshot_id}")],
                            f"deleting snapshot {snapshot_id}")
            self._holders.pop(snap, None)
        await self._collect(holder)

    async def revert(self, volume_id: str, snapshot_id: str) -> None:
        """``rbd snap rollback volume-<volume_id>@snapshot-<snapshot_id>`` (Cinder's rbd driver does the same)."""
        name, snap = _volume(volume_id), SNAPSHOT + check_id("snapshot", snapshot_id)
        # Not under ``_lock``: a rollback rewrites the whole image (minutes for a large one) and would
        # hold every other volume's step on this host behind it.  The volume is ``reverting`` and its
        # snapshot ``restoring`` meanwhile, so no other step touches either.
        async with self._volume_locks.hold(volume_id):
            try:
                await self._rbd(["snap", "rollback", "--no-progress", self._spec(name, snap)],
                                f"reverting volume {volume_id} to snapshot {snapshot_id}", ROLLBACK_TIMEOUT)
            except RbdFailed as exc:
                if exc.errno != ENOENT:
                    raise
                if await self._size(name) is None:
                    raise NotFound(kind="volume", id=volume_id) from None
                raise NotFound(kind="snapshot", id=snapshot_id) from None

    async def info(self, volume_id: str) -> VolumeInfo | None:
        """The image's size, or ``None`` when absent."""
        size = await self._size(_volume(volume_id))
        return None if size is None else VolumeInfo(id=volume_id, size_bytes=size)

    async def volumes(self) -> set[str]:
        """Ids of the ``volume-*`` images."""
        return {name.removeprefix(VOLUME) for name in await self._names() if name.startswith(VOLUME)}

    async def snapshots(self) -> set[str]:
        """Ids of the ``snapshot-*`` snapshots, of volumes and of deleted volumes alike."""
        pool = await self._list()
        return {snap.removeprefix(SNAPSHOT) for snaps in pool.snaps.values() for snap in snaps
                if snap.startswith(SNAPSHOT)}

    async def local_disk(self, volume_id: str) -> LocalDisk:
        """No path: QEMU's own ``rbd`` driver opens the image (``node``), a raw format node on top."""
        name = _volume(volume_id)
        if await self._size(name) is None:
            raise NotFound(kind="volume", id=volume_id)
        return LocalDisk(path=None, format="raw", node=self._node(name))

    async def copy_to(self, volume_id: str, dest: Path, disk_format: str) -> None:
        """One ``qemu-img convert`` from the image (through QEMU's rbd driver) into ``dest``."""
        local = await self.local_disk(volume_id)
        assert local.node is not None
        source = "json:" + json.dumps({"driver": "raw", "file": local.node})
        await run_tool([self._qemu_img, "convert", "-q", "-O", qemu_format(disk_format), source, str(dest)],
                       f"copying volume {volume_id} out as {disk_format}", timeout=COPY_TIMEOUT)

    # -- helpers ---------------------------------------------------------------------------------

    def _spec(self, image: str, snap: str = "") -> str:
        where = f"{self._pool}/{self._namespace}/" if self._namespace else f"{self._pool}/"
        return where + image + (f"@{snap}" if snap else "")

    def _node(self, image: str) -> dict[str, Any]:
        """QEMU ``blockdev-add`` options of the image's rbd protocol node."""
        node: dict[str, Any] = {"driver": "rbd", "pool": self._pool, "image": image}
        for key, value in (("namespace", self._namespace), ("conf", self._conf), ("user", self._user)):
            if value:
                node[key] = value
        return node

    def _qemu_target(self, image: str) -> str:
        return "json:" + json.dumps({"driver": "raw", "file": self._node(image)})

    async def _rbd(self, args: list[str], what: str, timeout: float = RBD_TIMEOUT) -> str:
        """``rbd`` with our cluster options (see ``run_rbd``)."""
        return await run_rbd(self._cli + args, what, timeout)

    async def _list(self) -> _Pool:
        """Every image and snapshot in our pool (and namespace): one ``rbd ls -l``, which opens every
        image (~6 ms each): for finding a snapshot by its id, and the leftover checks."""
        where = f"{self._pool}/{self._namespace}" if self._namespace else self._pool
        entries = json.loads(await self._rbd(["ls", "-l", "--format", "json", where], "listing volumes") or "[]")
        pool = _Pool()
        for entry in entries:
            image = str(entry["image"])
            if "snapshot" in entry:
                pool.snaps.setdefault(image, {})[str(entry["snapshot"])] = (
                    int(entry["size"]), str(entry.get("protected")) == "true")
                continue
            pool.size[image] = int(entry["size"])
            pool.snaps.setdefault(image, {})
        self._holders = {snap: image for image, snaps in pool.snaps.items() for snap in snaps
                         if snap.startswith(SNAPSHOT)}
        return pool

    async def _find(self, snap: str) -> tuple[str, str, tuple[int, bool]] | None:
        """(image, ``snap``, (size, protected)) of the snapshot named ``snap``, or ``None`` when absent.

        The image it was last seen on is asked first (one ``snap ls``); only when it is not there is
        the pool listed.  Under the lock.
        """
        holder = self._holders.get(snap)
        if holder is not None:
            snaps = await self._snaps(holder)
            if snaps and snap in snaps:
                return holder, snap, snaps[snap]
        pool = await self._list()
        holder = pool.holder(snap)
        return None if holder is None else (holder, snap, pool.snaps[holder][snap])

    async def _size(self, name: str) -> int | None:
        try:
            out = await self._rbd(["info", "--format", "json", self._spec(name)], f"reading {name}")
        except RbdFailed as exc:
            if exc.errno == ENOENT:
                return None
            raise
        return int(json.loads(out)["size"])

    async def _limit_depth(self, volume_id: str, parent: str) -> None:
        """Flatten the new volume (copy its parents' data into it) if its clone chain is deeper than
        ``max_clone_depth`` (Cinder's ``rbd_max_clone_depth``), then collect its former parent.

        Outside the lock: a flatten copies a whole volume, and the volume is in use meanwhile.  A
        failure or a crash half way leaves it a working clone, only deeper: logged, not raised.
        """
        name, depth = _volume(volume_id), 0
        image: str | None = name
        try:
            while image is not None and depth <= self._max_depth:
                info = json.loads(await self._rbd(["info", "--format", "json", self._spec(image)], f"reading {image}"))
                up = info.get("parent") or {}
                ours = up.get("pool") == self._pool and up.get("pool_namespace", "") == self._namespace
                image = str(up["image"]) if up and ours else None
                depth += 1 if up else 0
            if depth <= self._max_depth:
                return
            log.info("volume backend rbd: flattening %s (its clone chain is deeper than %d)", name, self._max_depth)
            await self._rbd(["flatten", "--no-progress", self._spec(name)], f"flattening volume {volume_id}",
                            COPY_TIMEOUT)
        except DriverError as exc:
            log.warning("volume backend rbd: %s stays a clone: %s", name, exc)
            return
        await self._collect(parent)

    async def _snaps(self, image: str) -> dict[str, tuple[int, bool]] | None:
        """The image's snapshots (name -> (size, protected)), or ``None`` when the image is absent."""
        try:
            found = json.loads(await self._rbd(["snap", "ls", "--format", "json", self._spec(image)],
                                               f"reading {image}") or "[]")
        except RbdFailed as exc:
            if exc.errno == ENOENT:
                return None
            raise
        return {str(s["name"]): (int(s["size"]), str(s.get("protected")) == "true") for s in found}

    async def _adopt(self, name: str, size: int) -> bool:
        """True if the volume ``name`` exists already with ``size``; ``Conflict`` if with another."""
        current = await self._size(name)
        if current is None:
            return False
        if current != size:
            raise Conflict(detail=f"volume {name.removeprefix(VOLUME)} exists with {current} bytes, not {size}")
        return True

    async def _clone(self, parent: str, snap: str, point: tuple[int, bool], volume_id: str, size_gib: int,
                     what: str) -> None:
        """Make volume ``volume_id`` an RBD clone of ``parent@snap`` (``point``: its size and whether it is
        protected), grown to ``size_gib``.  Under the lock."""
        needed, protected = point
        if needed > size_bytes(size_gib):
            raise too_small(what, needed, size_gib)
        if not protected:
            await self._rbd(["snap", "protect", self._spec(parent, snap)], f"protecting {what}")
        tmp = TMP + volume_id
        try:
            try:
                await self._rbd(["clone", self._spec(parent, snap), self._spec(tmp)],
                                f"creating volume {volume_id} from {what}")
            except RbdFailed as exc:
                if exc.errno != EEXIST:
                    raise
                await self._remove(tmp)  # what a crash left
                await self._rbd(["clone", self._spec(parent, snap), self._spec(tmp)],
                                f"creating volume {volume_id} from {what}")
            if size_gib * GIB > needed:
                await self._rbd(["resize", "--no-progress", "--size", f"{size_gib}G", self._spec(tmp)],
                                f"creating volume {volume_id} from {what}")
            await self._rbd(["rename", self._spec(tmp), self._spec(_volume(volume_id))],
                            f"creating volume {volume_id} from {what}")
        except BaseException:
            with contextlib.suppress(DriverError):
                await self._remove(tmp)
            raise

    async def _remove(self, image: str, snaps: dict[str, tuple[int, bool]] | None = None) -> None:
        """Remove ``image`` with its snapshots (none may have clones; ``snaps`` if known: name ->
        (size, protected)); an absent one is no error."""
        try:
            if snaps is None:
                snaps = await self._snaps(image)
                if snaps is None:
                    return
            for snap, (_, protected) in snaps.items():
                if protected:
                    await self._rbd(["snap", "unprotect", self._spec(image, snap)], f"removing {image}")
            if snaps:
                await self._rbd(["snap", "purge", "--no-progress", self._spec(image)], f"removing {image}")
            await self._rbd(["rm", "--no-progress", self._spec(image)], f"removing {image}")
        except RbdFailed as exc:
            if exc.errno != ENOENT:
                raise

    # -- collecting ------------------------------------------------------------------------------

    async def _collect(self, image: str) -> None:
        """Remove what nothing stands on any more, starting at ``image`` and going up its parents.

        Only the images a removal can have freed are looked at, never the whole pool: whether a
        snapshot still has clones is asked by unprotecting it (``EBUSY`` if it has; every snapshot
        this backend clones is protected first), which costs the same for one clone or a thousand.
        The first collection of this process looks at every hidden image as well, for what an
        earlier one left (a crash, a failure).  Runs after the operation proper has succeeded: a
        failure here is logged, not raised.
        """
        try:
            async with self._lock:
                todo = {image}
                if not self._swept:
                    todo |= {name for name in await self._names() if name.startswith((IMAGE, DELETED, TMP))}
                    self._swept = True
                while todo:
                    parent = await self._release(todo.pop())
                    if parent is not None:
                        todo.add(parent)
        except DriverError as exc:
            log.warning("volume backend rbd %s: collecting unused images failed: %s", self._spec(""), exc)

    async def _release(self, image: str) -> str | None:
        """Remove ``image``'s unnamed snapshots that have no clones and, if it is hidden and has no
        snapshot left, the image: then its parent image's name (in our pool), to look at next."""
        if image in self._busy:
            return None
        try:
            info = json.loads(await self._rbd(["info", "--format", "json", self._spec(image)], "collecting"))
        except RbdFailed as exc:
            if exc.errno == ENOENT:
                return None
            raise
        hidden = image.startswith((IMAGE, DELETED, TMP))
        kept = False
        for snap, (_, protected) in (await self._snaps(image) or {}).items():
            if snap.startswith(SNAPSHOT) or not (hidden or snap.startswith((CLONE, DELETED))):
                kept = True
                continue
            if protected:
                try:
                    await self._rbd(["snap", "unprotect", self._spec(image, snap)], "collecting")
                except RbdFailed as exc:
                    if exc.errno != EBUSY:
                        raise
                    kept = True  # clones stand on it
                    continue
            log.info("volume backend rbd: removing unused snapshot %s@%s", image, snap)
            await self._rbd(["snap", "rm", "--no-progress", self._spec(image, snap)], "collecting")
        if not hidden or kept:
            return None
        log.info("volume backend rbd: removing unused image %s", image)
        await self._rbd(["rm", "--no-progress", self._spec(image)], "collecting")
        parent = info.get("parent") or {}
        if parent.get("pool") == self._pool and parent.get("pool_namespace", "") == self._namespace:
            return str(parent["image"])
        return None

    async def _names(self) -> list[str]:
        """The names of the images in our pool (and namespace): cheap, no image is opened."""
        where = f"{self._pool}/{self._namespace}" if self._namespace else self._pool
        return [str(name) for name in json.loads(await self._rbd(["ls", "--format", "json", where],
                                                                 "listing volumes") or "[]")]


def _volume(volume_id: str) -> str:
    return VOLUME + check_id("volume", volume_id)
