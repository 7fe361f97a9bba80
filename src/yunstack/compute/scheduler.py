"""The scheduler: filters then weighers over host states, a pure function with no I/O.

Every host that is not chosen gets one line saying which filter rejected it and why, so that a
failed boot can say exactly why every host was rejected.  Hosts are weighed on the free RAM the
flavors leave (Nova's RAMWeigher) plus the memory balancer's own target rule
(``memory.balancer.score``, the MemoryPressureWeigher), so a new guest goes where the balancer would
move one, and never makes a host the balancer must relieve when another host can take it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from yunstack.compute.driver import Capabilities, MigrationMode
from yunstack.memory import balancer
from yunstack.memory.model import MIB, PressureLevel


@dataclass(frozen=True, kw_only=True)
class HostState:
    """What the scheduler knows of one host."""

    host: str
    availability_zone: str
    up: bool
    disabled: bool
    vcpus: int
    memory_mib: int
    local_gb: int
    vcpus_used: int
    memory_used_mib: int
    disk_used_gb: int
    ram_allocation_ratio: float
    cpu_allocation_ratio: float
    disk_allocation_ratio: float
    reserved_host_memory_mib: int
    instances: int = 0
    hypervisor_type: str = "QEMU"
    # Observed memory (the memory manager's admission room), for overcommit-aware admission; None = unknown.
    observed_free_mib: int | None = None
    # The rest of the host's latest memory ledger entry (MemoryPressureWeigher); None = not reported.
    observed_physical_mib: int | None = None  # the manager's capacity
    observed_used_mib: int | None = None  # capacity - headroom
    observed_level: int = 0  # memory.model.PressureLevel
    observed_psi: float = 0.0  # memory PSI some avg10, %
    observed_swap_in: float = 0.0  # bytes/s the host swapped in and out in its last period
    observed_swap_out: float = 0.0
    # What a clone of each of the host's memory templates costs it now, MiB, by
    # ``memoryledger.template_shape``: a server that will start from one is expected to need that.
    clone_mib: Mapping[str, int] = field(default_factory=dict)
    # What the host's driver can do, as its heartbeat reported it; None = not reported (an older agent).
    capabilities: Capabilities | None = None


@dataclass(frozen=True, kw_only=True)
class Needs:
    """Driver capabilities a request depends on (a live migration's mode, its disks moving along...)."""

    migration_mode: MigrationMode | None = None
    block_migration: bool = False
    volumes: bool = False
    hotplug_nics: bool = False
    accel: str | None = None

    def missing(self, caps: Capabilities) -> list[str]:
        """What of this ``caps`` lacks, in words; empty when the host can do all of it."""
        lacking = []
        if self.migration_mode is not None and self.migration_mode not in caps.migration_modes:
            modes = ", ".join(sorted(caps.migration_modes)) or "none"
            lacking.append(f"{self.migration_mode} live migration (the host offers: {modes})")
        if self.block_migration and not caps.block_migration:
            lacking.append("block migration of local disks")
        if self.volumes and not caps.volumes:
            lacking.append("volumes")
        if self.hotplug_nics and not caps.hotplug_nics:
            lacking.append("hot-plugged NICs")
        if self.accel is not None and self.accel != caps.accel:
            lacking.append(f"accel {self.accel} (the host runs {caps.accel})")
        return lacking


NO_NEEDS = Needs()


@dataclass(frozen=True, kw_only=True)
class RequestSpec:
    vcpus: int
    memory_mib: int
    disk_gb: int
    availability_zone: str | None = None
    image_properties: Mapping[str, str] = field(default_factory=dict)
    ignore_hosts: frozenset[str] = frozenset()
    force_host: str | None = None
    # What the new guest is expected to need soon after boot (its reservation, at least half its RAM);
    # 0 = its whole RAM.  Compared with observed free memory, not with the static ratio.
    expected_mib: int = 0
    # Its flavor's memory reservation (yunstack:memory_reservation_mib), MiB.
    reservation_mib: int = 0
    # The server asks for a memory template (``memoryledger.template_shape``): on a host whose
    # template of that shape has clones, it is expected to cost what they cost (``memory_need``).
    template_shape: str | None = None
    # The server group the guest joins: its policy and how many members each host already runs.
    group_policy: str | None = None
    group_hosts: Mapping[str, int] = field(default_factory=dict)
    # Driver capabilities the request depends on (CapabilitiesFilter).
    needs: Needs = NO_NEEDS


Filter = Callable[[HostState, RequestSpec], str | None]


def compute_filter(h: HostState, r: RequestSpec) -> str | None:
    if h.disabled:
        return "ComputeFilter: the host's compute service is disabled"
    if not h.up:
        return "ComputeFilter: the host's agent has not reported recently (down)"
    return None


def az_filter(h: HostState, r: RequestSpec) -> str | None:
    if r.availability_zone and r.availability_zone != h.availability_zone:
        return f"AvailabilityZoneFilter: host is in {h.availability_zone!r}, {r.availability_zone!r} requested"
    return None


def ram_filter(h: HostState, r: RequestSpec) -> str | None:
    usable = (h.memory_mib - h.reserved_host_memory_mib) * h.ram_allocation_ratio
    free = usable - h.memory_used_mib
    if r.memory_mib > free:
        return (f"RamFilter: needs {r.memory_mib} MiB, {max(0, int(free))} MiB free of "
                f"{int(usable)} MiB usable (ratio {h.ram_allocation_ratio})")
    return None


def memory_need(h: HostState, r: RequestSpec) -> int:
    """MiB the new guest is expected to need soon on ``h``.

    As a clone when it asks for a memory template and ``h`` runs clones of that shape: what the
    largest of them holds of its own, and at least its reservation (it maps the template's RAM and
    boots nothing; the host's ``memory.policy.expected_footprint`` is the same rule).  Otherwise
    ``expected_mib`` (its reservation, at least half its RAM), else its RAM.
    """
    if r.template_shape is not None and (cost := h.clone_mib.get(r.template_shape)) is not None:
        return max(cost, r.reservation_mib, 1)
    return r.expected_mib or r.memory_mib


def observed_memory_filter(h: HostState, r: RequestSpec) -> str | None:
    """Refuse a host whose observed free memory could not hold the new guest (an OOM risk).

    ``observed_free_mib`` is the memory manager's admission room (``memory.policy.admission_room``):
    free memory plus what ballooning could take back above every guest's working set and headroom,
    minus recent regrowth and a reserve.  Overcommit so admits guests while they are idle and stops
    when their real use fills the host, whatever the static ratio would allow.
    """
    need = memory_need(h, r)
    if h.observed_free_mib is not None and need > h.observed_free_mib:
        clone = " (as a clone of the host's memory template)" if need != (r.expected_mib or r.memory_mib) else ""
        return (f"ObservedMemoryFilter: the guest is expected to need {need} MiB soon{clone}, the host has "
                f"{h.observed_free_mib} MiB of room (free + reclaimable - regrowth - reserve)")
    return None


def cpu_filter(h: HostState, r: RequestSpec) -> str | None:
    total = h.vcpus * h.cpu_allocation_ratio
    if r.vcpus > total - h.vcpus_used:
        return (f"CoreFilter: needs {r.vcpus} vCPUs, {max(0, int(total - h.vcpus_used))} free of "
                f"{int(total)} (ratio {h.cpu_allocation_ratio})")
    return None


def disk_filter(h: HostState, r: RequestSpec) -> str | None:
    total = h.local_gb * h.disk_allocation_ratio
    if r.disk_gb > total - h.disk_used_gb:
        return f"DiskFilter: needs {r.disk_gb} GB, {max(0, int(total - h.disk_used_gb))} GB free of {int(total)}"
    return None


def image_props_filter(h: HostState, r: RequestSpec) -> str | None:
    wanted = r.image_properties.get("hypervisor_type") or r.image_properties.get("img_hv_type")
    if wanted and wanted.lower() != h.hypervisor_type.lower():
        return f"ImagePropertiesFilter: image needs hypervisor {wanted!r}, host runs {h.hypervisor_type!r}"
    arch = r.image_properties.get("architecture") or r.image_properties.get("hw_architecture")
    if arch and arch not in ("x86_64", "amd64"):
        return f"ImagePropertiesFilter: image needs architecture {arch!r}, host is x86_64"
    return None


def ignore_filter(h: HostState, r: RequestSpec) -> str | None:
    if h.host in r.ignore_hosts:
        return "IgnoreHostsFilter: host excluded by the request"
    if r.force_host and h.host != r.force_host:
        return f"ForceHostFilter: host {r.force_host!r} was requested"
    return None


def group_affinity_filter(h: HostState, r: RequestSpec) -> str | None:
    """``affinity``: once the group has a member on a host, every other member goes there too."""
    if r.group_policy == "affinity" and r.group_hosts and h.host not in r.group_hosts:
        where = ", ".join(sorted(r.group_hosts))
        return f"ServerGroupAffinityFilter: the server group's members run on {where}; affinity needs that host"
    return None


def group_anti_affinity_filter(h: HostState, r: RequestSpec) -> str | None:
    """``anti-affinity``: at most one member of the group per host."""
    count = r.group_hosts.get(h.host, 0)
    if r.group_policy == "anti-affinity" and count:
        return (f"ServerGroupAntiAffinityFilter: the host already runs {count} member(s) of the server group "
                f"(anti-affinity allows one per host)")
    return None


def capabilities_filter(h: HostState, r: RequestSpec) -> str | None:
    """Refuse a host whose driver cannot do what the request depends on, or run that many vCPUs."""
    caps = h.capabilities
    if caps is None:
        if r.needs != NO_NEEDS:
            return "CapabilitiesFilter: the host has not reported its capabilities"
        return None
    if r.vcpus > caps.max_vcpus:
        return (f"CapabilitiesFilter: needs {r.vcpus} vCPUs in one guest, the host's driver runs at most "
                f"{caps.max_vcpus}")
    lacking = r.needs.missing(caps)
    if lacking:
        return "CapabilitiesFilter: the host lacks " + "; ".join(lacking)
    return None


FILTERS: tuple[Filter, ...] = (ignore_filter, compute_filter, az_filter, image_props_filter, cpu_filter,
                               ram_filter, disk_filter, observed_memory_filter, capabilities_filter,
                               group_affinity_filter, group_anti_affinity_filter)
# Soft group policies only weigh; one member more or less outweighs any RAM difference, so they
# decide whenever a host with (or without) members passes the filters (Nova's weigher multipliers).
_GROUP_WEIGHT = 1e12
# A host the memory balancer would refuse as a target (it would end above its pressure target, or it
# is under pressure) comes after every host that it would take, whatever their free RAM; soft group
# policies still come first.
_PRESSURE_PENALTY = 1e9


def memory_weight(h: HostState, need_mib: int) -> float:
    """MemoryPressureWeigher: ``memory.balancer.score`` of the host for ``need_mib``, in MiB.

    The bytes the host would still have spare below its pressure target (and within its admission
    room) after taking the guest, discounted as its PSI rises; ``-_PRESSURE_PENALTY`` when the balancer
    would refuse it as a target; 0 when the host has not reported its memory (yet).
    """
    if h.observed_physical_mib is None or h.observed_used_mib is None:
        return 0.0
    room = None if h.observed_free_mib is None else h.observed_free_mib * MIB
    value, _ = balancer.score(physical=h.observed_physical_mib * MIB, used=h.observed_used_mib * MIB,
                              need=need_mib * MIB, admission_room=room, level=PressureLevel(h.observed_level),
                              psi_some_avg10=h.observed_psi, swap_in_rate=h.observed_swap_in,
                              swap_out_rate=h.observed_swap_out)
    return -_PRESSURE_PENALTY if value is None else value / MIB


def weigh(h: HostState, r: RequestSpec) -> float:
    """Spread: prefer the host with most free RAM (Nova's RAMWeigher) and most spare observed memory
    (``memory_weight``), then fewest instances.

    ``soft-affinity`` prefers hosts with more members of the group, ``soft-anti-affinity`` fewer.
    """
    usable = (h.memory_mib - h.reserved_host_memory_mib) * h.ram_allocation_ratio
    weight = (usable - h.memory_used_mib) - 0.001 * h.instances
    if h.observed_physical_mib is not None:
        weight += memory_weight(h, memory_need(h, r))
    if r.group_policy == "soft-affinity":
        weight += _GROUP_WEIGHT * r.group_hosts.get(h.host, 0)
    elif r.group_policy == "soft-anti-affinity":
        weight -= _GROUP_WEIGHT * r.group_hosts.get(h.host, 0)
    return weight


@dataclass(frozen=True)
class Decision:
    host: str | None
    reasons: dict[str, str]


def _select_default(hosts: Sequence[HostState], r: RequestSpec) -> HostState | None:
    """``FILTERS`` and ``weigh`` inlined, one pass with no call per filter (3-4x faster at 1,000 hosts).

    Same expressions in the same order as the filters, so the same host wins; the reasons come
    from the filters themselves, and only when no host fits.  A unit test keeps the two equal.
    """
    props = r.image_properties
    wanted = props.get("hypervisor_type") or props.get("img_hv_type")
    wanted_lower = wanted.lower() if wanted else None
    arch = props.get("architecture") or props.get("hw_architecture")
    if arch and arch not in ("x86_64", "amd64"):
        return None
    ignore, force, zone = r.ignore_hosts, r.force_host, r.availability_zone
    vcpus, memory, disk = r.vcpus, r.memory_mib, r.disk_gb
    base_need = r.expected_mib or r.memory_mib
    shape = r.template_shape
    best: HostState | None = None
    best_weight = float("-inf")
    for h in hosts:
        if (h.host in ignore or (force and h.host != force) or h.disabled or not h.up
                or (zone and zone != h.availability_zone)
                or (wanted_lower is not None and wanted_lower != h.hypervisor_type.lower())
                or vcpus > h.vcpus * h.cpu_allocation_ratio - h.vcpus_used):
            continue
        free = (h.memory_mib - h.reserved_host_memory_mib) * h.ram_allocation_ratio - h.memory_used_mib
        need = base_need if shape is None else memory_need(h, r)
        if (memory > free or disk > h.local_gb * h.disk_allocation_ratio - h.disk_used_gb
                or (h.observed_free_mib is not None and need > h.observed_free_mib)
                or (h.capabilities is not None and vcpus > h.capabilities.max_vcpus)):
            continue
        w = free - 0.001 * h.instances
        if h.observed_physical_mib is not None:
            w += memory_weight(h, need)
        if w > best_weight:
            best, best_weight = h, w
    return best


def select(hosts: Sequence[HostState], request: RequestSpec,
           filters: Sequence[Filter] = FILTERS) -> Decision:
    """Choose a host for ``request``; when none fits, ``reasons`` says why for every host."""
    # The inlined pass knows no server groups and no capability needs: those take the general path.
    if filters is FILTERS and request.group_policy is None and request.needs == NO_NEEDS:
        chosen = _select_default(hosts, request)
        if chosen is not None:
            return Decision(chosen.host, {})
    best: HostState | None = None
    best_weight = float("-inf")
    reasons: dict[str, str] = {}
    for h in hosts:
        for f in filters:
            why = f(h, request)
            if why is not None:
                reasons[h.host] = why
                break
        else:
            w = weigh(h, request)
            if w > best_weight:
                best, best_weight = h, w
    return Decision(best.host if best else None, reasons if best is None else {})
