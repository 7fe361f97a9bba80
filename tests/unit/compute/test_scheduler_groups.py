"""Server group policies in the scheduler: hard ones filter with a per-host reason, soft ones weigh."""

from __future__ import annotations

from dataclasses import replace

from yunstack.compute.scheduler import HostState, RequestSpec, select

BIG = HostState(host="big", availability_zone="nova", up=True, disabled=False, vcpus=8, memory_mib=16384,
                local_gb=100, vcpus_used=0, memory_used_mib=0, disk_used_gb=0, ram_allocation_ratio=1.0,
                cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0, reserved_host_memory_mib=512)
SMALL = replace(BIG, host="small", memory_mib=4096)


def spec(policy: str | None, members: dict[str, int]) -> RequestSpec:
    return RequestSpec(vcpus=1, memory_mib=512, disk_gb=1, group_policy=policy, group_hosts=members)


def test_anti_affinity_on_one_host_refuses_a_second_member_naming_the_host_and_why() -> None:
    decision = select([BIG], spec("anti-affinity", {"big": 1}))
    assert decision.host is None
    assert decision.reasons == {"big": "ServerGroupAntiAffinityFilter: the host already runs 1 member(s) of "
                                       "the server group (anti-affinity allows one per host)"}


def test_anti_affinity_places_the_next_member_on_a_host_without_one_even_if_smaller() -> None:
    assert select([BIG, SMALL], spec("anti-affinity", {"big": 1})).host == "small"
    assert select([BIG, SMALL], spec("anti-affinity", {})).host == "big"


def test_affinity_follows_the_first_member_and_names_its_host_when_refusing() -> None:
    assert select([BIG, SMALL], spec("affinity", {"small": 2})).host == "small"
    assert select([BIG, SMALL], spec("affinity", {})).host == "big"
    full = replace(SMALL, memory_used_mib=4000)
    decision = select([BIG, full], spec("affinity", {"small": 1}))
    assert decision.host is None
    assert decision.reasons["big"] == ("ServerGroupAffinityFilter: the server group's members run on small; "
                                       "affinity needs that host")
    assert decision.reasons["small"].startswith("RamFilter:")


def test_soft_policies_only_weigh_and_never_refuse() -> None:
    assert select([BIG, SMALL], spec("soft-affinity", {"small": 1})).host == "small"
    assert select([BIG, SMALL], spec("soft-anti-affinity", {"big": 1})).host == "small"
    assert select([BIG], spec("soft-anti-affinity", {"big": 3})).host == "big"
    assert select([SMALL], spec("soft-affinity", {"big": 3})).host == "small"
