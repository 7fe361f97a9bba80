"""Live migration benchmark at the driver level: one idle guest moved between two "hosts".

    .venv/bin/python bench/migration.py [--moves 10] [--memory 256] [--image PATH]

Two ``QemuDriver`` objects with their own instance directories on this machine (no control plane)
move one idle tiny-image guest (``--memory`` MiB, TCG) back and forth ``--moves`` times in paused
mode, each move the four driver steps: ``prepare_incoming`` on the destination, ``send`` on the
source, ``finish_incoming`` on the destination, ``finish_outgoing`` on the source.  A ticker in
the guest prints its uptime every second; the run checks that it keeps counting (no reboot).

- ``total_ms``: prepare_incoming called -> finish_outgoing returned (the whole move);
- ``downtime_ms``: the guest stops on the source -> ``finish_incoming`` returned (it runs again);
- ``send_ms`` and ``qemu_downtime_ms``: what ``send`` measured (stop -> the state is on the
  destination, disks included);
- ``prepare_incoming_ms``, ``send_call_ms``, ``finish_incoming_ms``, ``finish_outgoing_ms``: each
  driver step's wall time, which add up to ``total_ms``.

Prints and writes JSON (bench/results/migration.json).  Not a test: it reports.  Target: total
≤ 1.5 s for 256 MiB in TCG paused mode.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from yunstack import cgroups
from yunstack.compute.driver import ConfigDrive, InstanceSpec, MigrationMode, root_disk
from yunstack.compute.qemu.driver import QemuDriver
from yunstack.config import Config, QemuConfig, ServerConfig

ROOT = Path(__file__).resolve().parents[1]
TICKER = (b"#!/bin/sh\n"
          b"(while :; do echo \"TICK $(cut -d' ' -f1 /proc/uptime)\" > /dev/console; sleep 1; done)"
          b" < /dev/null > /dev/null 2>&1 &\n")
TICK = re.compile(r"TICK (\d+\.\d+)")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 1)

    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1), "p95": pct(0.95),
            "min": round(ordered[0], 1), "max": round(ordered[-1], 1)}


def free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


async def wait_for(driver: QemuDriver, instance_id: str, pattern: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        console = await driver.console_output(instance_id)
        if re.search(pattern, console):
            return console
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{pattern!r} did not appear on {instance_id}'s console within {timeout}s")


async def last_tick(driver: QemuDriver, instance_id: str) -> float:
    return max((float(t) for t in TICK.findall(await driver.console_output(instance_id))), default=0.0)


async def run(image: Path, moves: int, memory_mib: int) -> dict[str, Any]:
    roots = [Path(tempfile.mkdtemp(prefix="ysm-", dir="/tmp")) for _ in range(2)]
    # Two hosts: each its own cgroup parent, as on two machines (one shared cgroup for the guest on
    # both sides would keep the source from removing its copy's).
    parents = [f"yunstack/bench-{r.name}" for r in roots]
    drivers = [QemuDriver(Config(server=ServerConfig(state_dir=str(r)), qemu=QemuConfig(accel="tcg")),
                          cgroup_parent=parent) for r, parent in zip(roots, parents, strict=True)]
    sid = str(uuid.uuid4())
    spec = InstanceSpec(id=sid, name="mig", hostname="mig", vcpus=1, memory_mib=memory_mib,
                        disks=root_disk(image, "qcow2", 1),
                        config_drive=ConfigDrive(meta_data={"uuid": sid, "hostname": "mig"}, user_data=TICKER))
    rows: dict[str, list[float]] = {"total_ms": [], "downtime_ms": [], "send_ms": [], "qemu_downtime_ms": [],
                                    "prepare_incoming_ms": [], "send_call_ms": [], "finish_incoming_ms": [],
                                    "finish_outgoing_ms": []}
    memory_bytes: list[int] = []
    ticks_continued = True
    try:
        for driver in drivers:
            await driver.init_host()
        await drivers[0].spawn(spec)
        await wait_for(drivers[0], sid, r"YUNSTACK-READY")
        await wait_for(drivers[0], sid, r"TICK \d")
        await asyncio.sleep(2.0)  # let the guest settle to idle
        for move in range(moves):
            source, destination = drivers[move % 2], drivers[(move + 1) % 2]
            before = await last_tick(source, sid)
            t0 = time.monotonic()
            target = await destination.prepare_incoming(spec, "127.0.0.1", free_port_pair())
            t_send = time.monotonic()
            stats = await source.send(sid, target, MigrationMode.PAUSED)
            t_sent = time.monotonic()
            await destination.finish_incoming(sid)
            t_running = time.monotonic()
            await source.finish_outgoing(sid)
            t_done = time.monotonic()
            rows["total_ms"].append((t_done - t0) * 1000)
            rows["prepare_incoming_ms"].append((t_send - t0) * 1000)
            rows["send_call_ms"].append((t_sent - t_send) * 1000)
            rows["finish_incoming_ms"].append((t_running - t_sent) * 1000)
            rows["finish_outgoing_ms"].append((t_done - t_running) * 1000)
            rows["downtime_ms"].append((t_running - t_send) * 1000)
            rows["send_ms"].append(stats.total_ms)
            rows["qemu_downtime_ms"].append(stats.downtime_ms)
            memory_bytes.append(stats.memory_bytes)
            # The guest's own clock goes on from where it was on the source: it was not rebooted.
            await wait_for(destination, sid, r"TICK \d", timeout=30.0)
            deadline = time.monotonic() + 30.0
            while (after := await last_tick(destination, sid)) <= before and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            ticks_continued &= before < after < before + 30
            if "YUNSTACK-READY" in await destination.console_output(sid):
                ticks_continued = False  # a boot marker on the destination would mean a reboot
        await drivers[moves % 2].destroy(sid)
    finally:
        for driver in drivers:
            await driver.destroy(sid)
        for r in roots:
            shutil.rmtree(r, ignore_errors=True)
        tree = cgroups.detect()
        for parent in parents if tree is not None else ():
            tree.remove_if_unused(parent)
    return {**{k: summary(v) for k, v in rows.items()},
            "memory_transferred_mib": summary([b / (1 << 20) for b in memory_bytes]),
            "guest_kept_running": ticks_continued}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moves", type=int, default=10)
    ap.add_argument("--memory", type=int, default=256, help="guest RAM, MiB")
    ap.add_argument("--image", default=None, help="a bootable qcow2 (default: build the tiny image)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/migration.json"))
    args = ap.parse_args()
    if args.image:
        image = Path(args.image)
    else:
        from yunstack.image.tiny.build import build_tiny_image
        image = build_tiny_image(Path(tempfile.gettempdir()) / "ys-bench-image")
    load_start = [round(x, 2) for x in os.getloadavg()]
    result: dict[str, Any] = {
        "benchmark": "migration",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"bench/migration.py --moves {args.moves} --memory {args.memory}",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kvm": os.access("/dev/kvm", os.W_OK), "load_average_at_start": load_start},
        "mode": "paused", "accel": "tcg", "memory_mib": args.memory,
    }
    result["moves"] = asyncio.run(run(image, args.moves, args.memory))
    result["target_total_ms"] = 1500
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
