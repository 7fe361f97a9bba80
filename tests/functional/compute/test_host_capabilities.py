"""A host's driver capabilities travel in its heartbeat, are stored with the host and reach the scheduler."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import Api
from tests.functional.compute.test_flavors_keypairs_quotas import host_info
from tests.wsdial import test_client_dialer
from yunstack.agent.host import make_agent
from yunstack.agent.http import HttpControlPlane
from yunstack.api.app import create_app
from yunstack.compute import scheduler
from yunstack.compute.driver import Capabilities, MigrationMode
from yunstack.compute.fake import FakeDriver
from yunstack.db.tables import compute as t
from yunstack.types import utcnow


def test_the_heartbeat_stores_the_capabilities_and_the_scheduler_filters_on_them(api: Api) -> None:
    caps = Capabilities(accel="kvm", migration_modes=frozenset({MigrationMode.PAUSED, MigrationMode.PRECOPY}),
                        block_migration=True, max_vcpus=255)
    hosts = api.services.hosts
    for name, reported in (("kvm-node", caps), ("tcg-node", Capabilities(accel="tcg", max_vcpus=255))):
        hosts.heartbeat(name, replace(host_info(name), capabilities=reported), availability_zone="nova",
                        ram_allocation_ratio=1.5, cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0,
                        reserved_host_memory_mib=512)
    with api.services.db() as s:
        usage = {u.host: u for u in hosts.host_states(s, ["kvm-node", "tcg-node"])}
        seen = {h.host: h for h in hosts.scheduling(s)}  # what a create reads under the lock
    assert usage["kvm-node"].capabilities == caps == seen["kvm-node"].capabilities

    needs = scheduler.Needs(migration_mode=MigrationMode.PRECOPY)
    decision = scheduler.select(list(seen.values()),
                                scheduler.RequestSpec(vcpus=1, memory_mib=128, disk_gb=1, needs=needs))
    assert decision.host == "kvm-node"
    refused = scheduler.select([seen["tcg-node"]],
                               scheduler.RequestSpec(vcpus=1, memory_mib=128, disk_gb=1, needs=needs))
    assert refused.reasons == {"tcg-node": "CapabilitiesFilter: the host lacks precopy live migration "
                                           "(the host offers: none)"}


def test_the_agent_reports_its_own_address_and_os_hypervisors_shows_it(api: Api) -> None:
    # Over the real protocol: every lab host once showed 127.0.0.1, whatever its address was.
    config = api.services.config
    config = replace(config, network=replace(config.network, tunnel_ip="10.250.0.7"))
    client = TestClient(create_app(api.services), base_url="http://127.0.0.1:8080")
    link = HttpControlPlane("http://127.0.0.1:8080", config.host_name, api.services.hostauth.issue(config.host_name),
                            client=client, dial=test_client_dialer(client))
    agent = make_agent(config, link, driver=FakeDriver(hostname=config.host_name))
    agent.poll_timeout = 2.0
    agent.start()
    try:
        r = api.http.get("/compute/v2.1/os-hypervisors/detail", headers=api.headers(api.admin()))
        assert r.status_code == 200, r.text
        shown = {h["hypervisor_hostname"]: h["host_ip"] for h in r.json()["hypervisors"]}
        assert shown == {config.host_name: "10.250.0.7"}, shown
    finally:
        agent.stop()
        client.close()


def test_the_schedulers_view_of_each_host_agrees_with_the_apis(api: Api) -> None:
    """``scheduling`` reads only what the scheduler looks at; it must say what ``host_states`` says."""
    hosts = api.services.hosts
    for name, reported in (("h1", Capabilities(accel="kvm", block_migration=True)), ("h2", None)):
        info = host_info(name) if reported is None else replace(host_info(name), capabilities=reported)
        hosts.heartbeat(name, info, availability_zone="az1", ram_allocation_ratio=1.5, cpu_allocation_ratio=4.0,
                        disk_allocation_ratio=1.0, reserved_host_memory_mib=256)
    api.services.host_link.report_memory("h1", {"host": {"admission_room": 3 << 30}, "guests": []})
    with api.services.db() as s:
        usage = {u.host: u for u in hosts.host_states(s)}
        seen = {h.host: h for h in hosts.scheduling(s)}
    assert set(seen) == set(usage) >= {"h1", "h2"}
    assert seen["h1"].observed_free_mib == 3 << 10 and seen["h2"].observed_free_mib is None
    for name, u in usage.items():
        h = seen[name]
        assert (h.availability_zone, h.up, h.disabled, h.vcpus, h.memory_mib, h.local_gb, h.vcpus_used,
                h.memory_used_mib, h.disk_used_gb, h.ram_allocation_ratio, h.cpu_allocation_ratio,
                h.disk_allocation_ratio, h.reserved_host_memory_mib, h.instances, h.hypervisor_type,
                h.observed_free_mib, h.capabilities) == (
            u.availability_zone, u.up, u.disabled, u.vcpus, u.memory_mib, u.local_gb, u.vcpus_used,
            u.memory_used_mib, u.disk_used_gb, u.ram_allocation_ratio, u.cpu_allocation_ratio,
            u.disk_allocation_ratio, u.reserved_host_memory_mib, u.instances, u.hypervisor_type,
            u.observed_free_mib, u.capabilities), name


def test_a_memory_report_older_than_two_minutes_is_not_scheduled_on(api: Api) -> None:
    """A host whose memory manager stopped reporting is weighed and filtered on its static size
    alone, not on its last word (which may have promised room that is gone)."""
    hosts = api.services.hosts
    hosts.heartbeat("h1", host_info("h1"), availability_zone="az1", ram_allocation_ratio=1.5,
                    cpu_allocation_ratio=4.0, disk_allocation_ratio=1.0, reserved_host_memory_mib=256)
    api.services.host_link.report_memory("h1", {"host": {"admission_room": 3 << 30, "physical": 4 << 30,
                                                         "available": 3 << 30}, "guests": []})
    with api.services.db() as s:
        [h] = [h for h in hosts.scheduling(s) if h.host == "h1"]
    assert (h.observed_free_mib, h.observed_physical_mib, h.observed_used_mib) == (3 << 10, 4 << 10, 1 << 10)
    with api.services.db.begin() as s:
        node = s.scalar(select(t.ComputeNode).where(t.ComputeNode.host == "h1"))
        assert node is not None
        node.stats = {**node.stats, "observed_at": (utcnow() - timedelta(seconds=121)).timestamp()}
    with api.services.db() as s:
        [h] = [h for h in hosts.scheduling(s) if h.host == "h1"]
    assert (h.observed_free_mib, h.observed_physical_mib, h.observed_used_mib) == (None, None, None)
