"""The memory policy: pure functions from snapshots to actions (mom's ``balloon.rules``, ESX's allocator).

No I/O happens here.  Each period the manager calls ``step``:

1. ``observe`` folds the new samples into the ``History`` (working-set EWMAs, fault deltas);
2. ``decide`` computes the pressure level, each guest's entitlement (ESX shares with an idle-memory
   tax), the bounded balloon step towards it, cgroup settings and KSM knobs;
3. ``remember`` stores what was decided, for hysteresis next time.

The formulas and their defaults are explained in ``docs/explanation/memory.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from yunstack.memory.model import (
    PAGE,
    Actions,
    CgroupSetting,
    GuestDecision,
    GuestHistory,
    GuestPolicy,
    GuestStats,
    History,
    HostStats,
    KsmSettings,
    PressureLevel,
    Tuning,
)

_DEFAULT_POLICY = GuestPolicy()
# Why a clone's balloon is left alone (docs/explanation/memory-templates.md, section 5).  Its pages are
# reclaimed last: KSM and the other guests' balloons give first, then the cgroups at SWAP.
CLONE_HELD = ("started from a memory template: inflating its balloon would punch holes in the shared "
              "template file on QEMU 7.2")


def step(host: HostStats, guests: Sequence[GuestStats], policies: Mapping[str, GuestPolicy],
         history: History, tuning: Tuning) -> tuple[Actions, History]:
    """One period: observe, decide, remember.  Returns the actions and the next history."""
    observed = observe(history, host, guests, tuning)
    actions = decide(host, guests, policies, observed, tuning)
    return actions, remember(observed, host, guests, actions, tuning)


# ------------------------------------------------------------------------------------- observe


def observe(history: History, host: HostStats, guests: Sequence[GuestStats], tuning: Tuning) -> History:
    """Fold one sample per guest into the history: working-set EWMAs and major-fault deltas."""
    updated = []
    for g in guests:
        old = history.guest(g.instance_id)
        used = g.used_estimate()
        measured = used is not None
        if used is None:  # no guest stats yet: assume it uses what it has
            used = g.balloon_actual if old.samples == 0 else old.wss_now
        if old.samples == 0 or (measured and not old.measured):  # the first real sample replaces the guess
            fast = slow = float(used)
        else:
            fast = old.wss_fast + tuning.wss_fast_alpha * (used - old.wss_fast)
            slow = old.wss_slow + tuning.wss_slow_alpha * (used - old.wss_slow)
        delta = 0
        if g.major_faults is not None and old.major_faults is not None:
            delta = max(0, g.major_faults - old.major_faults)
        moved = g.balloon_actual - old.last_actual if old.last_actual is not None else 0
        updated.append((g.instance_id, replace(
            old, wss_fast=fast, wss_slow=slow, wss_now=used, major_faults=g.major_faults,
            major_faults_delta=delta, samples=old.samples + 1, last_actual=g.balloon_actual, actual_delta=moved,
            measured=old.measured or measured)))
    return replace(history, tick=history.tick + 1, guests=tuple(updated))


def working_set(history: GuestHistory) -> int:
    """ESX's estimate: the max of the current sample and a fast and a slow EWMA (rises fast, falls slowly)."""
    return int(max(history.wss_now, history.wss_fast, history.wss_slow))


# ------------------------------------------------------------------------------------- levels


def _thresholds(tuning: Tuning) -> dict[PressureLevel, float]:
    return {PressureLevel.KSM: tuning.ksm_free_fraction, PressureLevel.BALLOON: tuning.balloon_free_fraction,
            PressureLevel.SWAP: tuning.swap_free_fraction}


def pressure_level(host: HostStats, previous: PressureLevel, tuning: Tuning) -> tuple[PressureLevel, str]:
    """The host's level from its free fraction (budget or MemAvailable) and PSI, with hysteresis.

    A level is entered as soon as its threshold is crossed, and left one step at a time, only once
    the free fraction is ``level_hysteresis`` above the threshold of the level being left.
    """
    free = host.headroom / host.capacity if host.capacity > 0 else 0.0
    thresholds = _thresholds(tuning)
    raw = PressureLevel.NONE
    for level, threshold in thresholds.items():
        if free < threshold:
            raw = level
    why = f"free {free:.1%} of {host.capacity >> 20} MiB"
    if host.psi_some_avg10 >= tuning.psi_balloon_some and raw < PressureLevel.BALLOON:
        raw, why = PressureLevel.BALLOON, f"{why}; PSI some {host.psi_some_avg10:.1f}%"
    if host.psi_full_avg10 >= tuning.psi_swap_full:
        raw, why = PressureLevel.SWAP, f"{why}; PSI full {host.psi_full_avg10:.1f}%"
    level = raw
    if raw < previous:
        if free >= thresholds[previous] + tuning.level_hysteresis:
            level = PressureLevel(max(raw, previous - 1))
        else:
            level, why = previous, f"{why}; holding {previous.name} (hysteresis)"
    if tuning.force_level is not None and level < tuning.force_level:
        level, why = tuning.force_level, f"{why}; forced {tuning.force_level.name}"
    return level, why


# ------------------------------------------------------------------------------------- allocation


def entitlements(pool: int, shares: Sequence[int], active: Sequence[int], floors: Sequence[int],
                 ceilings: Sequence[int], idle_tax: float) -> list[int]:
    """Split ``pool`` bytes among guests by ESX's adjusted shares-per-page with an idle-memory tax.

    Guest i's price of a page at allocation P is rho_i = S_i / (P * (f + k * (1 - f))) with f = A_i / P
    the active fraction and k = 1 / (1 - tax) the cost of an idle page, i.e. S_i / (A_i + k (P - A_i)).
    Min-funding revocation takes from the lowest price until prices are equal, so at the optimum
    P_i = A_i + (S_i t - A_i) / k for one common t, clamped to [floor_i, ceiling_i].  ``t`` is found
    by bisection so that the clamped allocations add up to ``pool``.
    """
    count = len(shares)
    if count == 0:
        return []
    if sum(floors) >= pool:
        return list(floors)
    if sum(ceilings) <= pool:
        return list(ceilings)
    k = 1.0 / (1.0 - min(max(idle_tax, 0.0), 0.99))

    def alloc(t: float) -> list[float]:
        out = []
        for i in range(count):
            p = active[i] + (shares[i] * t - active[i]) / k
            out.append(min(max(p, floors[i]), ceilings[i]))
        return out

    lo, hi = 0.0, 1.0
    while sum(alloc(hi)) < pool and hi < 1e30:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if sum(alloc(mid)) < pool:
            lo = mid
        else:
            hi = mid
    return [int(p) for p in alloc(lo)]


def _ceiling(g: GuestStats, pol: GuestPolicy) -> int:
    """A guest's most: its configured RAM, or its limit (ESX max) when lower."""
    return min(g.configured, pol.limit_bytes) if pol.limit_bytes is not None else g.configured


def _floor(ws: int, pol: GuestPolicy, ceiling: int, tuning: Tuning) -> int:
    """Never balloon below: working set + headroom, the reservation (ESX min) and ``min_guest_bytes``."""
    headroom = max(tuning.min_headroom_bytes, int(tuning.headroom_fraction * ws))
    return min(ceiling, max(pol.reservation_bytes, ws + headroom, tuning.min_guest_bytes))


def _clone_floor(g: GuestStats, floor: int, ceiling: int) -> int:
    """A clone's balloon never inflates (its floor is what it has now); it may deflate (grow back)."""
    return floor if g.template is None else max(floor, min(g.balloon_actual, ceiling))


def _step_limit(configured: int, tuning: Tuning) -> int:
    return int(min(tuning.max_step_bytes, max(tuning.min_step_bytes, tuning.max_step_fraction * configured)))


def _guest_pressure(g: GuestStats, gh: GuestHistory, tuning: Tuning) -> str | None:
    if g.guest_available is not None and g.guest_available < tuning.guest_low_free_fraction * g.balloon_actual:
        return f"guest available {g.guest_available >> 20} MiB"
    if gh.major_faults_delta >= tuning.major_faults_per_period:
        return f"{gh.major_faults_delta} major faults in a period"
    # deflate-on-oom: actual went *up* past what we asked for (a balloon still on its way down to a
    # lower target is not a deflation)
    if (gh.last_target is not None and g.balloon_actual > gh.last_target + tuning.min_change_bytes
            and gh.actual_delta > tuning.min_change_bytes):
        return "balloon deflated on its own (deflate-on-oom)"
    return None


# ------------------------------------------------------------------------------------- decide


def decide(host: HostStats, guests: Sequence[GuestStats], policies: Mapping[str, GuestPolicy],
           history: History, tuning: Tuning) -> Actions:
    """Decide balloon targets, cgroup settings, KSM knobs and per-VM page-sharing/THP flags."""
    level, why = pressure_level(host, history.level, tuning)
    # A spike (SWAP) is answered until the critical free target is back, not just until SWAP is left:
    # the hysteresis bands alone would stop reclaiming at 12 % free.
    free = host.headroom / host.capacity if host.capacity > 0 else 0.0
    critical = level >= PressureLevel.SWAP or (history.spike and free < tuning.critical_target_free_fraction)
    if critical and level < PressureLevel.BALLOON:
        level, why = PressureLevel.BALLOON, f"{why}; spike until {tuning.critical_target_free_fraction:.0%} free"
    reasons = [f"level {level.name}: {why}"]
    pols = [policies.get(g.instance_id, _DEFAULT_POLICY) for g in guests]
    hists = [history.guest(g.instance_id) for g in guests]
    ceilings, floors, actives = [], [], []
    for g, pol, gh in zip(guests, pols, hists, strict=True):
        ceiling = _ceiling(g, pol)
        ws = min(working_set(gh), g.configured) if gh.samples else g.balloon_actual
        floor = _floor(ws, pol, ceiling, tuning)
        if g.template is not None and level >= PressureLevel.BALLOON and floor < min(g.balloon_actual, ceiling):
            reasons.append(f"{g.instance_id}: balloon held at {g.balloon_actual >> 20} MiB: {CLONE_HELD}")
        ceilings.append(ceiling)
        floors.append(_clone_floor(g, floor, ceiling))
        actives.append(min(ws, g.balloon_actual))

    unbacked = [_unbacked(g, tuning) for g in guests]
    if level >= PressureLevel.BALLOON:
        # Only backed guest memory can be handed back: free pages the guest already reported cost nothing.
        target_free = tuning.critical_target_free_fraction if critical else tuning.target_free_fraction
        backed = sum(g.balloon_actual - u for g, u in zip(guests, unbacked, strict=True))
        pool = backed + host.headroom - int(target_free * host.capacity)
        entitled = entitlements(max(pool, 0), [p.shares for p in pols], actives, floors, ceilings,
                                tuning.idle_tax)
        reasons.append(f"pool {max(pool, 0) >> 20} MiB for {len(guests)} guests (free target {target_free:.0%})")
        if critical:
            reasons.append(f"spike: steps up to {tuning.fast_reclaim_fraction:.0%} of slack, "
                           f"every {tuning.spike_period:g}s")
    else:
        entitled = list(ceilings)

    decisions = []
    for i, (g, pol, gh) in enumerate(zip(guests, pols, hists, strict=True)):
        current, ceiling, floor = g.balloon_actual, ceilings[i], floors[i]
        if level == PressureLevel.NONE:
            desired = ceiling
        elif level == PressureLevel.KSM:
            desired = min(max(current, floor), ceiling)  # hold
        else:
            desired = entitled[i]
        pressure = _guest_pressure(g, gh, tuning)
        recently = pressure is not None or gh.pressured_until >= history.tick
        limit = _step_limit(g.configured, tuning)
        if pressure is not None:
            boost = max(int(tuning.fast_deflate_fraction * g.configured), floor - current)
            target = min(ceiling, max(desired, current + boost))
            reasons.append(f"{g.instance_id}: fast deflate ({pressure})")
        elif desired > current:
            target = max(min(desired, current + limit), floor)  # below the floor: straight up to it
        elif recently:
            target = current  # no inflation right after the guest was short of memory
        else:
            down = limit
            if critical:  # a spike: large but bounded steps (a quarter of the backed slack per period)
                down = max(limit, int(tuning.fast_reclaim_fraction * max(0, current - unbacked[i] - floor)))
            target = max(desired, current - unbacked[i] - down)  # reported free pages are swallowed first
        target = min(max(target, min(floor, ceiling)), ceiling) if pressure is None else target
        if g.template is not None:
            target = max(target, current)  # even under a limit below its size: deflating only
        send = abs(target - current) >= tuning.min_change_bytes and target != gh.last_target
        decisions.append(GuestDecision(
            instance_id=g.instance_id, target=target, send=send, entitlement=entitled[i], floor=floor,
            ceiling=ceiling, working_set=actives[i] if gh.samples else current, pressured=recently,
            cgroup=_cgroup(g, level, target, floor, entitled[i], actives[i], host, tuning),
            page_sharing=pol.page_sharing, thp=_thp(pol, level)))

    ksm, ksm_why = _ksm(host, guests, pols, hists, history, level, tuning)
    if ksm_why:
        reasons.append(ksm_why)
    return Actions(level=level, guests=tuple(decisions), ksm=ksm, reasons=tuple(reasons),
                   period=min(tuning.spike_period, tuning.period) if critical else tuning.period, spike=critical)


def _unbacked(g: GuestStats, tuning: Tuning) -> int:
    """Guest RAM that is not resident on the host: the guest's free pages, with free page reporting."""
    if not tuning.free_page_reporting or g.guest_free is None:
        return 0
    return max(0, min(g.guest_free, g.balloon_actual))


# ------------------------------------------------------------------------------------- admission


@dataclass(frozen=True, kw_only=True)
class Room:
    """What one more guest may count on here, and where the number comes from (all bytes)."""

    headroom: int  # capacity - usage: free now, after KSM and ballooning
    reclaimable: int  # what ballooning could still hand back: backed memory above every guest's floor
    regrowth: int  # working set the guests used recently above what they use now
    reserve: int  # admission_free_fraction of the capacity, never handed out
    blocked: str | None = None  # why nothing may start now, whatever the numbers say
    short: int = 0  # guests short of memory lately (they lend nothing; their balloons count as regrowth)

    @property
    def room(self) -> int:
        return self.headroom + self.reclaimable - self.regrowth - self.reserve

    def explain(self) -> str:
        short = f" ({self.short} guests short of memory)" if self.short else ""
        return (f"headroom {self.headroom >> 20} MiB + reclaimable {self.reclaimable >> 20} MiB "
                f"- regrowth {self.regrowth >> 20} MiB{short} - reserve {self.reserve >> 20} MiB "
                f"= room {self.room >> 20} MiB")


def admission_room(host: HostStats, guests: Sequence[GuestStats], policies: Mapping[str, GuestPolicy],
                   history: History, tuning: Tuning) -> Room:
    """The room for new guests: the number behind the scheduler's ObservedMemoryFilter.

    Free memory now, plus what the balloons could take back without pushing any guest below its
    floor (working set + headroom, its reservation, ``min_guest_bytes``) -- ESX admits against
    reservations for the same reason: idle page cache is memory the host can have on demand -- minus
    the working set the guests used recently and may take again, minus a reserve that keeps the host
    out of the SWAP level.  A guest that was short of memory lately lends nothing and may take back
    everything its balloon holds (its full size is held back as regrowth); nothing is admitted at
    SWAP level.  A guest's shortness alone does not block admission: a 64 MiB guest short of memory
    inside itself says nothing about a host with gigabytes free, and blocking on it let one booting
    guest refuse every new server on the host.
    """
    reclaimable = growth = 0
    pressured = 0
    for g in guests:
        gh = history.guest(g.instance_id)
        if gh.measured:
            growth += max(0, working_set(gh) - gh.wss_now)
        if gh.pressured_until >= history.tick:
            pressured += 1
            growth += max(0, g.configured - g.balloon_actual)  # it deflates to its full size
            continue
        if not gh.measured:
            continue  # a booting guest: nothing known, nothing lent
        if g.template is not None:
            continue  # a clone's balloon never inflates: it lends nothing
        pol = policies.get(g.instance_id, _DEFAULT_POLICY)
        floor = _floor(min(working_set(gh), g.configured), pol, _ceiling(g, pol), tuning)
        reclaimable += max(0, g.balloon_actual - _unbacked(g, tuning) - floor)
    blocked = f"level {history.level.name}" if history.level >= PressureLevel.SWAP else None
    return Room(headroom=host.headroom, reclaimable=reclaimable, regrowth=growth,
                reserve=int(tuning.admission_free_fraction * host.capacity), blocked=blocked,
                short=pressured)


def expected_footprint(guests: Sequence[GuestStats], next_bytes: int, tuning: Tuning,
                       template: str | None = None) -> int:
    """What a new guest of ``next_bytes`` is expected to cost the host before KSM has merged it: the
    largest footprint (RSS or cgroup usage) of the guests already here, at most its RAM + overhead.

    A new guest that starts from the memory ``template`` is expected to cost what its clones here
    cost, when there are any: it maps the same template and boots nothing.
    """
    ceiling = next_bytes + tuning.qemu_overhead_bytes
    alike = [g for g in guests if template is not None and g.template == template] or guests
    largest = max((own_footprint(g) for g in alike), default=0)
    return min(ceiling, largest) if largest > 0 else ceiling


def own_footprint(g: GuestStats) -> int:
    """A guest's RSS or cgroup usage, whichever is larger; for a clone, its anonymous memory instead of
    its RSS: the rest of that is the template's page cache, which is counted once for the host."""
    resident = g.anonymous if g.template is not None and g.anonymous is not None else g.rss
    return max(resident, g.cgroup_usage or 0)


def with_claims(host: HostStats, claimed: int) -> HostStats:
    """``host`` with ``claimed`` bytes counted as used (the budget's usage, else MemAvailable): room
    reserved for guests about to start, or a demand announced before it arrives."""
    if claimed <= 0:
        return host
    if host.budget_limit is not None and host.budget_usage is not None:
        return replace(host, budget_usage=host.budget_usage + claimed)
    return replace(host, available=max(0, host.available - claimed), free=max(0, host.free - claimed))


def room_made(host: HostStats, need: int, tuning: Tuning) -> bool:
    """True when ``need`` bytes fit the free memory now and leave the admission reserve free."""
    return host.headroom - need >= int(tuning.admission_free_fraction * host.capacity)


def admission(host: HostStats, guests: Sequence[GuestStats], history: History, next_bytes: int,
              tuning: Tuning, policies: Mapping[str, GuestPolicy] | None = None,
              template: str | None = None) -> tuple[bool, str]:
    """May one more guest of ``next_bytes`` start here?  The scheduler's ObservedMemoryFilter on one host.

    The room (see ``admission_room``) must hold the new guest's expected footprint
    (``expected_footprint``).  Room that is still page cache must be made before the guest starts:
    see ``MemoryManager.room_for``, which reserves the footprint so that the policy reclaims first.
    """
    room = admission_room(host, guests, policies or {}, history, tuning)
    expected = expected_footprint(guests, next_bytes, tuning, template)
    spare = room.room - expected
    why = f"{room.explain()} - next {expected >> 20} MiB = {spare >> 20} MiB"
    if room.blocked:
        return False, f"{room.blocked}; {why}"
    return spare >= 0, why


def _thp(pol: GuestPolicy, level: PressureLevel) -> bool:
    """THP doubles a tiny guest's footprint and hides pages from KSM: off where sharing is allowed."""
    if pol.thp is not None:
        return pol.thp
    return not pol.page_sharing and level == PressureLevel.NONE


def _cgroup(g: GuestStats, level: PressureLevel, target: int, floor: int, entitled: int, active: int,
            host: HostStats, tuning: Tuning) -> CgroupSetting:
    idle = g.balloon_actual > 0 and active / g.balloon_actual < 0.5
    swappiness = tuning.idle_swappiness if idle else tuning.active_swappiness
    if level < PressureLevel.BALLOON:
        return CgroupSetting(swappiness=swappiness)
    soft = target + tuning.qemu_overhead_bytes
    if level < PressureLevel.SWAP or g.cgroup_usage is None:
        return CgroupSetting(soft_limit=soft, swappiness=swappiness)
    # Squeeze towards the entitlement, a bounded step at a time, and only as far as free swap can take
    # the excess: a v1/v2 limit without swap behind it means an OOM kill, never a slowdown.
    goal = max(floor, entitled) + tuning.qemu_overhead_bytes
    limit = max(goal, g.cgroup_usage - _step_limit(g.configured, tuning))
    excess = g.cgroup_usage - limit
    if excess > 0 and host.swap_free < excess + 64 * 1024 * 1024:
        return CgroupSetting(soft_limit=soft, swappiness=swappiness)
    if limit >= g.cgroup_usage and g.cgroup_limit is None:
        return CgroupSetting(soft_limit=soft, swappiness=swappiness)
    return CgroupSetting(limit=limit, soft_limit=soft, swappiness=swappiness)


def _arrived(hists: Sequence[GuestHistory], pols: Sequence[GuestPolicy]) -> bool:
    """A guest that may share pages was seen for the first time this period."""
    return any(h.samples == 1 and p.page_sharing for h, p in zip(hists, pols, strict=True))


def _ksm(host: HostStats, guests: Sequence[GuestStats], pols: Sequence[GuestPolicy], hists: Sequence[GuestHistory],
         history: History, level: PressureLevel, tuning: Tuning) -> tuple[KsmSettings | None, str]:
    """ksmtuned/MoM, scaled to the mergeable memory instead of MemTotal, and stopped when useless.

    When a guest that may share arrives, KSM scans at ``ksm_max_pages`` for ``ksm_boost_periods``
    (ksmtuned's boost): a booting guest's kernel and initramfs pages are the best duplicates there are,
    and merging them within the first seconds is what makes room for the next guest.
    """
    ksm = host.ksm
    if tuning.ksm_mode == "never" or not ksm.available:
        return None, ""
    sharable = [g for g, p in zip(guests, pols, strict=True) if p.page_sharing]
    if not sharable:
        return KsmSettings(run=0, pages_to_scan=ksm.pages_to_scan, sleep_millisecs=ksm.sleep_millisecs), ""
    arrived = _arrived(hists, pols)
    if arrived or history.tick <= history.ksm_boost_until:
        until = history.tick + tuning.ksm_boost_periods if arrived else history.ksm_boost_until
        pages, why = _cpu_backoff(tuning.ksm_max_pages, host, level, tuning)
        return (KsmSettings(run=1, pages_to_scan=pages, sleep_millisecs=tuning.ksm_sleep_ms),
                f"ksm boost: a guest arrived, {pages} pages / {tuning.ksm_sleep_ms} ms until period {until}"
                + (f"; {why}" if why else ""))
    mergeable_pages = sum(max(g.rss, 0) for g in sharable) // PAGE
    committed = sum(g.configured for g in guests)
    overcommitted = committed + tuning.ksm_free_fraction * host.capacity > host.capacity
    wanted = tuning.ksm_mode == "always" or level >= PressureLevel.KSM or overcommitted
    per_wake = mergeable_pages * tuning.ksm_sleep_ms / (1000.0 * tuning.ksm_target_scan_seconds)
    pages = int(min(tuning.ksm_max_pages, max(tuning.ksm_min_pages, per_wake)))
    if level >= PressureLevel.BALLOON:
        pages = min(tuning.ksm_max_pages, pages * 2)
    useless = history.tick - history.ksm_last_gain_tick >= tuning.ksm_useless_periods
    if useless and ksm.run == 1 and level < PressureLevel.BALLOON:
        pages = max(tuning.ksm_min_pages, min(pages, (history.ksm_pages_to_scan or pages) // 2))
        if ksm.pages_sharing < tuning.ksm_gain_pages and tuning.ksm_mode != "always":
            wanted = False  # scanning finds nothing: stop (merged pages stay merged with run=0)
    pages, why = _cpu_backoff(pages, host, level, tuning)
    return (KsmSettings(run=1 if wanted else 0, pages_to_scan=pages, sleep_millisecs=tuning.ksm_sleep_ms),
            why if wanted else "")


def _cpu_backoff(pages: int, host: HostStats, level: PressureLevel, tuning: Tuning) -> tuple[int, str]:
    """Fewer pages per wake while the vCPUs wait for a CPU, unless memory is short (then merging wins)."""
    psi = host.cpu_psi_some_avg10
    if psi < tuning.ksm_cpu_psi_backoff or level >= PressureLevel.BALLOON or pages <= tuning.ksm_min_pages:
        return pages, ""
    slower = max(tuning.ksm_min_pages, pages // tuning.ksm_cpu_backoff_divisor)
    return slower, (f"ksm backoff: CPU PSI some {psi:.0f}% >= {tuning.ksm_cpu_psi_backoff:.0f}%, "
                    f"{pages} -> {slower} pages")


# ------------------------------------------------------------------------------------- remember


def remember(history: History, host: HostStats, guests: Sequence[GuestStats], actions: Actions,
             tuning: Tuning) -> History:
    """Store the level, the targets sent, pressure hold-offs and KSM progress for the next period."""
    updated = []
    by_id = {d.instance_id: d for d in actions.guests}
    for key, gh in history.guests:
        d = by_id.get(key)
        if d is None:
            continue
        last = d.target if d.send else gh.last_target
        if last is None:
            last = next((g.balloon_actual for g in guests if g.instance_id == key), None)
        until = gh.pressured_until
        if d.pressured and until < history.tick:
            until = history.tick + tuning.pressure_hold_periods
        updated.append((key, replace(gh, last_target=last, pressured_until=until)))
    ksm = host.ksm
    gain_tick = history.ksm_last_gain_tick
    starting = ksm.run == 0 and actions.ksm is not None and actions.ksm.run == 1
    if ksm.pages_sharing - history.ksm_pages_sharing >= tuning.ksm_gain_pages or starting:
        gain_tick = history.tick
    boost_until = history.ksm_boost_until
    if actions.ksm is not None and any(gh.samples == 1 and by_id[key].page_sharing
                                       for key, gh in history.guests if key in by_id):
        boost_until = history.tick + tuning.ksm_boost_periods
    return replace(history, level=actions.level, guests=tuple(updated), ksm_pages_sharing=ksm.pages_sharing,
                   ksm_last_gain_tick=gain_tick, ksm_boost_until=boost_until, spike=actions.spike,
                   ksm_pages_to_scan=actions.ksm.pages_to_scan if actions.ksm else history.ksm_pages_to_scan)

