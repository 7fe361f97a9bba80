"""The values the memory manager speaks in: frozen snapshots in, frozen actions out.

Everything here is plain data.  Collectors build ``HostStats`` and ``GuestStats``; the policy reads
them with ``GuestPolicy`` and ``Tuning`` and returns ``Actions``; controllers apply those.  Sizes
are bytes, times are seconds (monotonic unless named ``wall``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from yunstack.config import MemoryConfig as MemoryConfig  # re-exported: the config lives in config.py

MIB = 1 << 20
PAGE = 4096

# The key in an instance's spec data (from the control plane) that says its project opted out of
# page sharing; the manager turns it into ``GuestPolicy.page_sharing`` and ``MemoryBacking``.
EXTRA_PAGE_SHARING = "yunstack:page_sharing"
# A flavor extra spec or image property: the server starts from a memory template when its host
# has one (docs/explanation/memory-templates.md).  The control plane passes the image's on as an
# extra spec, so the agent reads one place.
EXTRA_MEMORY_TEMPLATE = "yunstack:memory_template"
# Where a server keeps its image's value of it (system_metadata, as Nova keeps ``image_*`` facts).
IMAGE_MEMORY_TEMPLATE = "image_yunstack:memory_template"


def asks_for_template(value: str | None) -> bool:
    """Whether a ``yunstack:memory_template`` value turns templates on (Glance and Nova spell true many ways)."""
    return (value or "").strip().lower() in ("true", "yes", "on", "1")


class PressureLevel(enum.IntEnum):
    """How hard the host must reclaim; each level adds a mechanism (ESX's high/soft/hard/low)."""

    NONE = 0  # plenty: give memory back to guests, KSM only if the host is overcommitted
    KSM = 1  # getting tight: merge pages, hold balloons where they are
    BALLOON = 2  # tight: balloon guests towards their entitlements
    SWAP = 3  # critical: also squeeze cgroups so the host swaps guest memory


@dataclass(frozen=True, kw_only=True)
class KsmStats:
    """``/sys/kernel/mm/ksm``: knobs and counters (pages are 4 KiB)."""

    available: bool = True
    run: int = 0
    pages_to_scan: int = 100
    sleep_millisecs: int = 20
    pages_shared: int = 0
    pages_sharing: int = 0
    pages_unshared: int = 0
    pages_volatile: int = 0
    full_scans: int = 0
    zero_pages: int = 0  # ksm_zero_pages (use_zero_pages=1 only)
    general_profit: int | None = None  # bytes; kernels >= 6.1


@dataclass(frozen=True, kw_only=True)
class HostStats:
    """One sample of the host.  ``budget_*`` come from the yunstack parent cgroup when it has a limit."""

    timestamp: float
    total: int
    free: int
    available: int
    cached: int = 0
    swap_total: int = 0
    swap_free: int = 0
    # Bytes the host swapped in and out since boot (/proc/vmstat pswpin, pswpout); None = unreadable.
    swapped_in: int | None = None
    swapped_out: int | None = None
    psi_some_avg10: float = 0.0  # % of time some task stalled on memory (system-wide)
    psi_full_avg10: float = 0.0
    cpu_psi_some_avg10: float = 0.0  # % of time some runnable task waited for a CPU (system-wide)
    ksm: KsmStats = field(default_factory=KsmStats)
    budget_limit: int | None = None
    budget_usage: int | None = None
    # memory template key -> bytes of its RAM file in the page cache (shared by its clones, the driver's
    # template_memory); empty on a host without templates
    templates: dict[str, int] = field(default_factory=dict)

    @property
    def capacity(self) -> int:
        """The memory guests may use in all: the budget when there is one, else MemTotal."""
        return self.budget_limit if self.budget_limit is not None else self.total

    @property
    def headroom(self) -> int:
        """What is still free for guests: budget minus its usage, else MemAvailable."""
        if self.budget_limit is not None and self.budget_usage is not None:
            return min(self.budget_limit - self.budget_usage, self.available)
        return self.available


@dataclass(frozen=True, kw_only=True)
class GuestStats:
    """One sample of one guest; ``None`` means the source did not offer that number."""

    instance_id: str
    timestamp: float
    configured: int  # flavor RAM
    balloon_actual: int  # QMP query-balloon: the guest's current logical size
    # virtio-balloon guest stats (stat-*), None when the guest has not reported (yet)
    guest_free: int | None = None
    guest_total: int | None = None
    guest_available: int | None = None
    guest_disk_caches: int | None = None
    major_faults: int | None = None
    minor_faults: int | None = None
    swap_in: int | None = None  # guest-internal swap, bytes
    swap_out: int | None = None
    stats_updated: int = 0  # guest stats last-update (guest wall clock, seconds)
    # A clone: the key of the memory template whose RAM file its QEMU maps privately.  Its balloon
    # never inflates (QEMU 7.2 would punch the pages out of the shared file), and the RAM pages it never
    # wrote are the template's page cache, not its own.
    template: str | None = None
    # the QEMU process
    pid: int | None = None
    rss: int = 0
    pss: int | None = None
    anonymous: int | None = None  # smaps_rollup Anonymous: QEMU's heap and the RAM pages it wrote (a clone's own)
    swap: int | None = None  # host swap used by the process (VmSwap)
    dirty_rate: int | None = None  # bytes/s the guest dirtied (QEMU's page sampling), None = not measured
    anon_huge: int | None = None  # AnonHugePages: THP-backed guest RAM
    ksm_merging_pages: int | None = None  # /proc/PID/ksm_merging_pages or ksm_stat
    ksm_zero_pages: int | None = None
    ksm_mergeable: bool | None = None  # ksm_stat "ksm_mergeable" (any VMA is MADV_MERGEABLE)
    # the VM's memory cgroup
    cgroup_usage: int | None = None
    cgroup_limit: int | None = None
    cgroup_swap: int | None = None
    cgroup_failcnt: int | None = None
    cgroup_oom_kill: int | None = None

    @property
    def ballooned(self) -> int:
        return max(0, self.configured - self.balloon_actual)

    def used_estimate(self) -> int | None:
        """Memory the guest really uses: total - available (free + reclaimable caches), minus balloon.

        With deflate-on-oom the guest keeps ballooned pages in its MemTotal (they count as used), so
        when the total is above ``actual`` the ballooned bytes are taken out again.
        """
        if self.guest_total is None:
            return None
        avail = self.guest_available
        if avail is None:
            if self.guest_free is None:
                return None
            avail = self.guest_free + (self.guest_disk_caches or 0)
        used = self.guest_total - avail
        if self.guest_total > self.balloon_actual:
            used -= self.ballooned
        return max(0, used)


@dataclass(frozen=True, kw_only=True)
class GuestPolicy:
    """ESX's per-VM allocation parameters, plus the trust and THP switches."""

    reservation_bytes: int = 0  # min: never balloon below
    limit_bytes: int | None = None  # max: never above (None = configured)
    shares: int = 1000
    page_sharing: bool = True  # False: QEMU mem-merge=off, never made mergeable
    thp: bool | None = None  # None: the policy decides
    template: bool = False  # start from a memory template when the host has one (never without page sharing)


@dataclass(frozen=True, kw_only=True)
class Tuning:
    """The policy's constants; defaults are argued in docs/explanation/memory.md."""

    period: float = 2.0
    idle_tax: float = 0.75  # ESX Mem.IdleTax
    # pressure levels, from headroom / capacity (ESX 6/4/2 %, MoM and ksmtuned 20 %)
    ksm_free_fraction: float = 0.20
    balloon_free_fraction: float = 0.10
    swap_free_fraction: float = 0.04
    target_free_fraction: float = 0.15  # what ballooning aims to restore (inside the hold band)
    critical_target_free_fraction: float = 0.20  # at SWAP (a spike): aim back at the KSM band, not just above it
    level_hysteresis: float = 0.02  # a level is left only this far above its threshold
    psi_balloon_some: float = 10.0  # system PSI some avg10 % that forces at least BALLOON
    psi_swap_full: float = 10.0  # PSI full avg10 % that forces SWAP
    force_level: PressureLevel | None = None  # benchmarks/tests: never below this level
    # per-guest floors and steps
    headroom_fraction: float = 0.20  # guest keeps 20 % of its working set free (MoM, Hyper-V buffer)
    min_headroom_bytes: int = 32 * MIB
    min_guest_bytes: int = 96 * MIB  # never balloon a guest below this (the tiny guest needs 80)
    max_step_bytes: int = 64 * MIB
    max_step_fraction: float = 0.125  # of configured, per period
    min_step_bytes: int = 8 * MIB
    min_change_bytes: int = 4 * MIB  # dead band: smaller changes are not sent
    # guest free pages are already back on the host (virtio-balloon free page reporting): a balloon
    # that swallows them frees nothing, so the pool counts only backed memory (actual - guest free)
    free_page_reporting: bool = True
    # a spike (level SWAP): large but bounded steps, 25 % of a guest's slack per period, every 1 s
    fast_reclaim_fraction: float = 0.25
    spike_period: float = 1.0
    # guest pressure -> fast deflate
    guest_low_free_fraction: float = 0.05  # guest available below 5 % of actual
    major_faults_per_period: int = 200
    fast_deflate_fraction: float = 0.25  # of configured, at once
    pressure_hold_periods: int = 10  # no inflation of a pressured guest for this long
    # working-set smoothing (rises fast, falls slowly; ESX's two EWMAs)
    wss_fast_alpha: float = 0.5
    wss_slow_alpha: float = 0.05
    # KSM (ksmtuned/MoM constants, scaled to the mergeable memory)
    ksm_mode: str = "auto"  # auto | always | never
    ksm_sleep_ms: int = 20
    ksm_min_pages: int = 64
    ksm_max_pages: int = 1250
    ksm_target_scan_seconds: float = 10.0  # one full pass over mergeable memory
    ksm_useless_periods: int = 30  # no gain for this long: slow down (and stop if nothing shared)
    ksm_gain_pages: int = 256  # pages_sharing growth that counts as a gain
    ksm_boost_periods: int = 15  # after a sharable guest arrives: scan at ksm_max_pages this long (ksmtuned boost)
    # ksmd competes with the guests' vCPUs: once tasks wait for a CPU this often (PSI some avg10 %), scan
    # rates are divided by ksm_cpu_backoff_divisor (at most; never below ksm_min_pages).  Memory pressure
    # (level BALLOON and above) overrides this: merging is then cheaper than ballooning an active guest.
    ksm_cpu_psi_backoff: float = 40.0
    ksm_cpu_backoff_divisor: int = 4
    # admission (the scheduler's ObservedMemoryFilter on one host): the next guest must fit the observed
    # headroom with its expected footprint and leave this fraction free (just above SWAP's 4 %: admitting
    # a guest must never start a spike)
    admission_free_fraction: float = 0.05
    # host swap / cgroups
    qemu_overhead_bytes: int = 96 * MIB  # per-VM host cost beyond guest RAM (TCG buffer, heap)
    idle_swappiness: int = 100
    active_swappiness: int = 20


@dataclass(frozen=True, kw_only=True)
class CgroupSetting:
    """One VM cgroup's limits; ``None`` means unlimited."""

    limit: int | None = None
    soft_limit: int | None = None  # v1 soft limit / v2 memory.high is not used for it (see docs)
    swap_allowed: bool = True
    swappiness: int | None = None


@dataclass(frozen=True, kw_only=True)
class KsmSettings:
    """What KSM should do: ``run`` 0/1, scan rate."""

    run: int
    pages_to_scan: int
    sleep_millisecs: int


@dataclass(frozen=True, kw_only=True)
class GuestDecision:
    """The policy's verdict for one guest, with the numbers it was derived from."""

    instance_id: str
    target: int  # balloon target to send (== actual when nothing changes)
    send: bool  # whether to send ``target``
    entitlement: int
    floor: int
    ceiling: int
    working_set: int
    pressured: bool
    cgroup: CgroupSetting
    page_sharing: bool  # QEMU mem-merge for the next (re)start
    thp: bool  # THP for the next (re)start


@dataclass(frozen=True, kw_only=True)
class Actions:
    """Everything one policy pass decided."""

    level: PressureLevel
    guests: tuple[GuestDecision, ...]
    ksm: KsmSettings | None  # None: leave KSM alone (ksm_mode never, or KSM missing)
    reasons: tuple[str, ...] = ()
    period: float = 2.0  # seconds until the next pass (shorter during a spike)
    spike: bool = False  # a spike is being answered (entered at SWAP, left at critical_target_free_fraction)

    def guest(self, instance_id: str) -> GuestDecision:
        for decision in self.guests:
            if decision.instance_id == instance_id:
                return decision
        raise KeyError(instance_id)


@dataclass(frozen=True, kw_only=True)
class GuestHistory:
    """What the policy remembers about one guest between periods (mom's StatAvg, ESX's EWMAs)."""

    wss_fast: float = 0.0
    wss_slow: float = 0.0
    wss_now: int = 0
    major_faults: int | None = None
    major_faults_delta: int = 0
    last_target: int | None = None
    last_actual: int | None = None  # balloon actual at the previous sample
    actual_delta: int = 0  # how much actual changed since the previous sample
    pressured_until: int = -1  # tick number
    samples: int = 0
    measured: bool = False  # the EWMAs hold real guest stats (not the "uses what it has" guess)


@dataclass(frozen=True, kw_only=True)
class History:
    """The policy's memory, replaced (never mutated) each period."""

    tick: int = 0
    level: PressureLevel = PressureLevel.NONE
    guests: tuple[tuple[str, GuestHistory], ...] = ()
    ksm_pages_sharing: int = 0
    ksm_last_gain_tick: int = 0
    ksm_pages_to_scan: int = 0
    ksm_boost_until: int = -1  # tick until which KSM scans at full speed (a guest arrived)
    spike: bool = False  # answering a spike: fast steps towards critical_target_free_fraction

    def guest(self, instance_id: str) -> GuestHistory:
        for key, value in self.guests:
            if key == instance_id:
                return value
        return GuestHistory()


def tuning_for(config: MemoryConfig) -> Tuning:
    """The policy's tuning from the ``[memory]`` config section."""
    return Tuning(period=config.period, idle_tax=config.idle_tax, ksm_mode=config.ksm_mode)
