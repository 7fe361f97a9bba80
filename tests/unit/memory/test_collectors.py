"""Collectors parse /proc, sysfs and cgroup files into frozen snapshots; one bad guest stays alone."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from yunstack.cgroups import MemoryCgroups
from yunstack.compute.driver import InstanceInfo, InstanceSpec, MemoryBacking, PowerState, root_disk
from yunstack.compute.fake import FakeDriver
from yunstack.errors import DriverUnavailable
from yunstack.memory.collectors import (
    GuestCollector,
    HostCollector,
    HostUnreadable,
    balloon_fields,
    parse_keyed,
    parse_meminfo,
    parse_psi,
    read_ksm,
)
from yunstack.memory.manager import swap_rates
from yunstack.memory.model import MIB, HostStats

FIXTURES = Path(__file__).parent / "fixtures"


def test_meminfo_is_read_in_bytes() -> None:
    mem = parse_meminfo((FIXTURES / "meminfo").read_text())
    assert mem["MemTotal"] == 24584412 * 1024
    assert mem["SwapFree"] == 200000 * 1024
    assert mem["HugePages_Total"] == 0  # a count, not kB


def test_psi_avg10_values() -> None:
    assert parse_psi((FIXTURES / "pressure_memory").read_text()) == (12.5, 1.25)


def test_ksm_sysfs_counters() -> None:
    ksm = read_ksm(FIXTURES / "ksm")
    assert (ksm.run, ksm.pages_to_scan, ksm.pages_sharing, ksm.pages_shared, ksm.full_scans) == (
        1, 1250, 25514, 9248, 3)
    assert ksm.general_profit == 101000000
    assert read_ksm(FIXTURES / "nope").available is False


def test_ksm_stat_and_smaps_rollup_parse() -> None:
    ksm = parse_keyed((FIXTURES / "ksm_stat").read_text())
    assert ksm["ksm_merging_pages"] == "20000" and ksm["ksm_mergeable"] == "yes"
    rollup = parse_keyed((FIXTURES / "smaps_rollup").read_text())
    assert rollup["Pss"] == "150112 kB" and rollup["AnonHugePages"] == "122880 kB"


def test_balloon_stats_never_sent_read_as_none() -> None:
    fields = balloon_fields({"actual": 1, "stats": {"stat-free-memory": 5 * MIB, "stat-swap-in": 2**64 - 1}})
    assert fields["guest_free"] == 5 * MIB
    assert fields["swap_in"] is None and fields["guest_total"] is None


def _fake_proc(tmp_path: Path, with_budget: bool = False) -> Path:
    proc = tmp_path / "proc"
    (proc / "pressure").mkdir(parents=True)
    shutil.copy(FIXTURES / "meminfo", proc / "meminfo")
    shutil.copy(FIXTURES / "pressure_memory", proc / "pressure" / "memory")
    shutil.copy(FIXTURES / "pressure_cpu", proc / "pressure" / "cpu")
    shutil.copy(FIXTURES / "vmstat", proc / "vmstat")
    return proc


def test_the_host_collector_builds_one_snapshot(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path)
    cg_root = tmp_path / "cg"
    budget = cg_root / "yunstack"
    budget.mkdir(parents=True)
    for name, value in {"memory.usage_in_bytes": 3 << 30, "memory.limit_in_bytes": 4 << 30,
                        "memory.memsw.usage_in_bytes": 3 << 30, "memory.failcnt": 0}.items():
        (budget / name).write_text(f"{value}\n")
    host = HostCollector(proc=proc, ksm_dir=FIXTURES / "ksm", cgroups=MemoryCgroups(cg_root, 1),
                         budget_cgroup="yunstack", clock=lambda: 42.0).collect()
    assert host.timestamp == 42.0
    assert host.available == 21893644 * 1024 and host.swap_total == 262140 * 1024
    assert host.cached == (3688540 + 266660) * 1024
    assert (host.psi_some_avg10, host.psi_full_avg10, host.cpu_psi_some_avg10) == (12.5, 1.25, 55.0)
    assert host.ksm.pages_sharing == 25514
    assert (host.budget_limit, host.budget_usage) == (4 << 30, 3 << 30)
    assert (host.capacity, host.headroom) == (4 << 30, 1 << 30)
    assert (host.swapped_in, host.swapped_out) == (300 * 4096, 1200 * 4096)  # pages in /proc/vmstat


def test_swap_rates_are_the_counters_growth_per_second() -> None:
    def sample(at: float, swapped_in: int | None, swapped_out: int | None) -> HostStats:
        return HostStats(timestamp=at, total=1, free=1, available=1, swapped_in=swapped_in, swapped_out=swapped_out)

    assert swap_rates(None, sample(10, 0, 0)) == (None, None)  # the first period
    assert swap_rates(sample(10, 100, 4096), sample(12, 100, 3 * 4096)) == (0.0, 4096.0)
    assert swap_rates(sample(10, None, 0), sample(12, 5, 0)) == (None, 0.0)
    assert swap_rates(sample(12, 0, 0), sample(12, 5, 5)) == (None, None)  # no time passed


def test_an_unreadable_host_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(HostUnreadable):
        HostCollector(proc=tmp_path / "missing").collect()


class _Flaky(FakeDriver):
    async def balloon_stats(self, instance_id: str) -> dict[str, Any]:
        if instance_id == "bad":
            raise DriverUnavailable(detail="QMP socket gone")
        return await super().balloon_stats(instance_id)


async def _spawn(driver: FakeDriver, iid: str) -> None:
    await driver.spawn(InstanceSpec(id=iid, name=iid, hostname=iid, vcpus=1, memory_mib=256,
                                    disks=root_disk(Path("/x"))))


async def test_one_failing_guest_does_not_stop_the_others(tmp_path: Path) -> None:
    driver = _Flaky()
    await _spawn(driver, "good")
    await _spawn(driver, "bad")
    stats, errors = await GuestCollector(driver, proc=tmp_path).collect()
    assert [s.instance_id for s in stats] == ["good"]
    assert "QMP socket gone" in errors["bad"]
    assert stats[0].configured == 256 * MIB and stats[0].rss == 256 * MIB  # the fake's RSS: no /proc PID


async def test_a_guest_sample_reads_its_process_and_cgroup(tmp_path: Path) -> None:
    driver = FakeDriver()
    await _spawn(driver, "vm1")
    info = await driver.get_info("vm1")
    pid_dir = tmp_path / "proc" / str(info.pid)
    pid_dir.mkdir(parents=True)
    (pid_dir / "cmdline").write_bytes(b"qemu-system-x86_64\0-name\0guest=vm1,debug-threads=on\0")
    for name in ("smaps_rollup", "status", "ksm_stat"):
        shutil.copy(FIXTURES / name, pid_dir / name)
    leaf = tmp_path / "cg" / "yunstack" / "vm1"
    leaf.mkdir(parents=True)
    for name, value in {"memory.usage_in_bytes": 100 * MIB, "memory.limit_in_bytes": 128 * MIB,
                        "memory.memsw.usage_in_bytes": 150 * MIB, "memory.failcnt": 7}.items():
        (leaf / name).write_text(f"{value}\n")
    (leaf / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    collector = GuestCollector(driver, proc=tmp_path / "proc", cgroups=MemoryCgroups(tmp_path / "cg", 1))
    [g], errors = await collector.collect()
    assert not errors
    assert (g.rss, g.pss, g.swap, g.anon_huge) == (180224 * 1024, 150112 * 1024, 10240 * 1024, 122880 * 1024)
    assert g.anonymous == 160000 * 1024 and g.template is None
    assert g.ksm_merging_pages == 20000 and g.ksm_mergeable is True
    assert (g.cgroup_usage, g.cgroup_limit, g.cgroup_swap, g.cgroup_failcnt, g.cgroup_oom_kill) == (
        100 * MIB, 128 * MIB, 50 * MIB, 7, 0)
    assert g.guest_total == 256 * MIB and g.balloon_actual == 256 * MIB


class _Dirtying(FakeDriver):
    async def balloon_stats(self, instance_id: str) -> dict[str, Any]:
        return {**await super().balloon_stats(instance_id), "dirty_rate": 3 * MIB}


async def test_the_drivers_dirty_rate_is_the_samples_and_none_when_it_measured_none(tmp_path: Path) -> None:
    for driver, expected in ((_Dirtying(), 3 * MIB), (FakeDriver(), None)):
        await _spawn(driver, "vm1")
        [g], _ = await GuestCollector(driver, proc=tmp_path).collect()
        assert g.dirty_rate == expected


async def test_a_guest_started_from_a_memory_template_is_sampled_as_a_clone(tmp_path: Path) -> None:
    driver = FakeDriver()
    await _spawn(driver, "booted")
    await driver.spawn(InstanceSpec(id="clone", name="clone", hostname="clone", vcpus=1, memory_mib=256,
                                    disks=root_disk(Path("/x")), memory=MemoryBacking(template=True)))
    stats, _ = await GuestCollector(driver, proc=tmp_path).collect()
    templates = {g.instance_id: g.template for g in stats}
    assert templates["booted"] is None and templates["clone"] is not None
    assert await driver.template_memory() == {templates["clone"]: 128 * MIB}
    await driver.suspend("clone")
    await driver.resume("clone")  # restored from its own saved RAM: no longer a clone
    [clone] = [g for g in (await GuestCollector(driver, proc=tmp_path).collect())[0] if g.instance_id == "clone"]
    assert clone.template is None and await driver.template_memory() == {}


async def test_a_recycled_pid_is_not_read_as_the_guest(tmp_path: Path) -> None:
    driver = FakeDriver()
    await _spawn(driver, "vm1")
    info = await driver.get_info("vm1")
    pid_dir = tmp_path / str(info.pid)
    pid_dir.mkdir()
    (pid_dir / "cmdline").write_bytes(b"/usr/bin/something-else\0")
    shutil.copy(FIXTURES / "smaps_rollup", pid_dir / "smaps_rollup")
    g = await GuestCollector(driver, proc=tmp_path).collect_one(
        InstanceInfo(id="vm1", power_state=PowerState.RUNNING, pid=info.pid, memory_mib=256))
    assert g.pss is None and g.rss == 256 * MIB
    assert asyncio.iscoroutinefunction(GuestCollector.collect)


def test_a_v1_parent_reads_its_childrens_swap(tmp_path: Path) -> None:
    """A budget cgroup holds no process: its own ``swap`` is 0 while its guests' pages are in swap."""
    parent = tmp_path / "cg" / "budget"
    parent.mkdir(parents=True)
    for name, value in {"memory.usage_in_bytes": 900 * MIB, "memory.limit_in_bytes": 1024 * MIB,
                        "memory.memsw.usage_in_bytes": 1200 * MIB, "memory.failcnt": 0}.items():
        (parent / name).write_text(f"{value}\n")
    (parent / "memory.stat").write_text(f"cache 0\nrss 0\nswap 0\ntotal_rss {900 * MIB}\ntotal_swap {300 * MIB}\n")
    (parent / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert MemoryCgroups(tmp_path / "cg", 1).read("budget").swap == 300 * MIB
