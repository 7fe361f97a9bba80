"""The reclaim micro-test (design §9.7 T6, goal G8): ≥ 1 GiB reclaimed from 8 guests in ≤ 10 s, no OOM.

Eight guests hold clean page cache (memload ``--cache-mib``: guest-unique data written to their scratch
disk and fsynced) and a small W1 working set.  The host's copy of those writes (page cache of the
qcow2 overlays, charged to the budget) is dropped with ``posix_fadvise(DONTNEED)`` once the guests are
ready, so the budget holds guest memory only.  Once they are steady, B is set so that 15 % of it is
free: A4's own target, so none of the demand can come out of slack the policy already keeps.  Then a
1 GiB demand is announced the way a scheduler reserves room before it places a VM: the arm sees it
as used (usage + 1 GiB).  The clock runs until the guests' usage has dropped by 1 GiB.  Then the
demand is really allocated inside the budget (a process touching 1 GiB in a leaf of the budget
cgroup) and held for a few seconds: no OOM kill, no QEMU exit and no guest OOM may follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from yunstack.bench.density._fleet import Fleet, Guest
from yunstack.bench.density.arms import Arm
from yunstack.bench.density.budget import Budget
from yunstack.bench.density.runner import Controller, Progress, host_facts, ksmd_cpu_seconds
from yunstack.bench.density.workloads import spike_guest
from yunstack.errors import DriverError
from yunstack.memory.model import MIB

_OCCUPANT = """
import mmap, sys, time
sys.stdin.readline()
n = int(sys.argv[1])
m = mmap.mmap(-1, n)
for i in range(0, n, 4096):
    m[i] = 1
print("touched", flush=True)
time.sleep(float(sys.argv[2]))
"""


async def run_spike(arm: Arm, image: Path, samples_path: Path, *, guests: int = 8, guest_mib: int = 384,
                    cache_mib: int = 256, wss_mib: int = 32, demand: int = 1024 * MIB, timeout_s: float = 60.0,
                    hold_s: float = 5.0, seed: int = 42, free_fraction: float = 0.15,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Run T6 once for ``arm``; returns its record."""
    facts = host_facts()
    ksmd0 = ksmd_cpu_seconds()
    budget = Budget(guests * (guest_mib + cache_mib + 160) * MIB).open()  # + the host's copy of the cache
    fleet = Fleet(image, budget)
    timeline: list[tuple[float, int]] = []
    result: dict[str, Any] = {"arm": arm.name, "title": arm.title, "guests": guests, "guest_mib": guest_mib,
                              "cache_mib": cache_mib, "wss_mib": wss_mib, "demand_mib": demand / MIB}
    with samples_path.open("w") as samples:
        control = Controller(arm, fleet, budget, samples)
        stop = asyncio.Event()
        task = asyncio.create_task(control.run(stop, 0.5))
        try:
            if progress:
                progress(f"spike {arm.name}: booting {guests} guests")
            spawned = [await fleet.spawn(spike_guest(cache_mib, wss_mib, guest_seed=seed * 1000 + i), guest_mib,
                                         arm.memory()) for i in range(guests)]
            ready = await asyncio.gather(*(fleet.wait_ready(g, 240.0) for g in spawned))
            if not all(ready):
                raise DriverError(detail="spike guests did not all boot")
            cached = await _wait_cached(fleet, spawned, 120.0)
            result["guests_cached"] = cached
            await asyncio.sleep(5.0)
            result["host_cache_dropped_mib"] = _drop_host_cache(fleet.root) / MIB
            await asyncio.sleep(10.0)
            steady = budget.read().usage
            budget.set_limit(int(steady / (1.0 - free_fraction)))
            result["free_fraction_before"] = free_fraction
            result["steady_usage_mib"] = steady / MIB
            result["budget_mib"] = budget.limit_bytes / MIB
            await asyncio.sleep(max(2 * arm.period, 4.0))
            oom0 = budget.read().oom_kill
            start_usage = budget.read().usage
            if progress:
                progress(f"spike {arm.name}: 1 GiB demand")
            control.reserve = demand
            t0 = time.monotonic()
            reclaimed_at = None
            while time.monotonic() - t0 < timeout_s:
                reclaimed = start_usage - budget.read().usage
                timeline.append((round(time.monotonic() - t0, 2), reclaimed))
                if reclaimed >= demand:
                    reclaimed_at = time.monotonic() - t0
                    break
                await asyncio.sleep(0.25)
            result["reclaim_s"] = reclaimed_at
            result["reclaimed_mib_at_end"] = timeline[-1][1] / MIB if timeline else 0.0
            result["reclaimed_mib_at_10s"] = max((r for t, r in timeline if t <= 10.0), default=0) / MIB
            result["demand_held"] = await _occupy(budget, demand, hold_s)
            control.reserve = 0
            await asyncio.sleep(1.0)
            reading = budget.read()
            result["oom_kills"] = reading.oom_kill - oom0
            result["qemu_exits"] = len(await fleet.dead())
            result["guest_ooms"] = len(await fleet.guest_ooms())
            result["where_mib"] = {k: v / MIB for k, v in control.where().items()}
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
            await fleet.close()
            budget.close()
    result["timeline"] = [(t, r / MIB) for t, r in timeline]
    result["ok"] = bool(result.get("reclaim_s") is not None and result["reclaim_s"] <= 10.0
                        and result.get("oom_kills") == 0 and result.get("qemu_exits") == 0
                        and result.get("guest_ooms") == 0 and result.get("demand_held"))
    result["cost"] = {"policy_cpu_ms_per_tick": round(1000 * control.tick_cpu / max(control.ticks, 1), 3),
                      "ksmd_cpu_s": round(ksmd_cpu_seconds() - ksmd0, 2)}
    result["noise"] = {"before": facts, "after": host_facts()}
    samples_path.with_suffix(".timeline.json").write_text(json.dumps(result["timeline"]))
    return result


async def _wait_cached(fleet: Fleet, guests: list[Guest], timeout: float) -> int:
    """Wait until every guest printed memload's MEMLOAD-CACHED line; returns how many did."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = 0
        for g in guests:
            done += "MEMLOAD-CACHED" in await fleet.console(g)
        if done == len(guests):
            break
        await asyncio.sleep(1.0)
    return done


def _drop_host_cache(root: Path) -> int:
    """fsync and drop the host page cache of this run's guest disks; returns their size (an upper bound)."""
    total = 0
    for disk in root.rglob("disk.qcow2"):
        with contextlib.suppress(OSError):
            fd = os.open(disk, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return total


async def _occupy(budget: Budget, nbytes: int, hold_s: float) -> bool:
    """Allocate ``nbytes`` inside the budget (leaf ``spike-demand``) for ``hold_s``; True if it survived."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OCCUPANT, str(nbytes), str(hold_s), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        budget.move("spike-demand", proc.pid)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        line = await asyncio.wait_for(proc.stdout.readline(), 60.0)
        code = await asyncio.wait_for(proc.wait(), hold_s + 30.0)
        return line.startswith(b"touched") and code == 0
    except (TimeoutError, DriverError, OSError):
        return False
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
