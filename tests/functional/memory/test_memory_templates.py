"""Memory-template clones in the memory ledger, end to end on the fake driver: the manager leaves a
clone's balloon alone, and the API, /metrics and ``yun memory`` show the host's templates line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.conftest import Api
from yunstack.compute.driver import HostInfo, InstanceSpec, MemoryBacking, root_disk
from yunstack.compute.fake import FakeDriver
from yunstack.memory.collectors import HostCollector
from yunstack.memory.manager import MemoryManager
from yunstack.memory.model import HostStats, MemoryConfig

MIB = 1 << 20
GIB = 1 << 30


class TightHost(HostCollector):
    """A 4 GiB host with 8 % free: the policy balloons (level BALLOON)."""

    def collect(self) -> HostStats:
        return HostStats(timestamp=time.monotonic(), total=4 * GIB, free=int(0.08 * 4 * GIB),
                         available=int(0.08 * 4 * GIB))


async def clone_and_booted() -> tuple[FakeDriver, MemoryManager]:
    driver = FakeDriver(hostname="h1")
    for iid, template in (("booted", False), ("clone", True)):
        await driver.spawn(InstanceSpec(id=iid, name=iid, hostname=iid, vcpus=1, memory_mib=256,
                                        disks=root_disk(Path("/images/tiny.qcow2")),
                                        memory=MemoryBacking(template=template)))
    manager = MemoryManager(driver, MemoryConfig(cgroup_parent="", ksm_mode="never"), detect_cgroups=False,
                            host_collector=TightHost())
    return driver, manager


async def test_the_manager_leaves_a_clones_balloon_alone_and_balloons_the_others() -> None:
    driver, manager = await clone_and_booted()
    for _ in range(5):
        entry = await manager.tick()
    assert (await driver.balloon_stats("clone"))["actual"] == 256 * MIB
    assert (await driver.balloon_stats("booted"))["actual"] < 256 * MIB
    held = [r for r in entry.reasons if r.startswith("clone: ")]
    assert held and "punch holes in the shared template file on QEMU 7.2" in held[0]
    [line] = entry.host.templates
    assert (line.resident, line.clones) == (128 * MIB, 1) and entry.host.templates_resident == 128 * MIB


async def recorded(api: Api) -> dict[str, Any]:
    """The manager's entry as the agent reports it to the control plane (after the host's heartbeat)."""
    host = api.services.config.host_name
    api.services.hosts.heartbeat(host, HostInfo(
        hostname=host, vcpus=2, memory_mib=4096, memory_used_mib=512, local_gb=100, local_gb_used=1,
        hypervisor_type="QEMU", hypervisor_version=7002000, cpu_info="{}", uptime="up", accel="tcg"),
        availability_zone="nova", ram_allocation_ratio=1.5, cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0,
        reserved_host_memory_mib=512)
    _, manager = await clone_and_booted()
    entry = (await manager.tick()).as_dict()
    api.services.memory.record(host, entry)
    return entry


async def test_a_clone_appears_in_the_api_ledger_with_the_hosts_templates_line(api: Api) -> None:
    entry = await recorded(api)
    [template] = entry["host"]["templates"]
    admin = api.headers(api.admin())
    [host] = api.http.get("/compute/v2.1/os-memory", headers=admin).json()["memory"]
    assert host["balance"]["templates"] == [{"key": template["key"], "resident": 128 * MIB, "clones": 1}]
    assert host["balance"]["templates_resident"] == 128 * MIB
    servers = {s["instance_id"]: s for s in host["servers"]}
    assert servers["clone"]["template"] == template["key"] and servers["booted"]["template"] is None
    history = api.http.get("/compute/v2.1/os-memory/history", headers=admin).json()["history"]
    assert history[-1]["balance"]["templates"][0]["clones"] == 1


async def test_metrics_expose_each_templates_page_cache_and_clones(api: Api) -> None:
    entry = await recorded(api)
    key, host = entry["host"]["templates"][0]["key"], api.services.config.host_name
    text = api.http.get("/metrics").text
    assert f'yunstack_memory_template_resident_bytes{{host="{host}",template="{key}"}} 1.34217728e+08' in text
    assert f'yunstack_memory_template_clones{{host="{host}",template="{key}"}} 1.0' in text
    assert f'yunstack_host_memory_templates_resident_bytes{{host="{host}"}} 1.34217728e+08' in text
