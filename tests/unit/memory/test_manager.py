"""The manager's loop runs on the FakeDriver with fake /proc, KSM and cgroup trees: no host state is touched."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from yunstack.cgroups import MemoryCgroups
from yunstack.compute.driver import InstanceSpec, MemoryBacking, root_disk
from yunstack.compute.fake import FakeDriver
from yunstack.memory.collectors import HostCollector
from yunstack.memory.controllers import CgroupControl, KsmClaims, KsmControl
from yunstack.memory.manager import MemoryManager
from yunstack.memory.model import MIB, CgroupSetting, GuestPolicy, KsmSettings, MemoryConfig, PressureLevel, Tuning

FIXTURES = Path(__file__).parent / "fixtures"


def _ksm_dir(tmp_path: Path) -> Path:
    ksm = tmp_path / "ksm"
    shutil.copytree(FIXTURES / "ksm", ksm)
    return ksm


def _manager(tmp_path: Path, driver: FakeDriver, tuning: Tuning, available_kb: int | None = None) -> MemoryManager:
    proc = tmp_path / "proc"
    (proc / "pressure").mkdir(parents=True)
    meminfo = (FIXTURES / "meminfo").read_text()
    if available_kb is not None:
        meminfo = meminfo.replace("MemAvailable:   21893644 kB", f"MemAvailable: {available_kb} kB")
    (proc / "meminfo").write_text(meminfo)
    shutil.copy(FIXTURES / "pressure_memory", proc / "pressure" / "memory")
    ksm_dir = _ksm_dir(tmp_path)
    return MemoryManager(driver, MemoryConfig(cgroup_parent=""), tuning=tuning, detect_cgroups=False,
                         host_collector=HostCollector(proc=proc, ksm_dir=ksm_dir), ksm=KsmControl(ksm_dir), proc=proc)


async def _spawn(driver: FakeDriver, iid: str, mib: int = 256) -> None:
    await driver.spawn(InstanceSpec(id=iid, name=iid, hostname=iid, vcpus=1, memory_mib=mib,
                                    disks=root_disk(Path("/x"))))


async def test_ticks_balloon_guests_and_keep_a_ledger(tmp_path: Path) -> None:
    driver = FakeDriver()
    await _spawn(driver, "a")
    await _spawn(driver, "b")
    manager = _manager(tmp_path, driver, Tuning(), available_kb=2 * 1024 * 1024)  # 8 % free: BALLOON
    manager.set_policy("b", GuestPolicy(page_sharing=False))
    for _ in range(3):
        entry = await manager.tick()
    assert entry.level == PressureLevel.BALLOON
    assert (await driver.balloon_stats("a"))["actual"] < 256 * MIB
    assert [g.instance_id for g in entry.guests] == ["a", "b"]
    a, b = entry.guests
    assert a.shared > 0 and b.shared == 0  # proportional: the fake has no ksm_stat; b opted out
    assert entry.host.shared_method == "proportional-rss"
    assert entry.host.committed == 512 * MIB and entry.host.consolidation_ratio > 1.0
    assert entry.manager.cpu_seconds >= 0 and entry.manager.rss_bytes > 0
    assert len(manager.ledger()) == 3 and manager.latest() is entry
    assert entry.as_dict()["level"] == "balloon"
    assert manager.memory_backing("b") == MemoryBacking(page_sharing=False, thp=False)
    # KSM knobs were written to our fake sysfs, and are restored on close
    assert (tmp_path / "ksm" / "sleep_millisecs").read_text().strip() == "20"
    (tmp_path / "ksm" / "pages_to_scan").write_text("999")
    await manager.close()
    assert (tmp_path / "ksm" / "pages_to_scan").read_text() == "1250"


async def test_memory_template_clones_are_counted_once_in_the_ledger(tmp_path: Path) -> None:
    driver = FakeDriver()
    await _spawn(driver, "booted")
    for iid in ("c1", "c2"):
        await driver.spawn(InstanceSpec(id=iid, name=iid, hostname=iid, vcpus=1, memory_mib=256,
                                        disks=root_disk(Path("/x")), memory=MemoryBacking(template=True)))
    manager = _manager(tmp_path, driver, Tuning(), available_kb=2 * 1024 * 1024)  # 8 % free: BALLOON
    for iid in ("c1", "c2"):  # the clones' QEMU: 176 MiB resident, 156.25 MiB of it anonymous (their own)
        pid_dir = tmp_path / "proc" / str((await driver.get_info(iid)).pid)
        pid_dir.mkdir()
        (pid_dir / "cmdline").write_bytes(f"qemu-system-x86_64\0-name\0guest={iid},debug-threads=on\0".encode())
        shutil.copy(FIXTURES / "smaps_rollup", pid_dir / "smaps_rollup")
    entry = await manager.tick()
    rows = {g.instance_id: g for g in entry.guests}
    [key] = {rows["c1"].template, rows["c2"].template}
    assert key is not None and rows["booted"].template is None and rows["booted"].template_shared is None
    assert rows["c1"].template_shared == (180224 - 160000) * 1024
    [line] = entry.host.templates
    assert (line.key, line.resident, line.clones) == (key, 128 * MIB, 2)
    assert entry.host.templates_resident == 128 * MIB
    # each clone's share of the template leaves its RSS; the template's page cache is counted once
    host = entry.host
    assert host.guests_used == host.guests_resident - host.savings_ksm + 128 * MIB - 2 * (180224 - 160000) * 1024
    # the policy left the clones' balloons alone and said why
    assert (await driver.balloon_stats("c1"))["actual"] == 256 * MIB
    assert (await driver.balloon_stats("booted"))["actual"] < 256 * MIB
    assert any(r.startswith("c1: balloon held at 256 MiB: started from a memory template") for r in entry.reasons)
    assert list(entry.as_dict()["host"]["templates"]) == [{"key": key, "resident": 128 * MIB, "clones": 2}]


async def test_run_stops_on_the_event_and_cleans_up(tmp_path: Path) -> None:
    driver = FakeDriver()
    await _spawn(driver, "a")
    manager = _manager(tmp_path, driver, Tuning(period=0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(manager.ledger()) >= 3
    assert not manager.ledger(since=manager.ledger()[-1].wall_time)


def test_cgroup_v1_limits_are_written_in_a_safe_order(tmp_path: Path) -> None:
    leaf = tmp_path / "yunstack" / "vm1"
    leaf.mkdir(parents=True)
    (leaf / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (leaf / "memory.memsw.limit_in_bytes").write_text("9223372036854771712\n")
    control = CgroupControl(MemoryCgroups(tmp_path, 1), "yunstack")
    assert control.apply("vm1", CgroupSetting(limit=128 * MIB, soft_limit=100 * MIB, swappiness=100))
    assert (leaf / "memory.limit_in_bytes").read_text() == str(128 * MIB)
    assert (leaf / "memory.memsw.limit_in_bytes").read_text() == "-1"  # swap allowed
    assert (leaf / "memory.soft_limit_in_bytes").read_text() == str(100 * MIB)
    assert (leaf / "memory.swappiness").read_text() == "100"
    assert not control.apply("vm1", CgroupSetting(limit=128 * MIB, soft_limit=100 * MIB, swappiness=100))
    assert not control.apply("gone", CgroupSetting())


def test_ksm_control_writes_only_changes_and_restores(tmp_path: Path) -> None:
    control = KsmControl(_ksm_dir(tmp_path))
    assert control.apply(KsmSettings(run=1, pages_to_scan=100, sleep_millisecs=50))
    assert not control.apply(KsmSettings(run=1, pages_to_scan=100, sleep_millisecs=50))
    control.restore()
    assert [(tmp_path / "ksm" / k).read_text().strip() for k in ("run", "pages_to_scan", "sleep_millisecs")] == [
        "1", "1250", "20"]


def test_ksm_control_reads_back_and_reapplies_a_foreign_change(tmp_path: Path) -> None:
    control = KsmControl(_ksm_dir(tmp_path))
    wanted = KsmSettings(run=1, pages_to_scan=100, sleep_millisecs=50)
    assert control.apply(wanted) and control.foreign == []
    (tmp_path / "ksm" / "run").write_text("0\n")  # another session stops KSM
    (tmp_path / "ksm" / "pages_to_scan").write_text("190\n")
    assert control.apply(wanted)
    assert (tmp_path / "ksm" / "run").read_text().strip() == "1"
    assert (tmp_path / "ksm" / "pages_to_scan").read_text().strip() == "100"
    assert sorted(control.foreign) == ["KSM pages_to_scan was changed from 100 to 190 by another process",
                                       "KSM run was changed from 1 to 0 by another process"]
    assert not control.apply(wanted) and control.foreign == []


def _knobs(ksm: Path) -> dict[str, str]:
    return {k: (ksm / k).read_text().strip() for k in ("run", "pages_to_scan", "sleep_millisecs")}


@pytest.mark.parametrize("first_out", ["first", "second"])
def test_two_managers_on_one_machine_leave_ksm_as_the_machine_had_it(tmp_path: Path, first_out: str) -> None:
    # The lab's hosts share one KSM. The second manager starts after the first has turned KSM on; were
    # "the original" each one's own snapshot, the second would restore run=1 whenever it stopped last.
    ksm = _ksm_dir(tmp_path)
    (ksm / "run").write_text("0\n")
    machine = _knobs(ksm)
    first, second = KsmControl(ksm), KsmControl(ksm)
    first.snapshot()
    first.apply(KsmSettings(run=1, pages_to_scan=312, sleep_millisecs=20))
    assert second.snapshot() == machine  # not the first manager's run=1
    second.apply(KsmSettings(run=1, pages_to_scan=500, sleep_millisecs=20))
    leaving, last = (first, second) if first_out == "first" else (second, first)
    leaving.restore()
    assert _knobs(ksm)["run"] == "1"  # the other one still uses KSM: left alone
    last.restore()
    assert _knobs(ksm) == machine
    assert not (tmp_path / ".ksm-claims.json").exists()


def test_a_manager_that_died_holding_ksm_does_not_make_its_values_the_machines(tmp_path: Path) -> None:
    ksm = _ksm_dir(tmp_path)
    (ksm / "run").write_text("0\n")
    machine = _knobs(ksm)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    claims = tmp_path / ".ksm-claims.json"
    # It joined, turned KSM on and was killed before it could leave.
    claims.write_text(json.dumps({"original": machine, "holders": [f"{dead}:123:abcd"]}))
    (ksm / "run").write_text("1\n")
    (ksm / "pages_to_scan").write_text("312\n")
    # A recycled PID is not the holder either: same PID, another start time.
    reused = f"{os.getpid()}:1:ffff"
    claims.write_text(json.dumps({"original": machine, "holders": [f"{dead}:123:abcd", reused]}))
    control = KsmControl(ksm)
    assert control.snapshot() == machine
    assert len(json.loads(claims.read_text())["holders"]) == 1  # the two stale ones dropped
    control.restore()
    assert _knobs(ksm) == machine and not claims.exists()


def test_the_last_holder_restores_ksm_even_if_the_shared_record_was_removed(tmp_path: Path) -> None:
    ksm = _ksm_dir(tmp_path)
    (ksm / "run").write_text("0\n")
    machine = _knobs(ksm)
    control = KsmControl(ksm)
    control.apply(KsmSettings(run=1, pages_to_scan=312, sleep_millisecs=20))
    (tmp_path / ".ksm-claims.json").unlink()  # someone cleaned /run/yunstack while we held KSM
    control.restore()
    assert _knobs(ksm) == machine


def test_a_joining_holder_reads_and_a_leaving_one_restores_under_the_lock(tmp_path: Path) -> None:
    # Otherwise a manager starting while the last one stops can read the knobs before they are put
    # back, record them as the machine's, and leave KSM running when it stops in turn.
    claims = KsmClaims(tmp_path / "claims.json")
    locked: list[bool] = []

    def held() -> bool:
        with open(tmp_path / "claims.json.lock", "a") as other:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(other, fcntl.LOCK_UN)
            return False

    token, _ = claims.join(lambda: locked.append(held()) or {"run": "0"})
    assert claims.leave(token, lambda values: locked.append(held()), {"run": "0"})
    assert locked == [True, True]


async def test_a_foreign_ksm_change_is_in_the_ledger_reasons(tmp_path: Path) -> None:
    driver = FakeDriver()
    await _spawn(driver, "a")
    manager = _manager(tmp_path, driver, Tuning(ksm_mode="always"))
    await manager.tick()
    (tmp_path / "ksm" / "run").write_text("0\n")
    entry = await manager.tick()
    assert any("KSM run was changed from 1 to 0 by another process; re-applied" in r for r in entry.reasons)
    assert (tmp_path / "ksm" / "run").read_text().strip() == "1"
    await manager.close()


async def test_room_for_a_new_guest_is_claimed_before_it_starts(tmp_path: Path) -> None:
    driver = FakeDriver()
    await _spawn(driver, "a")
    # MemTotal ~24 GiB: plenty free, the room is there at once and nothing is reclaimed
    roomy = _manager(tmp_path / "roomy", driver, Tuning(period=0.05))
    await roomy.tick()
    async with roomy.room_for(256 * MIB, timeout=5.0) as made:
        assert made
    # 1.2 GiB free (5.0 %, BALLOON): a guest expected at 256 MiB (the largest here) would leave less than
    # the 5 % reserve, and counted as used it takes the host to SWAP (3.9 %)
    tight = _manager(tmp_path / "tight", driver, Tuning(period=0.05), available_kb=1200 * 1024)
    before = await tight.tick()
    stop = asyncio.Event()
    task = asyncio.create_task(tight.run(stop))
    try:
        async with tight.room_for(256 * MIB, timeout=0.4) as made:
            claimed = tight.latest()
        assert not made  # this fake host's free memory never grows, so the room never comes
        assert claimed is not None and claimed.level > before.level  # the claim counted as used
        assert (await driver.balloon_stats("a"))["actual"] < 256 * MIB  # and the policy reclaimed for it
        assert tight._pending == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
