"""The memory manager on real QEMU (TCG) guests: balloon, deflate under pressure, KSM, cgroup + host swap.

Every test cleans up what it changed on this shared host: QEMU processes (by PID), its own cgroup
parent, the KSM knobs (saved before, restored after) and the swapfile (swapoff + rm).
Numbers are printed (``-s``) for docs/explanation/memory.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from yunstack.cgroups import detect, leaf_name
from yunstack.compute.driver import ConfigDrive, InstanceSpec, MemoryBacking, root_disk
from yunstack.compute.qemu.driver import QemuDriver
from yunstack.config import Config, QemuConfig, ServerConfig
from yunstack.memory.collectors import read_ksm
from yunstack.memory.controllers import SwapControl
from yunstack.memory.manager import MemoryManager, memory_backing
from yunstack.memory.model import MIB, GuestPolicy, MemoryConfig, PressureLevel, Tuning

pytestmark = pytest.mark.integration

KSM = Path("/sys/kernel/mm/ksm")
KNOBS = ("run", "pages_to_scan", "sleep_millisecs")


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from yunstack.image.tiny import build_tiny_image

    return build_tiny_image(tmp_path_factory.mktemp("tiny-image"))


@dataclass
class Env:
    driver: QemuDriver
    root: Path
    parent: str
    image: Path

    def spec(self, mib: int, user_data: str, memory: MemoryBacking | None = None) -> InstanceSpec:
        iid = str(uuid.uuid4())
        return InstanceSpec(
            id=iid, name="m", hostname="m", vcpus=1, memory_mib=mib, disks=root_disk(self.image, size_gib=1),
            config_drive=ConfigDrive(meta_data={"uuid": iid, "hostname": "m"}, user_data=user_data.encode()),
            memory=memory or MemoryBacking())

    async def wait_console(self, iid: str, pattern: str, timeout: float = 60.0, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while True:
            console = await self.driver.console_output(iid)
            if len(re.findall(pattern, console)) >= count:
                return console
            if time.monotonic() > deadline:
                tail = "\n".join(console.splitlines()[-20:])
                raise AssertionError(f"no {pattern!r} x{count} within {timeout}s; console tail:\n{tail}")
            await asyncio.sleep(0.25)

    async def wait_stats(self, iid: str, timeout: float = 20.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            raw = await self.driver.balloon_stats(iid)
            stats = raw["stats"]
            if stats.get("stat-available-memory", 2**64 - 1) < 2**64 - 1:
                return {"actual": raw["actual"], **stats}
            assert time.monotonic() < deadline, f"no balloon stats from {iid}: {raw}"
            await asyncio.sleep(0.5)


@pytest.fixture
def env(tiny_image: Path) -> Iterator[Env]:
    cgroups = detect()
    assert cgroups is not None, "a writable memory cgroup hierarchy is required"
    root = Path(tempfile.mkdtemp(prefix="ys-m-", dir="/tmp"))
    parent = f"ys-memtest-{uuid.uuid4().hex[:8]}"
    config = Config(server=ServerConfig(state_dir=str(root)), qemu=QemuConfig(accel="tcg", stop_timeout=5.0))
    try:
        yield Env(QemuDriver(config, cgroup_parent=parent), root, parent, tiny_image)
    finally:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"qemu-system" in cmd and str(root).encode() in cmd:
                    os.kill(int(entry.name), signal.SIGKILL)
        time.sleep(0.3)
        parent_dir = cgroups.path(parent)
        if parent_dir.exists():
            for leaf in parent_dir.iterdir():
                if leaf.is_dir():
                    cgroups.remove(f"{parent}/{leaf.name}", timeout=5.0)
            cgroups.remove(parent, timeout=5.0)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ksm_guard() -> Iterator[dict[str, str]]:
    saved = {k: (KSM / k).read_text().strip() for k in KNOBS}
    try:
        yield saved
    finally:
        for knob in ("pages_to_scan", "sleep_millisecs", "run"):
            (KSM / knob).write_text(saved[knob])


@pytest.fixture
async def running() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _smaps_huge(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) * 1024
    return 0


async def test_a_balloon_target_lowers_guest_memory_and_qemu_rss(env: Env) -> None:
    # Free page reporting already returns the guest's free pages, so what a balloon frees on the host is
    # what the guest had in use and can drop (caches, slab): the RSS drop is modest but real.
    spec = env.spec(256, "#!/bin/sh\ncat /dev/vda > /dev/null\n")
    await env.driver.spawn(spec)
    await env.wait_console(spec.id, r"YUNSTACK-READY", 90)
    before = await env.wait_stats(spec.id)
    await asyncio.sleep(2.5)  # a fresh stats sample after the cache filled
    before = await env.wait_stats(spec.id)
    rss_before = await env.driver.rss_bytes(spec.id)
    await env.driver.set_balloon_target(spec.id, 96 * MIB)
    deadline = time.monotonic() + 20
    while True:
        await asyncio.sleep(1.0)
        after = await env.wait_stats(spec.id)
        rss_after = await env.driver.rss_bytes(spec.id)
        fresh = after["stat-available-memory"] < before["stat-available-memory"]
        if after["actual"] <= 97 * MIB and rss_before - rss_after >= 8 * MIB and fresh:
            break
        if time.monotonic() > deadline:
            tail = (await env.driver.console_output(spec.id)).splitlines()[-8:]
            raise AssertionError(f"{before} {after} {rss_before} {rss_after} {tail}")
    print(f"\n[balloon] actual {before['actual'] >> 20} -> {after['actual'] >> 20} MiB; "
          f"guest available {before['stat-available-memory'] >> 20} -> {after['stat-available-memory'] >> 20} MiB; "
          f"disk caches {before['stat-disk-caches'] >> 20} -> {after['stat-disk-caches'] >> 20} MiB; "
          f"QEMU RSS {rss_before >> 20} -> {rss_after >> 20} MiB")
    assert after["stat-available-memory"] < before["stat-available-memory"]
    cg = detect()
    assert cg is not None and (await env.driver.get_info(spec.id)).pid in cg.pids(leaf_name(env.parent, spec.id))
    await env.driver.destroy(spec.id)
    assert not cg.exists(leaf_name(env.parent, spec.id))


async def test_the_manager_deflates_a_guest_under_pressure(env: Env, running: list[asyncio.Task[None]]) -> None:
    spec = env.spec(256, "#!/bin/sh\n(sleep 25; memload --mib 150 --pattern seeded --touch-mib-per-s 50) &\n")
    await env.driver.spawn(spec)
    await env.wait_console(spec.id, r"YUNSTACK-READY", 90)
    await env.wait_stats(spec.id)
    # A host that wants all its memory back: guests go to their floors (working set + headroom).
    tuning = Tuning(period=1.0, force_level=PressureLevel.BALLOON, target_free_fraction=1.0, ksm_mode="never")
    manager = MemoryManager(env.driver, MemoryConfig(cgroup_parent=env.parent, ksm_mode="never"), tuning=tuning)
    stop = asyncio.Event()
    running.append(asyncio.create_task(manager.run(stop)))
    deadline = time.monotonic() + 30
    while (await env.driver.balloon_stats(spec.id))["actual"] > 112 * MIB:
        assert time.monotonic() < deadline, "the manager did not inflate the balloon"
        await asyncio.sleep(0.5)
    low = (await env.driver.balloon_stats(spec.id))["actual"]
    began = time.monotonic()
    await env.wait_console(spec.id, r"MEMLOAD-FILLED", 120)  # 27 s on a quiet host; CI's loaded run needed more than 60
    filled = time.monotonic() - began
    console = await env.wait_console(spec.id, r"MEMLOAD mib=150", 30, count=3)
    stop.set()
    await asyncio.wait_for(running[0], 10)
    high = (await env.driver.balloon_stats(spec.id))["actual"]
    pressured = [e for e in manager.ledger() if e.guests and e.guests[0].pressured]
    reasons = {r.split(": ", 1)[1] for e in manager.ledger() for r in e.reasons if "fast deflate" in r}
    # memload touches 50 MiB/s: QEMU's page sampling sees the guest dirtying memory.
    rates = [e.guests[0].dirty_rate for e in manager.ledger() if e.guests and e.guests[0].dirty_rate is not None]
    print(f"\n[deflate] ballooned to {low >> 20} MiB; memload 150 MiB filled after {filled:.1f}s; "
          f"balloon now {high >> 20} MiB; reasons {sorted(reasons)}; dirty rate up to "
          f"{max(rates, default=0) >> 20} MiB/s in {len(rates)} windows")
    assert rates and max(rates) > 0, "no dirty rate measured while memload wrote"
    assert high >= 150 * MIB
    assert pressured, "the manager never saw the guest under pressure"
    assert "Out of memory" not in console and "oom-kill" not in console


# Waits until its balloon has taken memory (MemFree under 48 MiB: the balloon's pages count as used
# with deflate-on-oom), then fills a working set at once and keeps touching it.
GROW_WHEN_BALLOONED = """#!/bin/sh
(while :; do while read -r key kib _; do [ "$key" = MemFree: ] && break; done < /proc/meminfo
  [ $((kib / 1024)) -lt 48 ] && break; sleep 0.2; done
 echo "BALLOONED free=$((kib / 1024))" > /dev/console
 memload --mib {mib} --pattern random --seed 3 --touch-mib-per-s 10 --report-every 5 > /dev/console 2>&1) &
"""


async def test_a_ballooned_guest_that_grows_gets_its_memory_back_by_deflate_on_oom(env: Env) -> None:
    # Nothing on the host deflates it: the guest's own balloon driver gives pages back each time the
    # guest would run out (1 MiB per OOM notification), fast enough for a fill at full speed.  The
    # cluster benchmark's guests rely on this: a host's manager balloons idle guests to their floor.
    spec = env.spec(192, GROW_WHEN_BALLOONED.format(mib=100))
    await env.driver.spawn(spec)
    await env.wait_console(spec.id, r"YUNSTACK-READY", 120)
    await env.wait_stats(spec.id)
    await env.driver.set_balloon_target(spec.id, 96 * MIB)
    # The guest starts memload as soon as it sees the balloon (its own report: reading the balloon
    # from here after that races memload's fill, which deflates it).
    ballooned = re.search(r"BALLOONED free=(\d+)", await env.wait_console(spec.id, r"BALLOONED free=\d+", 60))
    console = await env.wait_console(spec.id, r"MEMLOAD mib=100 ", 90)
    high = (await env.driver.balloon_stats(spec.id))["actual"]
    filled = re.search(r"MEMLOAD-FILLED mib=100 \S+ fill_s=(\S+)", console)
    print(f"\n[deflate-on-oom] ballooned (guest free {ballooned.group(1) if ballooned else '?'} MiB), then memload "
          f"filled 100 MiB in {filled.group(1) if filled else '?'} s; balloon now {high >> 20} MiB (target 96)")
    assert filled is not None
    assert "Out of memory" not in console and "oom-kill" not in console
    # The target stayed at 96 MiB: only the guest's own driver can have given the pages back.
    assert high >= 160 * MIB, "the guest's balloon should have deflated on its own"


async def test_ksm_merges_identical_guests_and_the_ledger_shows_it(
        env: Env, ksm_guard: dict[str, str], running: list[asyncio.Task[None]]) -> None:
    memory = memory_backing(GuestPolicy())  # page sharing allowed -> THP off
    assert memory == MemoryBacking(page_sharing=True, thp=False)
    specs = [env.spec(192, "#!/bin/sh\necho idle\n", memory) for _ in range(2)]
    await asyncio.gather(*(env.driver.spawn(s) for s in specs))
    await asyncio.gather(*(env.wait_console(s.id, r"YUNSTACK-READY", 90) for s in specs))
    # 2 x 192 MiB committed on a 448 MiB budget is overcommitted (> 80 %): the policy runs KSM.
    config = MemoryConfig(cgroup_parent=env.parent, budget_bytes=448 * MIB)
    manager = MemoryManager(env.driver, config, tuning=Tuning(period=1.0))
    stop = asyncio.Event()
    running.append(asyncio.create_task(manager.run(stop)))
    began = time.monotonic()
    shared = 0
    while time.monotonic() - began < 90:
        await asyncio.sleep(2.0)
        entry = manager.latest()
        if entry is not None and entry.guests:
            shared = sum(g.shared for g in entry.guests)
            # KSM boosts on arrival, so the first merges come within seconds; wait for both guests
            if shared >= 32 * MIB and all(g.shared > 0 for g in entry.guests):
                break
    elapsed = time.monotonic() - began
    assert entry is not None
    pids = [(await env.driver.get_info(s.id)).pid for s in specs]
    huge = [_smaps_huge(p) for p in pids if p]
    ksm_now = read_ksm()
    stop.set()
    await asyncio.wait_for(running[0], 10)
    print(f"\n[ksm] after {elapsed:.0f}s: pages_sharing {ksm_now.pages_sharing} ({ksm_now.pages_sharing * 4096 >> 20}"
          f" MiB), ledger shared {shared >> 20} MiB via {entry.host.shared_method}, per VM "
          f"{[g.shared >> 20 for g in entry.guests]} MiB, resident {[g.resident >> 20 for g in entry.guests]} MiB, "
          f"consolidation {entry.host.consolidation_ratio}, AnonHugePages {huge}, "
          f"manager {entry.manager.cpu_seconds * 1000:.1f} ms CPU/tick")
    assert ksm_now.pages_sharing > 0
    assert shared > 0 and all(g.shared > 0 for g in entry.guests)
    assert huge == [0, 0], "THP should be off for guests that share pages"
    assert {k: (KSM / k).read_text().strip() for k in KNOBS} == ksm_guard  # manager.close() restored them


async def test_a_squeezed_vm_swaps_instead_of_being_oom_killed(env: Env) -> None:
    cgroups = detect()
    assert cgroups is not None
    swap = SwapControl(env.root / "swap", 384 * MIB)
    await swap.enable()
    try:
        assert swap.active()
        spec = env.spec(256, "#!/bin/sh\nmemload --mib 160 --pattern seeded --touch-mib-per-s 40 &\n")
        await env.driver.spawn(spec)
        await env.wait_console(spec.id, r"MEMLOAD-FILLED", 90)
        name = leaf_name(env.parent, spec.id)
        usage = cgroups.read(name).usage
        limit = usage - 96 * MIB
        cgroups.set_limits(name, limit=limit, swap_allowed=True, swappiness=100)
        lines = len(re.findall(r"MEMLOAD mib=160", await env.driver.console_output(spec.id)))
        console = await env.wait_console(spec.id, r"MEMLOAD mib=160", 60, count=lines + 5)
        state = cgroups.read(name)
        info = await env.driver.get_info(spec.id)
        last = [line for line in console.splitlines() if line.startswith("MEMLOAD mib")][-1]
        print(f"\n[swap] cgroup usage {usage >> 20} MiB squeezed to {limit >> 20} MiB: now {state.usage >> 20} MiB, "
              f"swap {(state.swap or 0) >> 20} MiB, failcnt {state.failcnt}, oom_kill {state.oom_kill}; {last}")
        assert (state.swap or 0) > 0
        assert state.oom_kill == 0 and info.pid is not None
        await env.driver.destroy(spec.id)
    finally:
        await swap.disable()
    assert not swap.active() and not swap.path.exists()
