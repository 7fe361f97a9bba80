"""The scheduler's inlined default pass chooses exactly what the filters and the weigher choose."""

from __future__ import annotations

import random

import pytest

from yunstack.compute import scheduler
from yunstack.compute.driver import Capabilities, MigrationMode
from yunstack.compute.scheduler import FILTERS, HostState, RequestSpec, select
from yunstack.memory import balancer
from yunstack.memory.model import MIB, PressureLevel


def random_host(rng: random.Random, i: int) -> HostState:
    return HostState(
        host=f"node-{i}", availability_zone=rng.choice(["nova", "az2"]), up=rng.random() > 0.1,
        disabled=rng.random() < 0.1, vcpus=rng.choice([2, 8, 64]), memory_mib=rng.choice([1024, 4096, 65536]),
        local_gb=rng.choice([10, 100, 1000]), vcpus_used=rng.randint(0, 100), memory_used_mib=rng.randint(0, 60000),
        disk_used_gb=rng.randint(0, 900), ram_allocation_ratio=rng.choice([1.0, 1.5]),
        cpu_allocation_ratio=rng.choice([1.0, 16.0]), disk_allocation_ratio=1.0,
        reserved_host_memory_mib=512, instances=rng.randint(0, 40), hypervisor_type=rng.choice(["QEMU", "fake"]),
        observed_free_mib=rng.choice([None, None, 0, 100, 5000]),
        capabilities=rng.choice([None, Capabilities(max_vcpus=255), Capabilities(max_vcpus=1)]),
        clone_mib=rng.choice([{}, {}, {"img/128/1/1": rng.choice([20, 3000])}, {"other/128/1/1": 20}]),
        **rng.choice([{}, {}, {"observed_physical_mib": 65536, "observed_used_mib": rng.randint(0, 65536),
                               "observed_level": rng.randint(0, 3), "observed_psi": rng.choice([0.0, 4.0, 20.0])}]))


def random_request(rng: random.Random, names: list[str]) -> RequestSpec:
    props = rng.choice([{}, {}, {"hypervisor_type": "qemu"}, {"img_hv_type": "xen"}, {"architecture": "aarch64"},
                        {"hw_architecture": "x86_64"}])
    return RequestSpec(vcpus=rng.choice([1, 2, 16]), memory_mib=rng.choice([128, 2048, 30000]),
                       disk_gb=rng.choice([0, 1, 20, 500]), availability_zone=rng.choice([None, "nova", "az2"]),
                       image_properties=props, ignore_hosts=frozenset(rng.sample(names, 2)),
                       force_host=rng.choice([None, None, None, rng.choice(names)]),
                       expected_mib=rng.choice([0, 64, 4000]), reservation_mib=rng.choice([0, 0, 50]),
                       template_shape=rng.choice([None, None, "img/128/1/1"]))


def test_the_fast_pass_agrees_with_the_filters_on_random_worlds() -> None:
    rng = random.Random(7)
    placed = 0
    for _ in range(400):
        hosts = [random_host(rng, i) for i in range(rng.randint(0, 30))]
        request = random_request(rng, [h.host for h in hosts] + ["x", "y"])
        slow = select(hosts, request, filters=tuple(FILTERS))  # not FILTERS itself: the generic loop
        assert select(hosts, request) == slow
        placed += slow.host is not None
    assert 20 < placed < 380  # both outcomes were exercised


def test_when_nothing_fits_every_host_gets_its_filters_reason() -> None:
    small = HostState(host="a", availability_zone="nova", up=True, disabled=False, vcpus=4, memory_mib=1024,
                      local_gb=10, vcpus_used=0, memory_used_mib=0, disk_used_gb=0, ram_allocation_ratio=1.5,
                      cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0, reserved_host_memory_mib=512)
    off = scheduler.HostState(**{**small.__dict__, "host": "b", "disabled": True})
    decision = select([small, off], RequestSpec(vcpus=1, memory_mib=2048, disk_gb=1))
    assert decision.host is None
    assert decision.reasons == {
        "a": "RamFilter: needs 2048 MiB, 768 MiB free of 768 MiB usable (ratio 1.5)",
        "b": "ComputeFilter: the host's compute service is disabled"}


def test_a_host_whose_observed_room_is_used_up_is_refused_not_treated_as_unknown() -> None:
    base = HostState(host="full", availability_zone="nova", up=True, disabled=False, vcpus=4, memory_mib=8192,
                     local_gb=10, vcpus_used=0, memory_used_mib=0, disk_used_gb=0, ram_allocation_ratio=1.5,
                     cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0, reserved_host_memory_mib=512,
                     observed_free_mib=0)
    unknown = scheduler.HostState(**{**base.__dict__, "host": "new", "observed_free_mib": None})
    request = RequestSpec(vcpus=1, memory_mib=256, disk_gb=1)
    assert select([base], request).reasons["full"].startswith("ObservedMemoryFilter: the guest is expected to need")
    assert select([base, unknown], request).host == "new"


def test_a_server_asking_for_a_template_is_expected_to_cost_what_the_hosts_clones_of_it_cost() -> None:
    # Both hosts have 100 MiB of room; a 512 MiB guest is expected to need half its RAM (256 MiB),
    # except on "cloning", whose clones of this image and flavor hold 40 MiB each of their own.
    base = HostState(host="plain", availability_zone="nova", up=True, disabled=False, vcpus=4, memory_mib=8192,
                     local_gb=10, vcpus_used=0, memory_used_mib=0, disk_used_gb=0, ram_allocation_ratio=4.0,
                     cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0, reserved_host_memory_mib=0,
                     observed_free_mib=100)
    cloning = scheduler.HostState(**{**base.__dict__, "host": "cloning", "clone_mib": {"img/512/1/1": 40}})
    other_shape = scheduler.HostState(**{**base.__dict__, "host": "other", "clone_mib": {"img/1024/1/1": 40}})
    clone = RequestSpec(vcpus=1, memory_mib=512, disk_gb=1, expected_mib=256, template_shape="img/512/1/1")
    assert scheduler.memory_need(cloning, clone) == 40
    assert scheduler.memory_need(base, clone) == scheduler.memory_need(other_shape, clone) == 256
    assert select([base, other_shape, cloning], clone).host == "cloning"
    for filters in (scheduler.FILTERS, tuple(scheduler.FILTERS)):  # the inlined pass and the filters
        refused = select([base, other_shape], clone, filters=filters)
        assert refused.host is None
        assert refused.reasons["plain"] == ("ObservedMemoryFilter: the guest is expected to need 256 MiB soon, "
                                            "the host has 100 MiB of room (free + reclaimable - regrowth - reserve)")
    # A reservation still holds for a clone; a server that asks for no template is a boot anywhere.
    reserved = RequestSpec(vcpus=1, memory_mib=512, disk_gb=1, expected_mib=256, reservation_mib=120,
                           template_shape="img/512/1/1")
    assert select([cloning], reserved).reasons["cloning"] == (
        "ObservedMemoryFilter: the guest is expected to need 120 MiB soon (as a clone of the host's memory "
        "template), the host has 100 MiB of room (free + reclaimable - regrowth - reserve)")
    assert select([cloning], RequestSpec(vcpus=1, memory_mib=512, disk_gb=1, expected_mib=256)).host is None


def _host(name: str, caps: Capabilities | None) -> HostState:
    return HostState(host=name, availability_zone="nova", up=True, disabled=False, vcpus=8, memory_mib=8192,
                     local_gb=100, vcpus_used=0, memory_used_mib=0, disk_used_gb=0, ram_allocation_ratio=1.0,
                     cpu_allocation_ratio=1.0, disk_allocation_ratio=1.0, reserved_host_memory_mib=0,
                     capabilities=caps)


def test_a_host_lacking_a_needed_capability_is_rejected_with_its_reason() -> None:
    tcg = Capabilities(accel="tcg", migration_modes=frozenset({MigrationMode.PAUSED}), block_migration=True,
                       max_vcpus=255)
    kvm = Capabilities(accel="kvm", migration_modes=frozenset({MigrationMode.PAUSED, MigrationMode.PRECOPY}),
                       block_migration=True, max_vcpus=255)
    hosts = [_host("tcg-1", tcg), _host("kvm-1", kvm), _host("old-1", None)]
    needs = scheduler.Needs(migration_mode=MigrationMode.PRECOPY, block_migration=True)
    assert select(hosts, RequestSpec(vcpus=1, memory_mib=128, disk_gb=1, needs=needs)).host == "kvm-1"

    refused = select(hosts, RequestSpec(vcpus=1, memory_mib=128, disk_gb=1, needs=needs,
                                        ignore_hosts=frozenset({"kvm-1"})))
    assert refused.host is None
    assert refused.reasons["tcg-1"] == ("CapabilitiesFilter: the host lacks precopy live migration "
                                        "(the host offers: paused)")
    assert refused.reasons["old-1"] == "CapabilitiesFilter: the host has not reported its capabilities"
    # A request with no needs still goes to a host that never reported capabilities.
    assert select([_host("old-1", None)], RequestSpec(vcpus=1, memory_mib=128, disk_gb=1)).host == "old-1"


def test_a_guest_with_more_vcpus_than_the_driver_runs_is_refused() -> None:
    decision = select([_host("small", Capabilities(max_vcpus=4))], RequestSpec(vcpus=8, memory_mib=128, disk_gb=1))
    assert decision.reasons == {"small": "CapabilitiesFilter: needs 8 vCPUs in one guest, the host's driver runs "
                                         "at most 4"}


def _observed(name: str, used_fraction: float, **kw: object) -> HostState:
    """An 8 GiB host, nothing allocated, whose memory manager reports ``used_fraction`` in use."""
    fields: dict[str, object] = dict(
        host=name, availability_zone="nova", up=True, disabled=False, vcpus=8, memory_mib=8192, local_gb=100,
        vcpus_used=0, memory_used_mib=0, disk_used_gb=0, ram_allocation_ratio=1.5, cpu_allocation_ratio=16.0,
        disk_allocation_ratio=1.0, reserved_host_memory_mib=0, observed_physical_mib=8192,
        observed_used_mib=int(used_fraction * 8192))
    return HostState(**{**fields, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("hosts", "chosen"),
    [
        pytest.param([_observed("busy", 0.60), _observed("calm", 0.30)], "calm", id="lower-use-wins"),
        pytest.param([_observed("a", 0.30, observed_free_mib=1024), _observed("b", 0.30, observed_free_mib=4096)],
                     "b", id="more-admission-room-wins"),
        pytest.param([_observed("a", 0.30, observed_psi=8.0), _observed("b", 0.30)], "b", id="lower-psi-wins"),
        pytest.param([_observed("a", 0.10, observed_level=int(PressureLevel.SWAP)), _observed("b", 0.50)], "b",
                     id="a-host-under-pressure-comes-last"),
        pytest.param([_observed("a", 0.10, observed_swap_in=8.0 * MIB), _observed("b", 0.50)], "b",
                     id="a-host-that-swaps-comes-last"),
        # 74 % + 512 MiB crosses the balancer's 75 % mark: it would make a host the balancer relieves
        pytest.param([_observed("edge", 0.74), _observed("roomy", 0.60, memory_used_mib=8000)], "roomy",
                     id="crossing-the-pressure-target-comes-after-any-host-below-it"),
        pytest.param([_observed("known", 0.50), HostState(**{**_observed("new", 0.0).__dict__,
                                                              "observed_physical_mib": None})],
                     "known", id="unreported-hosts-weigh-on-static-ram-alone"),
    ],
)
def test_the_memory_pressure_weigher_uses_the_balancers_target_rule(hosts, chosen) -> None:
    request = RequestSpec(vcpus=1, memory_mib=1024, disk_gb=1)  # expected: 512 MiB
    assert select(hosts, request).host == chosen
    assert select(hosts, request, filters=tuple(FILTERS)).host == chosen


def test_the_weigher_and_the_balancer_agree_on_what_a_host_may_take() -> None:
    h = _observed("h", 0.70)
    need = 512
    value, _ = balancer.score(physical=8192 * MIB, used=h.observed_used_mib * MIB, need=need * MIB,
                                admission_room=None, level=PressureLevel.NONE, psi_some_avg10=0.0, swap_in_rate=0.0)
    assert scheduler.memory_weight(h, need) == (value / MIB if value is not None else -1e9)
    assert scheduler.memory_weight(_observed("full", 0.74), need) == -1e9
    assert balancer.score(physical=8192 * MIB, used=int(0.74 * 8192) * MIB, need=need * MIB, admission_room=None,
                          level=PressureLevel.NONE, psi_some_avg10=0.0, swap_in_rate=0.0)[1].startswith(
                              "it would exceed its pressure target")
