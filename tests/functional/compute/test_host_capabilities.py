"""A host's driver capabilities travel in its heartbeat, are stored with the host and reach the scheduler."""

from __future__ import annotations

from dataclasses import replace

from tests.conftest import Api
from tests.functional.compute.test_flavors_keypairs_quotas import host_info
from yunstack.compute import scheduler
from yunstack.compute.driver import Capabilities, MigrationMode
from yunstack.compute.service import host_state


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
    assert usage["kvm-node"].capabilities == caps

    needs = scheduler.Needs(migration_mode=MigrationMode.PRECOPY)
    decision = scheduler.select([host_state(u) for u in usage.values()],
                                scheduler.RequestSpec(vcpus=1, memory_mib=128, disk_gb=1, needs=needs))
    assert decision.host == "kvm-node"
    refused = scheduler.select([host_state(usage["tcg-node"])],
                               scheduler.RequestSpec(vcpus=1, memory_mib=128, disk_gb=1, needs=needs))
    assert refused.reasons == {"tcg-node": "CapabilitiesFilter: the host lacks precopy live migration "
                                           "(the host offers: none)"}
