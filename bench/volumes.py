"""Block storage benchmark: the ``file`` volume backend, and a volume in a real guest.

    .venv/bin/python bench/volumes.py [--repeat 10] [--attaches 5] [--size-mib 256] [--skip-guest]
                                      [--image PATH] [--rbd]

``backend`` (no guest): ``FileBackend`` on a temporary root, with a 1 GiB-virtual qcow2 image
holding 64 MiB of data.

- ``create_from_image_first_ms``: the first 1 GiB volume from the image (converts the image into
  the backend's shared base, then an overlay on it); ``create_from_image_ms``: ``--repeat`` more
  (an overlay each).  Target ``target_ms`` (1,000) for the repeated ones.
- ``create_ms`` (empty 1 GiB), ``snapshot_ms`` (of a closed volume), ``clone_ms``,
  ``create_from_snapshot_ms``, ``delete_ms`` (a volume from the image; includes the collector).
- ``disk_usage``: what ``du`` counts under the backend root once the volumes from the image exist,
  against that many full copies of the image (the copy-on-write saving).

``guest`` (real QEMU, TCG, one tiny guest booted with ``QemuDriver``, no control plane), driven
through its serial console's root shell:

- ``attach_to_visible_ms``: ``attach_volume`` called -> the guest's ``/sys/block/vd*/serial``
  shows the volume's id (polled every ~100 ms).  Target ``target_ms`` (2,000).
- ``detach_ms``: the ``detach_volume`` call.
- ``guest_write_mib_per_s`` / ``guest_read_mib_per_s``: busybox ``dd bs=1M`` of ``size_mib`` to
  and from the attached volume's block device (zeros; write ``conv=fsync``, caches dropped before
  the read), timed inside the guest with ``/proc/uptime`` (10 ms resolution).
- ``host_raw_*_mib_per_s``: ``dd bs=1M`` with ``oflag=direct`` / ``iflag=direct`` of the same size
  to a raw file in the backend root's file system, and the ratios guest / raw.  The guest runs
  under TCG, so the ratios say more about emulation than about the storage path.

``guest_nbd``: the same, with each volume reached as a guest on another host reaches it: a
``qemu-storage-daemon`` NBD export with TLS-PSK (here on 127.0.0.1), whose start is in the attach
time.

With ``--rbd``: ``backend_rbd`` and ``guest_rbd``, the same on the ``rbd`` backend against a
throw-away single-node Ceph cluster (``scripts/ceph-lab``: one mon, one bluestore OSD on a sparse
file under /tmp, so the raw store is measured in that file system); the guest opens the images
with QEMU's own rbd driver.

Prints and writes JSON (bench/results/volumes.json).  Not a test: it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yunstack import cgroups
from yunstack.agent.steps.volumes import local_volume_disk
from yunstack.compute.driver import ConfigDrive, Disk, DiskKind, InstanceSpec, NbdSource, root_disk
from yunstack.compute.qemu.driver import QemuDriver
from yunstack.config import Config, QemuConfig, ServerConfig
from yunstack.volume.backends.file import FileBackend
from yunstack.volume.backends.rbd import RbdBackend
from yunstack.volume.export import NbdExports

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 1)

    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1), "p95": pct(0.95),
            "min": round(ordered[0], 1), "max": round(ordered[-1], 1)}


def disk_usage(root: Path) -> int:
    """Bytes allocated under ``root``, each inode once (what ``du -s`` counts)."""
    seen: set[int] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_blocks * 512
    return total


def make_image(path: Path) -> None:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64M", str(path)],
                   check=True, stdout=subprocess.DEVNULL)


async def timed(rows: list[float], call: Any) -> None:
    t0 = time.monotonic()
    await call
    rows.append((time.monotonic() - t0) * 1000)


async def bench_backend(work: Path, repeat: int, backend: Any = None,
                        usage: Callable[[], int] | None = None) -> dict[str, Any]:
    """The backend's operations (``FileBackend`` on ``work/backend`` unless given; ``usage``: the bytes it
    has allocated, ``du`` of its root by default)."""
    image = work / "image.qcow2"
    if not image.exists():
        make_image(image)
    if backend is None:
        backend = FileBackend(work / "backend")
        usage = usage or (lambda: disk_usage(work / "backend"))
    assert usage is not None
    rows: dict[str, list[float]] = {k: [] for k in ("create_from_image_ms", "create_ms", "snapshot_ms", "clone_ms",
                                                    "create_from_snapshot_ms", "delete_ms")}
    first: list[float] = []
    await timed(first, backend.create_from_image("img-0", 1, image, "qcow2", "image-1"))
    for i in range(1, repeat + 1):
        await timed(rows["create_from_image_ms"], backend.create_from_image(f"img-{i}", 1, image, "qcow2", "image-1"))
    volumes = repeat + 1
    used = usage()
    image_bytes = image.stat().st_blocks * 512
    for i in range(repeat):
        await timed(rows["create_ms"], backend.create(f"empty-{i}", 1))
    for i in range(1, repeat + 1):
        await timed(rows["snapshot_ms"], backend.snapshot(f"snap-{i}", f"img-{i}"))
    for i in range(1, repeat + 1):
        await timed(rows["clone_ms"], backend.clone(f"clone-{i}", 1, f"img-{i}"))
    for i in range(1, repeat + 1):
        await timed(rows["create_from_snapshot_ms"], backend.create_from_snapshot(f"fromsnap-{i}", 1, f"snap-{i}"))
    for i in range(1, repeat + 1):
        await timed(rows["delete_ms"], backend.delete(f"img-{i}"))
    return {
        "image": {"virtual_gib": 1, "data_mib": 64, "allocated_mib": round(image_bytes / MIB, 1)},
        "create_from_image_first_ms": round(first[0], 1),
        **{k: summary(v) for k, v in rows.items()},
        "target_ms": 1000,
        "disk_usage": {"volumes_from_image": volumes, "backend_root_mib": round(used / MIB, 1),
                       "full_copies_mib": round(volumes * image_bytes / MIB, 1),
                       "saving": round(1 - used / (volumes * image_bytes), 3)},
    }


async def in_guest(driver: QemuDriver, instance_id: str, command: str, timeout: float = 30.0) -> str:
    """What ``command`` prints in the guest's root shell on its serial console."""
    reader, writer = await asyncio.open_unix_connection(await driver.serial_console(instance_id))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = b""
    typed_at = -1e9
    try:
        while b"@@E2" not in seen:
            if loop.time() > deadline:
                raise RuntimeError(f"no answer to {command!r} within {timeout}s: {seen[-400:]!r}")
            if loop.time() - typed_at > 10:  # the shell may not be up yet: type again
                # The markers come out computed, so the terminal's echo of the typed line never matches.
                writer.write(f"echo @@B$((1+1)); {command}; echo @@E$((1+1))\n".encode())
                await writer.drain()
                typed_at = loop.time()
            try:
                data = await asyncio.wait_for(reader.read(4096), 1.0)
            except TimeoutError:
                continue
            if not data:
                raise RuntimeError("the serial console closed")
            seen += data
    finally:
        writer.close()
    text = seen.decode(errors="replace").replace("\r", "")
    return text.rsplit("@@B2\n", 1)[1].split("@@E2", 1)[0].strip()


async def wait_console(driver: QemuDriver, instance_id: str, pattern: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, await driver.console_output(instance_id)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pattern!r} did not appear on {instance_id}'s console within {timeout}s")
        await asyncio.sleep(0.2)


async def wait_visible(driver: QemuDriver, sid: str, serial: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while serial[:20] not in await in_guest(driver, sid, "cat /sys/block/vd*/serial 2>/dev/null"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"volume {serial} did not appear in the guest within {timeout}s")
        await asyncio.sleep(0.1)


def uptimes(out: str) -> tuple[float, str]:
    """(seconds between the ``T a b`` line's uptimes, dd's own output) of a timed guest command."""
    found = re.search(r"^T (\d+\.\d+) (\d+\.\d+)$", out, re.M)
    if not found or "rc=0" not in out:
        raise RuntimeError(f"guest dd failed: {out!r}")
    return float(found.group(2)) - float(found.group(1)), out[:found.start()].strip()


def host_dd(args: list[str]) -> float:
    t0 = time.monotonic()
    subprocess.run(["dd", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


class Plug:
    """How the guest reaches a volume: its own file (``local``), or an NBD export of it over TLS-PSK on
    127.0.0.1 (``nbd``: the path a guest on another host than the storage host takes)."""

    def __init__(self, over: str, work: Path) -> None:
        self.over = over
        self.exports = NbdExports(work / f"exports-{over}") if over == "nbd" else None

    async def disk(self, backend: Any, vid: str) -> Disk:
        local = await backend.local_disk(vid)
        if self.exports is None:  # its file, or its RBD image through librbd
            return local_volume_disk(vid, local, read_only=False)
        export = await self.exports.start(vid, local, "127.0.0.1")
        return Disk(kind=DiskKind.VOLUME, source=Path(f"/nbd/{vid}"), format="raw", serial=vid, boot_index=None,
                    nbd=NbdSource(host=export.host, port=export.port, export=export.name,
                                  psk_identity=export.psk_identity, psk_key=export.psk_key))

    async def done(self, vid: str) -> None:
        if self.exports is not None:
            await self.exports.stop(vid)


async def bench_guest(work: Path, image: Path, attaches: int, size_mib: int, over: str = "local",
                      backend: Any = None, raw_dir: Path | None = None) -> dict[str, Any]:
    """``over`` local (the volume's file), nbd (an export of it) or rbd (``backend`` an ``RbdBackend``);
    ``raw_dir``: where the raw backing store is measured (the backend root's file system by default)."""
    backend = backend or FileBackend(work / f"guest-backend-{over}")
    raw_dir = raw_dir or work / f"guest-backend-{over}"
    plug = Plug(over, work)
    state = work / f"state-{over}"
    parent = f"yunstack/bench-{work.name}"
    driver = QemuDriver(Config(server=ServerConfig(state_dir=str(state)), qemu=QemuConfig(accel="tcg")),
                        cgroup_parent=parent)
    sid = str(uuid.uuid4())
    spec = InstanceSpec(id=sid, name="vol", hostname="vol", vcpus=1, memory_mib=256,
                        disks=root_disk(image, "qcow2", 1),
                        config_drive=ConfigDrive(meta_data={"uuid": sid, "hostname": "vol"}))
    attach_ms: list[float] = []
    detach_ms: list[float] = []
    try:
        await driver.init_host()
        t_boot = time.monotonic()
        await driver.spawn(spec)
        await wait_console(driver, sid, r"YUNSTACK-READY")
        await in_guest(driver, sid, "true", timeout=120.0)
        boot_to_shell_ms = (time.monotonic() - t_boot) * 1000
        for _ in range(attaches):
            vid = str(uuid.uuid4())
            await backend.create(vid, 1)
            t0 = time.monotonic()  # the export's start counts: a remote attach waits for it
            await driver.attach_volume(sid, await plug.disk(backend, vid))
            await wait_visible(driver, sid, vid)
            attach_ms.append((time.monotonic() - t0) * 1000)
            t0 = time.monotonic()
            await driver.detach_volume(sid, vid)
            detach_ms.append((time.monotonic() - t0) * 1000)
            await plug.done(vid)
            await backend.delete(vid)
        # Throughput on one more attached volume.
        vid = str(uuid.uuid4())
        await backend.create(vid, 1)
        await driver.attach_volume(sid, await plug.disk(backend, vid))
        await wait_visible(driver, sid, vid)
        names = "for d in /sys/block/vd*; do echo ${d##*/} $(cat $d/serial 2>/dev/null); done"
        listing = await in_guest(driver, sid, names)
        device = next(line.split()[0] for line in listing.splitlines() if vid[:20] in line)
        timing = "a=$(cut -d' ' -f1 /proc/uptime); {dd} 2>&1; echo rc=$?; b=$(cut -d' ' -f1 /proc/uptime); echo T $a $b"
        write_s, write_out = uptimes(await in_guest(driver, sid, timing.format(
            dd=f"dd if=/dev/zero of=/dev/{device} bs=1M count={size_mib} conv=fsync"), timeout=900.0))
        await in_guest(driver, sid, "sync; echo 3 > /proc/sys/vm/drop_caches")
        read_s, read_out = uptimes(await in_guest(driver, sid, timing.format(
            dd=f"dd if=/dev/{device} of=/dev/null bs=1M count={size_mib}"), timeout=900.0))
        await driver.detach_volume(sid, vid)
        await plug.done(vid)
        await backend.delete(vid)
        # The raw backing store: the same file system as the backend root, page cache bypassed.
        raw_dir.mkdir(parents=True, exist_ok=True)
        raw = raw_dir / "raw.bin"
        raw_write_s = host_dd(["if=/dev/zero", f"of={raw}", "bs=1M", f"count={size_mib}", "oflag=direct"])
        raw_read_s = host_dd([f"if={raw}", "of=/dev/null", "bs=1M", f"count={size_mib}", "iflag=direct"])
        raw.unlink()
        await driver.destroy(sid)
    finally:
        await driver.destroy(sid)
        tree = cgroups.detect()
        if tree is not None:
            tree.remove_if_unused(parent)
    rates = {"guest_write_mib_per_s": size_mib / write_s, "guest_read_mib_per_s": size_mib / read_s,
             "host_raw_write_mib_per_s": size_mib / raw_write_s, "host_raw_read_mib_per_s": size_mib / raw_read_s}
    return {
        "path": over, "accel": "tcg", "guest_memory_mib": 256, "disk_cache": QemuConfig().disk_cache,
        "boot_to_shell_ms": round(boot_to_shell_ms, 1),
        "attach_to_visible_ms": summary(attach_ms), "target_ms": 2000,
        "detach_ms": summary(detach_ms),
        "size_mib": size_mib,
        **{k: round(v, 1) for k, v in rates.items()},
        "guest_to_raw_write": round(rates["guest_write_mib_per_s"] / rates["host_raw_write_mib_per_s"], 3),
        "guest_to_raw_read": round(rates["guest_read_mib_per_s"] / rates["host_raw_read_mib_per_s"], 3),
        "guest_dd_output": {"write": write_out, "read": read_out},
        "note": "the guest runs under TCG (no KVM): its I/O rates and the guest/raw ratios are dominated by "
                "CPU emulation, not by the storage path",
    }


async def bench_rbd(args: argparse.Namespace, work: Path, image: Path | None) -> dict[str, Any]:
    """The same on the ``rbd`` backend, against a throw-away single-node cluster (``scripts/ceph-lab``:
    one mon, one bluestore OSD on a sparse file in /tmp, so the raw store is that file system)."""
    home = Path(tempfile.mkdtemp(prefix="yun-ceph-bench-", dir="/tmp"))
    lab = ROOT / "scripts" / "ceph-lab"
    try:
        out = subprocess.run([str(lab), "start", str(home)], check=True, capture_output=True, text=True,
                             timeout=300).stdout
        env = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("CEPH_"))
        conf, pool, user = env["CEPH_CONF"], env["CEPH_POOL"], env["CEPH_USER"]
        backend = RbdBackend(pool, conf=conf, user=user)

        def used() -> int:
            listing = subprocess.run(["rbd", "--conf", conf, "--id", user, "du", "--format", "json", "-p", pool],
                                     check=True, capture_output=True, text=True, timeout=120).stdout
            # Every image and snapshot: an imported image's data sits in its protected base snapshot.
            return int(sum(i["used_size"] for i in json.loads(listing)["images"]))

        result: dict[str, Any] = {"backend_rbd": await bench_backend(work, args.repeat, backend, used)}
        if image is not None:
            result["guest_rbd"] = await bench_guest(work, image, args.attaches, args.size_mib, over="rbd",
                                                    backend=backend, raw_dir=home / "raw")
        return result
    finally:
        subprocess.run([str(lab), "stop", str(home)], capture_output=True, timeout=120)


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": await bench_backend(work, args.repeat)}
    image = None
    if not args.skip_guest:
        if args.image:
            image = Path(args.image)
        else:
            from yunstack.image.tiny.build import build_tiny_image
            image = build_tiny_image(work / "tiny-image")
        result["guest"] = await bench_guest(work, image, args.attaches, args.size_mib)
        result["guest_nbd"] = await bench_guest(work, image, args.attaches, args.size_mib, over="nbd")
    if args.rbd:
        result.update(await bench_rbd(args, work, None if args.skip_guest else image))
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10, help="backend operations timed per kind")
    ap.add_argument("--attaches", type=int, default=5, help="attach/detach cycles in the guest")
    ap.add_argument("--size-mib", type=int, default=256, help="MiB written and read by the throughput runs")
    ap.add_argument("--skip-guest", action="store_true")
    ap.add_argument("--rbd", action="store_true", help="also the rbd backend, on a scripts/ceph-lab cluster")
    ap.add_argument("--image", default=None, help="a bootable qcow2 (default: build the tiny image)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/volumes.json"))
    args = ap.parse_args()
    result: dict[str, Any] = {
        "benchmark": "volumes",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"bench/volumes.py --repeat {args.repeat} --attaches {args.attaches} --size-mib {args.size_mib}"
                   + (" --skip-guest" if args.skip_guest else "") + (" --rbd" if args.rbd else ""),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kvm": os.access("/dev/kvm", os.W_OK),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
    }
    work = Path(tempfile.mkdtemp(prefix="ysv-", dir="/tmp"))
    try:
        result.update(asyncio.run(run(args, work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
