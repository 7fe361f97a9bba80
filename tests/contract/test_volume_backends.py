"""One contract suite for every volume backend: FakeVolumeBackend, FileBackend and RbdBackend behave the same.

The file backend runs on a temporary root with the real ``qemu-img`` and ``qemu-io`` (installed
wherever the tests run: these tests do not skip).  The rbd backend runs in an RBD namespace of its
own in the session's throw-away Ceph cluster (``ceph_lab``: skipped where Ceph is not installed,
failed in CI).  Data is written and read back through the backend's ``local_disk`` with
``qemu-io`` (a file, or a ``json:`` filename naming QEMU's rbd node), and through the fake's test
hooks otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from yunstack.errors import BadRequest, Conflict, DriverError, NotFound
from yunstack.volume.backend import GIB, VolumeBackend
from yunstack.volume.backends.fake import FakeVolumeBackend
from yunstack.volume.backends.file import FileBackend
from yunstack.volume.backends.rbd import RbdBackend

from .conftest import CephLab

K64 = 64 * 1024


def new_id() -> str:
    return str(uuid.uuid4())


def qemu_io(path: Path | str, command: str, *, read_only: bool = False,
            fmt: str | None = "qcow2") -> subprocess.CompletedProcess[str]:
    """``qemu-io`` on ``path`` in format ``fmt`` (``None``: a ``json:`` filename that names it)."""
    argv = ["qemu-io"] + (["-f", fmt] if fmt else []) + (["-r"] if read_only else []) + ["-c", command, str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def chain(path: Path) -> list[dict[str, Any]]:
    """``qemu-img info --backing-chain`` of ``path``: the image first, then each backing file."""
    out = subprocess.run(["qemu-img", "info", "--output=json", "--backing-chain", "-U", str(path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    found: list[dict[str, Any]] = json.loads(out)
    return found


@dataclass
class Harness:
    """One backend under test plus ways to write and read a volume's data."""

    kind: str
    backend: Any
    root: Path | None
    lab: CephLab | None = None
    namespace: str = ""

    async def write(self, volume_id: str, pattern: int, offset: int = 0, length: int = K64) -> None:
        if self.kind == "fake":
            self.backend.write(volume_id, offset, bytes([pattern]) * length)
            return
        target, fmt = await self._target(volume_id)
        done = qemu_io(target, f"write -P {pattern:#x} {offset} {length}", fmt=fmt)
        assert done.returncode == 0, done.stdout + done.stderr

    async def holds(self, volume_id: str, pattern: int, offset: int = 0, length: int = K64) -> bool:
        if self.kind == "fake":
            return bool(self.backend.read(volume_id, offset, length) == bytes([pattern]) * length)
        target, fmt = await self._target(volume_id)
        done = qemu_io(target, f"read -P {pattern:#x} {offset} {length}", read_only=True, fmt=fmt)
        assert "Could not open" not in done.stderr, done.stderr
        return done.returncode == 0

    async def _target(self, volume_id: str) -> tuple[Path | str, str | None]:
        """What qemu-io opens for the volume: its file, or a ``json:`` filename of its nodes."""
        disk = await self.backend.local_disk(volume_id)
        if disk.path is not None:
            return disk.path, disk.format
        return "json:" + json.dumps({"driver": disk.format, "file": disk.node}), None

    @property
    def home(self) -> Path:
        """The file backend's root."""
        assert self.root is not None
        return self.root

    def files(self) -> list[str]:
        """Every file left under the file backend's root, every image and snapshot in the rbd
        backend's namespace (``image@snapshot``), none for the fake."""
        if self.lab is not None:
            return sorted(e["image"] + (f"@{e['snapshot']}" if "snapshot" in e else "")
                          for e in self.lab.ls(self.namespace))
        if self.root is None:
            return []
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if not p.is_dir())


@pytest.fixture(params=["fake", "file", "rbd"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "fake":
        return Harness("fake", FakeVolumeBackend(), None)
    if request.param == "rbd":  # a namespace per test; the cluster goes at the end of the session
        lab: CephLab = request.getfixturevalue("ceph_lab")
        namespace = lab.new_namespace()
        return Harness("rbd", RbdBackend(lab.pool, namespace=namespace, conf=lab.conf, user=lab.user), None,
                       lab=lab, namespace=namespace)
    root = tmp_path / "volumes-root"
    return Harness("file", FileBackend(root), root)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A small qcow2 image (64 MiB virtual) whose first 64 KiB hold 0xab."""
    path = tmp_path / "image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True, timeout=60)
    done = qemu_io(path, f"write -P 0xab 0 {K64}")
    assert done.returncode == 0, done.stderr
    return path


async def test_the_backend_implements_the_protocol(harness: Harness) -> None:
    assert isinstance(harness.backend, VolumeBackend)
    assert harness.backend.name == harness.kind
    assert await harness.backend.volumes() == set()
    assert await harness.backend.snapshots() == set()


async def test_an_empty_volume_has_its_size_and_reads_zeros(harness: Harness) -> None:
    volume = new_id()
    await harness.backend.create(volume, 1)
    info = await harness.backend.info(volume)
    assert info is not None and (info.id, info.size_bytes) == (volume, GIB)
    assert await harness.holds(volume, 0, 0, 4096)
    assert await harness.holds(volume, 0, GIB - K64)
    assert await harness.backend.volumes() == {volume}
    disk = await harness.backend.local_disk(volume)
    if harness.kind == "file":
        assert disk.format == "qcow2" and disk.path.is_file()
        assert disk.path.stat().st_blocks * 512 < 2 * 1024 * 1024  # sparse: 1 GiB costs nothing yet
    if harness.kind == "rbd":
        assert harness.lab is not None
        assert disk.path is None and disk.format == "raw"
        assert disk.node == {"driver": "rbd", "pool": harness.lab.pool, "namespace": harness.namespace,
                             "image": f"volume-{volume}", "conf": harness.lab.conf, "user": harness.lab.user}
        assert harness.lab.du(harness.namespace, f"volume-{volume}") == 0  # thin: 1 GiB costs nothing yet


async def test_create_is_idempotent_and_another_size_conflicts(harness: Harness) -> None:
    volume = new_id()
    await harness.backend.create(volume, 1)
    await harness.write(volume, 0x5A)
    await harness.backend.create(volume, 1)  # a retry adopts what is there
    assert await harness.holds(volume, 0x5A)
    with pytest.raises(Conflict):
        await harness.backend.create(volume, 2)
    assert (await harness.backend.info(volume)).size_bytes == GIB


async def test_a_volume_from_an_image_holds_the_image_as_an_overlay_on_a_shared_base(
        harness: Harness, image: Path) -> None:
    first, second = new_id(), new_id()
    await harness.backend.create_from_image(first, 1, image, "qcow2", "img-1")
    assert (await harness.backend.info(first)).size_bytes == GIB
    started = time.monotonic()
    await harness.backend.create_from_image(second, 1, image, "qcow2", "img-1")
    if harness.kind != "rbd":  # (rbd: a few CLI calls at ~0.1 s; its parent and du below show the clone)
        assert time.monotonic() - started < 1.0  # the base exists: an overlay, not a copy
    await harness.backend.create_from_image(second, 1, image, "qcow2", "img-1")  # idempotent
    if harness.kind == "file":
        assert harness.root is not None
        base = harness.root / "bases" / "img-1.qcow2"
        for volume in (first, second):
            assert await harness.holds(volume, 0xAB)
            path = (await harness.backend.local_disk(volume)).path
            assert path.stat().st_size < 1024 * 1024  # an overlay: no data of its own
            assert chain(path)[0]["backing-filename"] == str(base)
            assert chain(path)[0]["backing-filename-format"] == "qcow2"
        await harness.write(first, 0x01)
        assert await harness.holds(second, 0xAB)  # writes stay in the volume's own overlay
    if harness.kind == "rbd":
        assert harness.lab is not None
        images = {e["image"]: e for e in harness.lab.ls(harness.namespace) if "snapshot" not in e}
        for volume in (first, second):  # copy-on-write clones of the one imported base
            assert images[f"volume-{volume}"]["parent"]["image"] == "image-img-1"
            assert images[f"volume-{volume}"]["parent"]["snapshot"] == "base"
            assert harness.lab.du(harness.namespace, f"volume-{volume}") == 0
        await harness.write(first, 0x01)
        assert await harness.holds(second, 0xAB)
    assert await harness.holds(second, 0, GIB - K64)


async def test_an_image_larger_than_the_volume_is_refused_and_leaves_nothing(
        harness: Harness, tmp_path: Path) -> None:
    big = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "3G"], check=True, timeout=60)
    volume = new_id()
    with pytest.raises(BadRequest) as caught:
        await harness.backend.create_from_image(volume, 2, big, "qcow2", "img-big")
    assert str(3 * GIB) in str(caught.value) and "2 GiB" in str(caught.value)
    assert await harness.backend.volumes() == set()
    assert harness.files() == []


async def test_an_unknown_image_format_is_refused(harness: Harness, image: Path) -> None:
    with pytest.raises(BadRequest):
        await harness.backend.create_from_image(new_id(), 1, image, "ami", "img-1")
    assert harness.files() == []


async def test_a_volume_from_a_snapshot_sees_the_data_of_snapshot_time(harness: Harness) -> None:
    volume, snap, restored = new_id(), new_id(), new_id()
    await harness.backend.create(volume, 1)
    await harness.write(volume, 0x11)
    await harness.backend.snapshot(snap, volume)
    await harness.backend.snapshot(snap, volume)  # a retry adopts it
    assert await harness.backend.snapshots() == {snap}
    await harness.write(volume, 0x22)
    await harness.backend.create_from_snapshot(restored, 2, snap)
    assert (await harness.backend.info(restored)).size_bytes == 2 * GIB
    assert await harness.holds(restored, 0x11)
    assert await harness.holds(volume, 0x22)
    await harness.write(restored, 0x33)
    again = new_id()
    await harness.backend.create_from_snapshot(again, 1, snap)
    assert await harness.holds(again, 0x11)  # the snapshot itself never changes
    assert await harness.holds(volume, 0x22)


async def test_revert_gives_the_volume_its_latest_snapshot_s_data_and_keeps_what_was_made_from_it(
        harness: Harness) -> None:
    volume, first, latest, made = new_id(), new_id(), new_id(), new_id()
    await harness.backend.create(volume, 1)
    await harness.write(volume, 0x11)
    await harness.backend.snapshot(first, volume)
    await harness.write(volume, 0x22)
    await harness.backend.snapshot(latest, volume)
    await harness.backend.create_from_snapshot(made, 1, latest)
    await harness.write(volume, 0x33)
    await harness.write(volume, 0x44, K64)
    await harness.backend.revert(volume, latest)
    await harness.backend.revert(volume, latest)  # a retry changes nothing
    assert await harness.holds(volume, 0x22)
    assert await harness.holds(volume, 0, K64)  # written after the snapshot: gone
    assert (await harness.backend.info(volume)).size_bytes == GIB
    assert await harness.holds(made, 0x22)
    await harness.write(volume, 0x55)  # the volume goes on; the snapshot stays as it was
    other = new_id()
    await harness.backend.create_from_snapshot(other, 1, latest)
    assert await harness.holds(other, 0x22)
    assert await harness.backend.snapshots() == {first, latest}
    with pytest.raises(NotFound):
        await harness.backend.revert(volume, new_id())
    with pytest.raises(NotFound):
        await harness.backend.revert(new_id(), latest)
    for gone in (volume, made, other):
        await harness.backend.delete(gone)
    for snap in (first, latest):
        await harness.backend.delete_snapshot(snap)
    assert harness.files() == []


async def test_a_clone_sees_the_source_data_and_writes_to_either_stay_private(harness: Harness) -> None:
    source, copy = new_id(), new_id()
    await harness.backend.create(source, 1)
    await harness.write(source, 0x11)
    await harness.backend.clone(copy, 1, source)
    await harness.backend.clone(copy, 1, source)  # a retry adopts it
    assert await harness.holds(copy, 0x11)
    await harness.write(copy, 0x22)
    assert await harness.holds(source, 0x11)
    await harness.write(source, 0x33, K64)
    assert await harness.holds(copy, 0, K64)
    assert await harness.holds(copy, 0x22)


async def test_deleting_the_source_keeps_its_clones_and_snapshots_readable(harness: Harness, image: Path) -> None:
    source, snap, copy, restored = new_id(), new_id(), new_id(), new_id()
    await harness.backend.create_from_image(source, 1, image, "qcow2", "img-1")
    await harness.write(source, 0x11, K64)
    await harness.backend.snapshot(snap, source)
    await harness.backend.clone(copy, 1, source)
    await harness.write(source, 0x44, K64)
    await harness.backend.delete(source)
    assert await harness.backend.volumes() == {copy}
    assert await harness.holds(copy, 0x11, K64)
    await harness.backend.create_from_snapshot(restored, 1, snap)
    await harness.backend.delete_snapshot(snap)
    assert await harness.backend.snapshots() == set()
    for volume in (copy, restored):
        assert await harness.holds(volume, 0x11, K64)
        if harness.kind == "file":
            assert await harness.holds(volume, 0xAB)


@pytest.mark.parametrize("order", ["volumes first", "snapshots first", "newest first"])
async def test_deleting_everything_leaves_no_file_behind(harness: Harness, image: Path, order: str) -> None:
    backend = harness.backend
    a, b, c, d, e = (new_id() for _ in range(5))
    s1, s2, s3 = new_id(), new_id(), new_id()
    await backend.create_from_image(a, 1, image, "qcow2", "img-1")
    await backend.create(b, 1)
    await harness.write(a, 0x11)
    await backend.snapshot(s1, a)
    await backend.clone(c, 2, a)
    await harness.write(c, 0x22)
    await backend.snapshot(s2, c)
    await backend.create_from_snapshot(d, 1, s1)
    await backend.snapshot(s3, a)
    await backend.clone(e, 1, b)
    volumes, snapshots = [a, b, c, d, e], [s1, s2, s3]
    steps: list[tuple[Any, str]] = {
        "volumes first": [(backend.delete, v) for v in volumes] + [(backend.delete_snapshot, s) for s in snapshots],
        "snapshots first": [(backend.delete_snapshot, s) for s in snapshots] + [(backend.delete, v) for v in volumes],
        "newest first": [(backend.delete, e), (backend.delete_snapshot, s3), (backend.delete, d),
                         (backend.delete_snapshot, s2), (backend.delete, c), (backend.delete_snapshot, s1),
                         (backend.delete, b), (backend.delete, a)],
    }[order]
    expected = {a: 0x11, b: 0, c: 0x22, d: 0x11, e: 0}
    for delete, ident in steps:
        await delete(ident)
        for volume in await backend.volumes():  # every delete leaves the others whole
            assert await harness.holds(volume, expected[volume])
    assert await backend.volumes() == set() and await backend.snapshots() == set()
    assert harness.files() == []


async def test_extend_grows_and_a_shrink_is_refused(harness: Harness) -> None:
    volume = new_id()
    await harness.backend.create(volume, 1)
    await harness.write(volume, 0x11)
    await harness.backend.extend(volume, 3)
    await harness.backend.extend(volume, 3)  # the same size: nothing to do
    assert (await harness.backend.info(volume)).size_bytes == 3 * GIB
    with pytest.raises(BadRequest):
        await harness.backend.extend(volume, 2)
    assert (await harness.backend.info(volume)).size_bytes == 3 * GIB
    assert await harness.holds(volume, 0x11)
    assert await harness.holds(volume, 0, 3 * GIB - K64)
    with pytest.raises(NotFound):
        await harness.backend.extend(new_id(), 2)


async def test_deleting_what_is_absent_is_fine_and_absent_things_are_not_found(harness: Harness) -> None:
    backend = harness.backend
    await backend.delete(new_id())
    await backend.delete_snapshot(new_id())
    assert await backend.info(new_id()) is None
    with pytest.raises(NotFound):
        await backend.local_disk(new_id())
    with pytest.raises(NotFound):
        await backend.snapshot(new_id(), new_id())
    with pytest.raises(NotFound):
        await backend.create_from_snapshot(new_id(), 1, new_id())
    with pytest.raises(NotFound):
        await backend.clone(new_id(), 1, new_id())
    assert await backend.volumes() == set() and await backend.snapshots() == set()
    assert harness.files() == []


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "x" * 200])
async def test_ids_that_are_not_plain_names_are_refused(harness: Harness, bad: str) -> None:
    with pytest.raises(BadRequest):
        await harness.backend.create(bad, 1)
    with pytest.raises(BadRequest):
        await harness.backend.delete_snapshot(bad)


@pytest.mark.parametrize("size", [0, -1, True])
async def test_sizes_are_whole_gib(harness: Harness, size: Any) -> None:
    with pytest.raises(BadRequest):
        await harness.backend.create(new_id(), size)


async def test_a_clone_or_snapshot_volume_smaller_than_its_source_is_refused(harness: Harness) -> None:
    source, snap = new_id(), new_id()
    await harness.backend.create(source, 2)
    await harness.backend.snapshot(snap, source)
    with pytest.raises(BadRequest):
        await harness.backend.clone(new_id(), 1, source)
    with pytest.raises(BadRequest):
        await harness.backend.create_from_snapshot(new_id(), 1, snap)
    assert await harness.backend.volumes() == {source}


async def test_copy_to_writes_the_volume_s_bytes_as_raw_or_qcow2(harness: Harness, image: Path,
                                                                tmp_path: Path) -> None:
    volume = new_id()
    await harness.backend.create_from_image(volume, 1, image, "qcow2", "img-1")
    await harness.write(volume, 0x5C, 3 * K64)
    formats = ["raw"] if harness.kind == "fake" else ["raw", "qcow2"]  # the fake writes raw only
    for fmt in formats:
        dest = tmp_path / f"out.{fmt}"
        await harness.backend.copy_to(volume, dest, fmt)
        if harness.kind != "fake":
            assert chain(dest)[0]["format"] == fmt and chain(dest)[0]["virtual-size"] == GIB
        for pattern, offset in ((0x5C, 3 * K64), (0, GIB - K64)) + (((0xAB, 0),) if harness.kind != "fake" else ()):
            done = qemu_io(dest, f"read -P {pattern:#x} {offset} {K64}", read_only=True, fmt=fmt)
            assert done.returncode == 0, done.stdout + done.stderr


# -- the file backend's own promises ---------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Harness:
    root = tmp_path / "volumes-root"
    return Harness("file", FileBackend(root), root)


async def test_chains_stay_short_when_old_snapshots_are_deleted(files: Harness) -> None:
    backend, volume = files.backend, new_id()
    await backend.create(volume, 1)
    taken: list[str] = []
    for round_ in range(6):
        await files.write(volume, 0x10 + round_, round_ * K64)
        taken.append(new_id())
        await backend.snapshot(taken[-1], volume)
        if len(taken) > 1:
            await backend.delete_snapshot(taken.pop(0))  # rotation: keep the newest only
        path = (await backend.local_disk(volume)).path
        assert len(chain(path)) <= 3, [c["filename"] for c in chain(path)]
    await backend.delete_snapshot(taken.pop())
    restored = new_id()
    await backend.snapshot(new_id(), volume)
    await backend.create_from_snapshot(restored, 1, (await backend.snapshots()).pop())
    for round_ in range(6):
        assert await files.holds(volume, 0x10 + round_, round_ * K64)
        assert await files.holds(restored, 0x10 + round_, round_ * K64)
    assert len(list((files.home / "frozen").glob("*.qcow2"))) <= 2


async def test_a_layer_of_an_open_chain_is_kept_until_the_chain_is_closed(files: Harness) -> None:
    backend, volume, old, new = files.backend, new_id(), new_id(), new_id()
    await backend.create(volume, 1)
    await files.write(volume, 0x11)
    await backend.snapshot(old, volume)
    await files.write(volume, 0x22, K64)
    await backend.snapshot(new, volume)
    path = (await backend.local_disk(volume)).path
    sockdir = Path(tempfile.mkdtemp(prefix="ys-nbd-", dir="/tmp"))
    pidfile = sockdir / "pid"
    subprocess.run(["qemu-nbd", "-f", "qcow2", f"--socket={sockdir / 's'}", f"--pid-file={pidfile}", "--fork",
                    str(path)], check=True, timeout=30)
    try:
        await backend.delete_snapshot(old)  # the merge fails on QEMU's image lock: no error, layer kept
        assert (files.home / "frozen" / f"{old}.qcow2").exists()
    finally:
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        for _ in range(100):
            if qemu_io(path, "read 0 4k", read_only=False).returncode == 0:
                break
            await asyncio.sleep(0.05)
        shutil.rmtree(sockdir, ignore_errors=True)
    await backend.delete(new_id())  # any later collection merges it
    assert not (files.home / "frozen" / f"{old}.qcow2").exists()
    assert len(chain(path)) == 2
    assert await files.holds(volume, 0x11) and await files.holds(volume, 0x22, K64)


async def test_a_snapshot_cut_short_after_its_hard_link_is_finished_by_the_retry(files: Harness) -> None:
    backend, volume, snap = files.backend, new_id(), new_id()
    await backend.create(volume, 1)
    await files.write(volume, 0x11)
    path = (await backend.local_disk(volume)).path
    frozen = files.home / "frozen"
    frozen.mkdir()
    (files.home / "snapshots").mkdir()
    os.symlink(f"../frozen/{snap}.qcow2", files.home / "snapshots" / snap)
    os.link(path, frozen / f"{snap}.qcow2")  # the crash came here, before the new overlay
    with pytest.raises(Conflict):  # its layer is still the volume's live file
        await backend.create_from_snapshot(new_id(), 1, snap)
    await backend.snapshot(snap, volume)
    assert chain(path)[0]["backing-filename"] == str(frozen / f"{snap}.qcow2")
    await files.write(volume, 0x22)
    restored = new_id()
    await backend.create_from_snapshot(restored, 1, snap)
    assert await files.holds(restored, 0x11) and await files.holds(volume, 0x22)


async def test_a_failed_create_leaves_nothing_behind(files: Harness, image: Path, tmp_path: Path) -> None:
    failing = tmp_path / "qemu-img"  # fails its creates and conversions half way through
    failing.write_text('#!/bin/sh\nfor last; do :; done\n'
                       'case "$1" in convert) echo partial > "$last"; exit 1;; create) exit 1;; esac\n'
                       'exec qemu-img "$@"\n')
    failing.chmod(0o755)
    broken = FileBackend(files.home, qemu_img=str(failing))
    with pytest.raises(DriverError):
        await broken.create(new_id(), 1)
    with pytest.raises(DriverError):
        await broken.create_from_image(new_id(), 1, image, "qcow2", "img-1")
    assert files.files() == []


async def test_many_volumes_of_a_new_image_at_once_share_one_base(files: Harness, image: Path) -> None:
    volumes = [new_id() for _ in range(8)]
    await asyncio.gather(*(files.backend.create_from_image(v, 1, image, "qcow2", "img-1") for v in volumes))
    assert files.files() == sorted(["bases/img-1.qcow2", *(f"volumes/{v}.qcow2" for v in volumes)])
    for volume in volumes:
        assert await files.holds(volume, 0xAB)
    await asyncio.gather(*(files.backend.delete(v) for v in volumes))
    assert files.files() == []


async def test_a_snapshot_id_deleted_while_its_data_is_in_use_is_not_taken_again(files: Harness) -> None:
    backend, volume, snap = files.backend, new_id(), new_id()
    await backend.create(volume, 1)
    await backend.snapshot(snap, volume)
    await backend.delete_snapshot(snap)  # the layer stays: the volume is built on it
    with pytest.raises(Conflict):
        await backend.snapshot(snap, volume)


async def test_operations_on_different_volumes_may_run_at_once(harness: Harness, image: Path) -> None:
    backend = harness.backend
    sources = [new_id() for _ in range(4)]
    await asyncio.gather(*(backend.create_from_image(v, 1, image, "qcow2", "img-1") for v in sources))
    for n, volume in enumerate(sources):
        await harness.write(volume, 0x10 + n, K64)
    snaps, clones, restored = [new_id() for _ in sources], [new_id() for _ in sources], [new_id() for _ in sources]
    await asyncio.gather(*(backend.snapshot(s, v) for s, v in zip(snaps, sources, strict=True)),
                         *(backend.clone(c, 1, v) for c, v in zip(clones, sources, strict=True)))
    await asyncio.gather(*(backend.delete(v) for v in sources),
                         *(backend.create_from_snapshot(r, 1, s) for r, s in zip(restored, snaps, strict=True)))
    await asyncio.gather(*(backend.delete_snapshot(s) for s in snaps))
    for n, (copy, again) in enumerate(zip(clones, restored, strict=True)):
        assert await harness.holds(copy, 0x10 + n, K64) and await harness.holds(again, 0x10 + n, K64)
    await asyncio.gather(*(backend.delete(v) for v in clones + restored))
    assert harness.files() == []


# -- the rbd backend's own promises ----------------------------------------------------------------


@pytest.fixture
def rbd(ceph_lab: CephLab) -> Harness:
    namespace = ceph_lab.new_namespace()
    backend = RbdBackend(ceph_lab.pool, namespace=namespace, conf=ceph_lab.conf, user=ceph_lab.user)
    return Harness("rbd", backend, None, lab=ceph_lab, namespace=namespace)


async def test_a_failed_rbd_create_leaves_nothing_behind(rbd: Harness, image: Path, tmp_path: Path) -> None:
    assert rbd.lab is not None
    failing = tmp_path / "qemu-img"  # its imports fail half way through
    failing.write_text('#!/bin/sh\ncase "$1" in convert) exit 1;; esac\nexec qemu-img "$@"\n')
    failing.chmod(0o755)
    broken = RbdBackend(rbd.lab.pool, namespace=rbd.namespace, conf=rbd.lab.conf, user=rbd.lab.user,
                        qemu_img=str(failing))
    with pytest.raises(DriverError):
        await broken.create_from_image(new_id(), 1, image, "qcow2", "img-1")
    source = new_id()
    await rbd.backend.create(source, 2)
    with pytest.raises(BadRequest):  # too small: refused before anything is made
        await rbd.backend.clone(new_id(), 1, source)
    await rbd.backend.delete(source)
    assert rbd.files() == []


async def test_rbd_images_the_backend_did_not_make_are_left_alone(rbd: Harness) -> None:
    assert rbd.lab is not None
    where = f"{rbd.lab.pool}/{rbd.namespace}"
    rbd.lab.rbd("create", "--size", "4M", f"{where}/glance-image")  # another service's, in the same pool
    rbd.lab.rbd("snap", "create", f"{where}/glance-image@snap")
    volume = new_id()
    await rbd.backend.create(volume, 1)
    await rbd.backend.snapshot(new_id(), volume)
    await rbd.backend.delete(volume)
    assert await rbd.backend.volumes() == set()
    assert {"glance-image", "glance-image@snap"} <= set(rbd.files())


async def test_an_rbd_clone_cut_short_by_a_crash_is_finished_by_the_retry(rbd: Harness) -> None:
    assert rbd.lab is not None
    where = f"{rbd.lab.pool}/{rbd.namespace}"
    source, copy = new_id(), new_id()
    await rbd.backend.create(source, 1)
    await rbd.write(source, 0x11)
    rbd.lab.rbd("snap", "create", f"{where}/volume-{source}@clone-{copy}")  # the crash came after the
    rbd.lab.rbd("snap", "protect", f"{where}/volume-{source}@clone-{copy}")  # clone point and half a clone
    rbd.lab.rbd("clone", f"{where}/volume-{source}@clone-{copy}", f"{where}/tmp-{copy}")
    await rbd.write(source, 0x22)
    await rbd.backend.clone(copy, 1, source)
    assert await rbd.holds(copy, 0x11)  # the point it took first: the data of the first attempt
    await rbd.backend.delete(copy)
    await rbd.backend.delete(source)
    assert rbd.files() == []


async def test_what_an_earlier_rbd_backend_left_is_collected_by_the_first_delete(rbd: Harness, image: Path) -> None:
    assert rbd.lab is not None
    where = f"{rbd.lab.pool}/{rbd.namespace}"
    rbd.lab.rbd("create", "--size", "4M", f"{where}/tmp-{new_id()}")  # a create cut short
    rbd.lab.rbd("create", "--size", "4M", f"{where}/deleted-0000-{new_id()}")  # a collection cut short
    await rbd.backend.delete(new_id())  # absent: still a collection
    assert rbd.files() == []


async def test_a_restarted_rbd_backend_finds_snapshots_it_has_not_seen(rbd: Harness) -> None:
    assert rbd.lab is not None
    volume, snap, restored = new_id(), new_id(), new_id()
    await rbd.backend.create(volume, 1)
    await rbd.write(volume, 0x11)
    await rbd.backend.snapshot(snap, volume)
    again = RbdBackend(rbd.lab.pool, namespace=rbd.namespace, conf=rbd.lab.conf, user=rbd.lab.user)
    await again.delete(volume)  # the snapshot now stands on a deleted-* image
    await again.create_from_snapshot(restored, 1, snap)
    assert await rbd.holds(restored, 0x11)
    await rbd.backend.delete_snapshot(snap)  # where the first instance last saw it is gone (renamed)
    assert await rbd.backend.snapshots() == set()
    await again.delete(restored)
    assert rbd.files() == []


async def test_rbd_clone_chains_deeper_than_the_limit_are_flattened(rbd: Harness) -> None:
    assert rbd.lab is not None
    backend = RbdBackend(rbd.lab.pool, namespace=rbd.namespace, conf=rbd.lab.conf, user=rbd.lab.user,
                         max_clone_depth=2)
    chain_ = [new_id() for _ in range(4)]
    await backend.create(chain_[0], 1)
    await rbd.write(chain_[0], 0x11)
    for n in range(1, 4):  # each a clone of the one before: depths 1, 2, then 3 > 2
        await backend.clone(chain_[n], 1, chain_[n - 1])
    entries = rbd.lab.ls(rbd.namespace)
    images = {e["image"]: e for e in entries if "snapshot" not in e}
    assert "parent" in images[f"volume-{chain_[2]}"]
    assert "parent" not in images[f"volume-{chain_[3]}"]  # flattened: a copy, standing on nothing
    assert f"volume-{chain_[2]}@clone-{chain_[3]}" not in rbd.files()  # its clone point is gone
    assert await rbd.holds(chain_[3], 0x11)
    for volume in chain_:
        await backend.delete(volume)
    assert rbd.files() == []
