"""The memory policy is a pure function: checked as tables of host/guest snapshots -> actions."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from yunstack.compute.driver import MemoryBacking
from yunstack.memory import policy
from yunstack.memory.manager import attribute_sharing, memory_backing
from yunstack.memory.model import (
    MIB,
    Actions,
    GuestPolicy,
    GuestStats,
    History,
    HostStats,
    KsmStats,
    PressureLevel,
    Tuning,
)

GIB = 1024 * MIB
KERNEL = 16 * MIB  # what the guest kernel keeps out of MemTotal


def host(free: float = 0.5, *, total: int = 4 * GIB, psi_some: float = 0.0, psi_full: float = 0.0,
         ksm: KsmStats | None = None, swap_free: int = 0, cpu_psi: float = 0.0) -> HostStats:
    return HostStats(timestamp=0.0, total=total, free=int(free * total), available=int(free * total),
                     psi_some_avg10=psi_some, psi_full_avg10=psi_full, ksm=ksm or KsmStats(),
                     cpu_psi_some_avg10=cpu_psi,
                     swap_total=swap_free, swap_free=swap_free)


def guest(iid: str, *, configured: int = 256 * MIB, actual: int | None = None, used: int = 64 * MIB,
          major: int = 0, rss: int | None = None, merging: int | None = None,
          cgroup_usage: int | None = None, free: int = 0, template: str | None = None) -> GuestStats:
    """A guest using ``used``; ``free`` of its available memory is free (reported) pages, the rest cache."""
    actual = configured if actual is None else actual
    total = configured - KERNEL
    ballooned = configured - actual
    available = max(0, total - used - ballooned)  # deflate-on-oom: ballooned pages count as used
    return GuestStats(instance_id=iid, timestamp=0.0, configured=configured, balloon_actual=actual,
                      guest_total=total, guest_free=min(free, available), guest_available=available,
                      major_faults=major,
                      rss=rss if rss is not None else used + 60 * MIB, ksm_merging_pages=merging,
                      cgroup_usage=cgroup_usage, template=template)


def simulate(h: HostStats, guests: list[GuestStats], ticks: int, *, tuning: Tuning | None = None,
             policies: dict[str, GuestPolicy] | None = None) -> tuple[list[Actions], list[GuestStats]]:
    """Run the policy ``ticks`` times; balloons reach their targets at once, as they do in ~0.2 s."""
    tuning = tuning or Tuning()
    history = History()
    log = []
    for _ in range(ticks):
        actions, history = policy.step(h, guests, policies or {}, history, tuning)
        log.append(actions)
        guests = [guest(g.instance_id, configured=g.configured, actual=actions.guest(g.instance_id).target,
                        used=g.used_estimate() or 0, major=g.major_faults or 0, template=g.template)
                  for g in guests]
    return log, guests


BALLOON = Tuning(force_level=PressureLevel.BALLOON)


# ------------------------------------------------------------------------------------- levels


@pytest.mark.parametrize(
    ("free", "psi_some", "psi_full", "previous", "expected"),
    [
        pytest.param(0.50, 0, 0, PressureLevel.NONE, PressureLevel.NONE, id="plenty-is-none"),
        pytest.param(0.15, 0, 0, PressureLevel.NONE, PressureLevel.KSM, id="below-20pct-is-ksm"),
        pytest.param(0.08, 0, 0, PressureLevel.NONE, PressureLevel.BALLOON, id="below-10pct-is-balloon"),
        pytest.param(0.03, 0, 0, PressureLevel.NONE, PressureLevel.SWAP, id="below-4pct-is-swap"),
        pytest.param(0.50, 15, 0, PressureLevel.NONE, PressureLevel.BALLOON, id="psi-some-forces-balloon"),
        pytest.param(0.50, 15, 12, PressureLevel.NONE, PressureLevel.SWAP, id="psi-full-forces-swap"),
        pytest.param(0.11, 0, 0, PressureLevel.BALLOON, PressureLevel.BALLOON, id="hysteresis-holds-balloon"),
        pytest.param(0.13, 0, 0, PressureLevel.BALLOON, PressureLevel.KSM, id="leaves-balloon-above-12pct"),
        pytest.param(0.60, 0, 0, PressureLevel.SWAP, PressureLevel.BALLOON, id="leaves-one-level-at-a-time"),
        pytest.param(0.21, 0, 0, PressureLevel.KSM, PressureLevel.KSM, id="hysteresis-holds-ksm"),
    ],
)
def test_pressure_level_comes_from_free_memory_and_psi_with_hysteresis(free, psi_some, psi_full, previous,
                                                                        expected) -> None:
    level, _ = policy.pressure_level(host(free, psi_some=psi_some, psi_full=psi_full), previous, Tuning())
    assert level == expected


def test_a_budget_cgroup_is_the_capacity_when_configured() -> None:
    h = replace(host(0.9), budget_limit=1 * GIB, budget_usage=950 * MIB)
    assert policy.pressure_level(h, PressureLevel.NONE, Tuning())[0] == PressureLevel.BALLOON


# ------------------------------------------------------------------------------------- allocation


@pytest.mark.parametrize(
    ("tax", "pool", "shares", "active", "expected"),
    [
        # ESX paper Fig. 7 shape: equal shares, one idle and one active 256 MiB VM
        pytest.param(0.0, 340, (1000, 1000), (20, 230), (170, 170), id="no-tax-is-pure-shares"),
        pytest.param(0.75, 340, (1000, 1000), (20, 230), (91, 249), id="idle-tax-moves-memory-to-the-active"),
        pytest.param(0.0, 300, (2000, 1000), (100, 100), (200, 100), id="shares-split-2-to-1"),
        pytest.param(0.75, 1000, (1000, 1000), (20, 230), (256, 256), id="enough-for-all-gives-ceilings"),
        pytest.param(0.75, 100, (1000, 1000), (20, 230), (96, 96), id="too-little-gives-floors"),
    ],
)
def test_entitlements_follow_shares_and_the_idle_tax(tax, pool, shares, active, expected) -> None:
    got = policy.entitlements(pool * MIB, shares, [a * MIB for a in active], [0 * MIB, 0 * MIB] if pool > 100
                              else [96 * MIB, 96 * MIB], [256 * MIB, 256 * MIB], tax)
    assert [round(g / MIB) for g in got] == pytest.approx(list(expected), abs=1)


@pytest.mark.parametrize(
    ("guest_policy", "used", "expected_floor"),
    [
        pytest.param(GuestPolicy(), 64 * MIB, 96 * MIB, id="min-guest-size"),
        pytest.param(GuestPolicy(), 170 * MIB, 204 * MIB, id="working-set-plus-20pct-headroom"),
        pytest.param(GuestPolicy(reservation_bytes=200 * MIB), 64 * MIB, 200 * MIB, id="reservation"),
        pytest.param(GuestPolicy(limit_bytes=128 * MIB), 150 * MIB, 128 * MIB, id="limit-caps-the-floor"),
    ],
)
def test_floors_under_heavy_pressure(guest_policy, used, expected_floor) -> None:
    log, final = simulate(host(0.01), [guest("a", used=used)], 30, tuning=BALLOON, policies={"a": guest_policy})
    d = log[-1].guest("a")
    assert d.floor == expected_floor
    assert final[0].balloon_actual == expected_floor
    assert all(a.guest("a").target >= expected_floor for a in log)


def test_a_limit_is_the_ceiling_even_without_pressure() -> None:
    limited = {"a": GuestPolicy(limit_bytes=160 * MIB)}
    log, final = simulate(host(0.9), [guest("a", used=64 * MIB)], 10, policies=limited)
    assert final[0].balloon_actual == 160 * MIB
    assert max(a.guest("a").target for a in log) <= 160 * MIB


def test_the_idle_guest_gives_memory_to_the_active_one() -> None:
    h = host(0.05, total=1 * GIB)  # pool: 2 x 256 + 51 - 154 MiB = 410 MiB for the two
    log, final = simulate(h, [guest("idle", used=20 * MIB), guest("busy", used=200 * MIB)], 40)
    idle, busy = (g.balloon_actual for g in final)
    assert busy == 256 * MIB
    assert idle < 160 * MIB
    assert log[-1].level >= PressureLevel.BALLOON


# ------------------------------------------------------------------------------------- dynamics


@pytest.mark.parametrize(
    ("configured", "step"),
    [pytest.param(256 * MIB, 32 * MIB, id="256MiB-steps-32MiB"),
     pytest.param(2 * GIB, 64 * MIB, id="2GiB-steps-capped-at-64MiB"),
     pytest.param(32 * MIB, 8 * MIB, id="tiny-steps-at-least-8MiB")],
)
def test_inflation_converges_in_bounded_steps(configured, step) -> None:
    log, final = simulate(host(0.08), [guest("a", configured=configured, used=16 * MIB)], 60, tuning=BALLOON)
    targets = [configured] + [a.guest("a").target for a in log]
    assert max(prev - cur for prev, cur in itertools.pairwise(targets)) <= step
    assert final[0].balloon_actual == log[-1].guest("a").floor


@pytest.mark.parametrize(
    ("change", "why"),
    [pytest.param({"used": 230 * MIB}, "guest available", id="guest-free-low"),
     pytest.param({"major": 5000}, "major faults", id="major-faults-rising")],
)
def test_a_guest_under_pressure_is_deflated_fast(change, why) -> None:
    tuning = BALLOON
    history = History()
    g = guest("a", actual=120 * MIB, used=80 * MIB)
    _, history = policy.step(host(0.01), [g], {}, history, tuning)
    squeezed = guest("a", actual=120 * MIB, **{"used": 80 * MIB, **change})
    actions, history = policy.step(host(0.01), [squeezed], {}, history, tuning)
    d = actions.guest("a")
    assert d.send and d.pressured
    assert d.target - 120 * MIB >= 64 * MIB  # a quarter of 256 MiB at once, not a 32 MiB step
    assert any(why in r for r in actions.reasons)
    # and no inflation while the hold-off lasts, although the pressure is gone
    calm = guest("a", actual=d.target, used=80 * MIB, major=change.get("major", 0))
    for _ in range(5):
        actions, history = policy.step(host(0.01), [calm], {}, history, tuning)
        assert actions.guest("a").target >= d.target


def test_deflate_on_oom_is_noticed_and_not_fought() -> None:
    history = History()
    g = guest("a", actual=200 * MIB, used=80 * MIB)
    actions, history = policy.step(host(0.01), [g], {}, history, BALLOON)
    sent = actions.guest("a").target
    assert sent < 200 * MIB
    grew = guest("a", actual=sent + 40 * MIB, used=80 * MIB)  # the guest took pages back on OOM
    actions, _ = policy.step(host(0.01), [grew], {}, history, BALLOON)
    assert actions.guest("a").target >= sent + 40 * MIB


@pytest.mark.parametrize(
    ("free", "tuning"),
    [pytest.param(0.5, Tuning(), id="plenty"), pytest.param(0.15, Tuning(), id="ksm-hold"),
     pytest.param(0.01, BALLOON, id="balloon"), pytest.param(0.01, Tuning(force_level=PressureLevel.SWAP),
                                                             id="swap")],
)
def test_a_steady_input_gives_a_steady_output(free, tuning) -> None:
    guests = [guest("a", used=40 * MIB, actual=200 * MIB), guest("b", used=150 * MIB, actual=220 * MIB)]
    log, _ = simulate(host(free), guests, 60, tuning=tuning)
    tail = log[-20:]
    assert not any(d.send for a in tail for d in a.guests)
    assert len({tuple(d.target for d in a.guests) for a in tail}) == 1


def test_plenty_of_memory_grows_balloons_back_gradually() -> None:
    log, final = simulate(host(0.9), [guest("a", actual=100 * MIB)], 10)
    assert final[0].balloon_actual == 256 * MIB
    targets = [a.guest("a").target for a in log]
    assert targets[0] == 132 * MIB  # +32 MiB from the floor of 100 MiB's...
    assert targets[1] - targets[0] == 32 * MIB


# ------------------------------------------------------------------------------------- cgroups


def test_swap_level_squeezes_cgroups_only_with_swap_behind_them() -> None:
    g = guest("a", used=40 * MIB, actual=256 * MIB, cgroup_usage=300 * MIB)
    swap = Tuning(force_level=PressureLevel.SWAP)
    with_swap = policy.step(host(0.01, swap_free=1 * GIB), [g], {}, History(), swap)[0].guest("a")
    assert with_swap.cgroup.limit == 300 * MIB - 32 * MIB and with_swap.cgroup.swap_allowed
    without = policy.step(host(0.01, swap_free=0), [g], {}, History(), swap)[0].guest("a")
    assert without.cgroup.limit is None
    relaxed = policy.step(host(0.9), [g], {}, History(), Tuning())[0].guest("a")
    assert relaxed.cgroup.limit is None and relaxed.cgroup.soft_limit is None


@pytest.mark.parametrize(
    ("used", "swappiness"),
    [pytest.param(20 * MIB, 100, id="idle-guest-swaps-first"), pytest.param(200 * MIB, 20, id="active-guest")],
)
def test_swappiness_follows_activity(used, swappiness) -> None:
    d = policy.decide(host(0.5), [guest("a", used=used)], {}, policy.observe(History(), host(), [guest("a", used=used)],
                                                                        Tuning()), Tuning()).guest("a")
    assert d.cgroup.swappiness == swappiness


# ------------------------------------------------------------------------------------- KSM


def _seen(h: HostStats, guests: list[GuestStats]) -> History:
    """A history in which these guests arrived long ago (their KSM boost is over)."""
    history = History()
    for _ in range(Tuning().ksm_boost_periods + 2):
        _, history = policy.step(h, guests, {}, history, Tuning())
    return replace(history, ksm_last_gain_tick=history.tick)


def _ksm(h: HostStats, guests: list[GuestStats], *, tuning: Tuning | None = None,
         policies: dict[str, GuestPolicy] | None = None, history: History | None = None) -> tuple[Actions, History]:
    return policy.step(h, guests, policies or {}, history or _seen(h, guests), tuning or Tuning())


@pytest.mark.parametrize(
    ("free", "total", "count", "tuning", "run"),
    [
        pytest.param(0.9, 24 * GIB, 2, Tuning(), 0, id="plenty-and-not-overcommitted-off"),
        pytest.param(0.15, 24 * GIB, 2, Tuning(), 1, id="pressure-on"),
        pytest.param(0.9, 1 * GIB, 4, Tuning(), 1, id="overcommitted-on-like-mom"),
        pytest.param(0.9, 24 * GIB, 2, Tuning(ksm_mode="always"), 1, id="always"),
    ],
)
def test_ksm_runs_when_there_is_pressure_or_overcommit(free, total, count, tuning, run) -> None:
    actions, _ = _ksm(host(free, total=total), [guest(f"g{i}") for i in range(count)], tuning=tuning)
    assert actions.ksm is not None and actions.ksm.run == run


def test_ksm_is_left_alone_in_never_mode() -> None:
    actions, _ = _ksm(host(0.1), [guest("a")], tuning=Tuning(ksm_mode="never"))
    assert actions.ksm is None


@pytest.mark.parametrize(
    ("rss_mib", "count", "pages"),
    [pytest.param(150, 2, 153, id="2x150MiB-scanned-in-10s"),
     pytest.param(20, 1, 64, id="min-64"),
     pytest.param(2000, 16, 1250, id="max-1250")],
)
def test_ksm_scan_rate_scales_with_mergeable_memory(rss_mib, count, pages) -> None:
    guests = [guest(f"g{i}", rss=rss_mib * MIB) for i in range(count)]
    actions, _ = _ksm(host(0.15), guests)
    assert actions.ksm is not None
    assert actions.ksm.pages_to_scan == pages and actions.ksm.sleep_millisecs == 20


def test_ksm_stops_when_scanning_finds_nothing_and_slows_when_gains_stop() -> None:
    h = host(0.15, ksm=KsmStats(run=1, pages_sharing=0))
    history = History()
    for _ in range(40):
        actions, history = _ksm(h, [guest("a", rss=200 * MIB)], history=history)
    assert actions.ksm is not None and actions.ksm.run == 0
    merged = host(0.15, ksm=KsmStats(run=1, pages_sharing=20000))
    history = History()
    for _ in range(40):
        actions, history = _ksm(merged, [guest("a", rss=1000 * MIB)], history=history)
    assert actions.ksm is not None and actions.ksm.run == 1 and actions.ksm.pages_to_scan == 64


# ------------------------------------------------------------------------------------- opt-out, THP


def test_a_guest_that_opts_out_of_page_sharing_is_never_mergeable() -> None:
    policies = {"secret": GuestPolicy(page_sharing=False)}
    actions, _ = _ksm(host(0.15), [guest("secret")], policies=policies)
    d = actions.guest("secret")
    assert d.page_sharing is False
    assert actions.ksm is not None and actions.ksm.run == 0  # nobody may share: KSM off
    assert memory_backing(policies["secret"]) == MemoryBacking(page_sharing=False, thp=True)


@pytest.mark.parametrize(
    ("guest_policy", "free", "thp"),
    [pytest.param(GuestPolicy(), 0.9, False, id="sharing-allowed-thp-off"),
     pytest.param(GuestPolicy(page_sharing=False), 0.9, True, id="opted-out-and-plenty-thp-on"),
     pytest.param(GuestPolicy(page_sharing=False), 0.15, False, id="opted-out-under-pressure-thp-off"),
     pytest.param(GuestPolicy(thp=True), 0.15, True, id="explicit-thp-wins")],
)
def test_thp_is_decided_per_vm(guest_policy, free, thp) -> None:
    actions, _ = _ksm(host(free), [guest("a")], policies={"a": guest_policy})
    assert actions.guest("a").thp is thp


@pytest.mark.parametrize(
    ("merging", "method", "shared_a", "shared_b"),
    [pytest.param((3000, 1000), "ksm_stat", 3000 * 4096 * 3 // 4, 1000 * 4096 * 3 // 4, id="per-process-ksm-stat"),
     pytest.param((None, None), "proportional-rss", 3000 * 4096, 0, id="proportional-and-opt-out-gets-none")],
)
def test_ksm_savings_are_attributed_per_vm(merging, method, shared_a, shared_b) -> None:
    h = host(0.5, ksm=KsmStats(pages_shared=1000, pages_sharing=3000))
    guests = [guest("a", merging=merging[0]), guest("b", merging=merging[1])]
    shares, how = attribute_sharing(h, guests, {"b": GuestPolicy(page_sharing=False)})
    assert how == method
    assert shares == {"a": shared_a, "b": shared_b}


# ------------------------------------------------------------------------------------- spikes, FPR


@pytest.mark.parametrize(
    ("free", "guest_free", "first_target", "period"),
    [
        # BALLOON (8 % free): the normal bounded step, 32 MiB for a 256 MiB guest
        pytest.param(0.08, 0, 224, 2.0, id="balloon-level-bounded-step"),
        # SWAP (1 % free), a spike: a quarter of the slack (256 - floor 96 = 160 -> 40 MiB), every 1 s
        pytest.param(0.01, 0, 216, 1.0, id="spike-quarter-of-slack-every-second"),
        # free page reporting: 50 MiB of reported free pages are swallowed at once, then the step
        pytest.param(0.08, 50, 174, 2.0, id="reported-free-pages-first-then-the-step"),
        pytest.param(0.01, 50, 174, 1.0, id="spike-slack-is-backed-memory-only"),  # 110 MiB slack: 32
    ],
)
def test_reclaim_speed_follows_the_pressure(free, guest_free, first_target, period) -> None:
    g = guest("a", used=40 * MIB, free=guest_free * MIB)
    actions, _ = policy.step(host(free), [g], {}, History(), Tuning())
    assert actions.guest("a").target == first_target * MIB
    assert actions.period == period


def test_free_pages_the_guest_reported_do_not_count_in_the_pool() -> None:
    # 1 GiB host with 8 % free: the pool is what is backed (actual - guest free) + headroom - 15 %.
    h = host(0.08, total=1 * GIB)
    reported = [guest(f"g{i}", used=40 * MIB, free=150 * MIB) for i in range(2)]
    cached = [guest(f"g{i}", used=40 * MIB, free=0) for i in range(2)]
    with_fpr = policy.step(h, reported, {}, History(), Tuning())[0]
    without = policy.step(h, reported, {}, History(), Tuning(free_page_reporting=False))[0]
    assert sum(d.entitlement for d in with_fpr.guests) < sum(d.entitlement for d in without.guests)
    assert sum(d.entitlement for d in policy.step(h, cached, {}, History(), Tuning())[0].guests) == sum(
        d.entitlement for d in without.guests)


def test_a_spike_reclaims_most_of_the_slack_within_a_few_periods() -> None:
    log, final = simulate(host(0.01), [guest(f"g{i}", configured=384 * MIB, used=60 * MIB) for i in range(8)], 6)
    assert all(a.period == 1.0 for a in log)
    floor = log[-1].guests[0].floor
    # 0.75 ** 6 of the slack is left at most after six 1 s periods
    assert all(g.balloon_actual - floor <= 0.75 ** 6 * (384 * MIB - floor) + 8 * MIB for g in final)


# ------------------------------------------------------------------------------------- KSM boost


@pytest.mark.parametrize(
    ("ticks_since_arrival", "run", "pages"),
    [pytest.param(0, 1, 1250, id="arrival-boosts-to-max-even-without-overcommit"),
     pytest.param(10, 1, 1250, id="boost-lasts"),
     pytest.param(16, 0, 64, id="boost-over-back-to-ksmtuned-rules")],
)
def test_ksm_boosts_when_a_guest_arrives(ticks_since_arrival, run, pages) -> None:
    h = host(0.9, total=24 * GIB)  # plenty, not overcommitted: without an arrival KSM stays off
    history = History()
    for _ in range(ticks_since_arrival + 1):
        actions, history = policy.step(h, [guest("a", rss=100 * MIB)], {}, history, Tuning())
    assert actions.ksm is not None and (actions.ksm.run, actions.ksm.pages_to_scan) == (run, pages)
    assert any("ksm boost" in r for r in actions.reasons) is (run == 1)


@pytest.mark.parametrize(
    ("free", "cpu_psi", "pages", "backoff"),
    [pytest.param(0.9, 0.0, 1250, False, id="idle-cpus-full-boost"),
     pytest.param(0.9, 39.0, 1250, False, id="below-threshold-full-boost"),
     pytest.param(0.9, 60.0, 312, True, id="vcpus-waiting-quarter-boost"),
     pytest.param(0.05, 60.0, 1250, False, id="memory-short-merging-wins-over-cpu")],
)
def test_ksm_backs_off_while_vcpus_wait_for_a_cpu(free, cpu_psi, pages, backoff) -> None:
    h = host(free, total=2 * GIB, cpu_psi=cpu_psi)
    actions, _ = policy.step(h, [guest("a", rss=100 * MIB)], {}, History(), Tuning())
    assert actions.ksm is not None and (actions.ksm.run, actions.ksm.pages_to_scan) == (1, pages)
    assert any("ksm backoff" in r for r in actions.reasons) is backoff


def test_ksm_backoff_applies_to_the_steady_rate_too() -> None:
    # overcommitted (2 x 256 MiB in 448 MiB) so KSM runs at ksmtuned's rate after the boost is over
    h = host(0.5, total=448 * MIB)
    gs = [guest(n, rss=200 * MIB) for n in "ab"]
    history = History()
    for _ in range(17):
        calm, history = policy.step(h, gs, {}, history, Tuning())
    busy, _ = policy.step(host(0.5, total=448 * MIB, cpu_psi=80.0), gs, {}, history, Tuning())
    assert calm.ksm is not None and busy.ksm is not None and calm.ksm.run == busy.ksm.run == 1
    assert busy.ksm.pages_to_scan == max(64, calm.ksm.pages_to_scan // 4) < calm.ksm.pages_to_scan


def test_a_guest_that_may_not_share_does_not_boost_ksm() -> None:
    actions, _ = policy.step(host(0.9, total=24 * GIB), [guest("a")], {"a": GuestPolicy(page_sharing=False)},
                             History(), Tuning())
    assert actions.ksm is not None and actions.ksm.run == 0


# ------------------------------------------------------------------------------------- admission


@pytest.mark.parametrize(
    ("free_mib", "rss_mib", "level", "admit"),
    [
        # 2 GiB capacity, reserve 5 % = 102 MiB; the next guest is expected at the largest RSS (140)
        pytest.param(400, 140, PressureLevel.NONE, True, id="fits-with-reserve"),
        pytest.param(230, 140, PressureLevel.NONE, False, id="fits-but-eats-the-reserve"),
        pytest.param(900, 900, PressureLevel.NONE, True, id="expected-capped-at-configured-plus-overhead"),
        pytest.param(2000, 140, PressureLevel.SWAP, False, id="never-at-swap-level"),
    ],
)
def test_admission_uses_the_observed_headroom(free_mib, rss_mib, level, admit) -> None:
    h = replace(host(0.9), budget_limit=2 * GIB, budget_usage=2 * GIB - free_mib * MIB)
    guests = [guest("a", rss=rss_mib * MIB, free=GIB)]  # no page cache: nothing to balloon away
    history = replace(policy.observe(History(), h, guests, Tuning()), level=level)
    ok, why = policy.admission(h, guests, history, 512 * MIB, Tuning())
    assert ok is admit
    assert "headroom" in why and "reclaimable 0 MiB" in why


@pytest.mark.parametrize(
    ("cache_mib", "measured", "pressured", "reclaimable_mib", "admit"),
    [
        # 256 MiB guest using 64 MiB (+ 16 MiB its kernel keeps): backed 80 MiB + cache, floor 96 MiB
        # (64 + 32 MiB headroom); what is backed above the floor is lent
        pytest.param(150, True, False, 134, True, id="idle-page-cache-counts"),
        pytest.param(20, True, False, 4, False, id="little-cache-little-above-the-floor"),
        pytest.param(150, False, False, 0, False, id="a-booting-guest-lends-nothing"),
        pytest.param(150, True, True, 0, False, id="a-pressured-guest-lends-nothing"),
    ],
)
def test_admission_counts_what_ballooning_could_take_back(cache_mib, measured, pressured, reclaimable_mib,
                                                           admit) -> None:
    h = replace(host(0.9), budget_limit=2 * GIB, budget_usage=2 * GIB - 230 * MIB)  # 230 < 140 + 102 reserve
    total_avail = 256 * MIB - KERNEL - 64 * MIB
    g = guest("a", rss=140 * MIB, free=total_avail - cache_mib * MIB)
    history = policy.observe(History(), h, [g], Tuning()) if measured else History()
    if pressured:
        history = replace(history, guests=tuple((k, replace(v, pressured_until=history.tick + 3))
                                                for k, v in history.guests))
    room = policy.admission_room(h, [g], {}, history, Tuning())
    assert room.reclaimable >> 20 == reclaimable_mib
    ok, why = policy.admission(h, [g], history, 256 * MIB, Tuning())
    assert ok is admit and f"reclaimable {reclaimable_mib} MiB" in why
    assert ("short of memory" in why) is pressured


def test_admission_keeps_room_for_a_working_set_that_was_just_bigger() -> None:
    h = replace(host(0.9), budget_limit=2 * GIB, budget_usage=2 * GIB - 350 * MIB)
    history = History()
    for used in (200, 200, 40):  # a bursty guest just dropped from 200 to 40 MiB
        history = policy.observe(history, h, [guest("a", used=used * MIB, rss=100 * MIB, free=GIB)], Tuning())
    now = guest("a", used=40 * MIB, rss=100 * MIB, free=GIB)
    ok, why = policy.admission(h, [now], history, 256 * MIB, Tuning())
    assert not ok and "regrowth" in why
    calm = policy.observe(History(), h, [now], Tuning())
    assert policy.admission(h, [now], calm, 256 * MIB, Tuning())[0]


def test_a_guest_short_of_memory_holds_back_what_its_balloon_holds_but_blocks_nothing_else() -> None:
    # Its shortness is inside the guest: a host with room still admits, but counts the guest's
    # way back to its full size (its balloon) as regrowth.
    roomy = replace(host(0.9), budget_limit=2 * GIB, budget_usage=GIB)
    squeezed = guest("a", used=250 * MIB, actual=256 * MIB)  # available below 5 %, balloon empty
    _, history = policy.step(roomy, [squeezed], {}, History(), Tuning())
    ok, why = policy.admission(roomy, [squeezed], history, 256 * MIB, Tuning())
    assert ok and "1 guests short of memory" in why
    tight = replace(host(0.9), budget_limit=2 * GIB, budget_usage=2 * GIB - 400 * MIB)
    ballooned = guest("a", used=120 * MIB, actual=128 * MIB)  # squeezed by its balloon: 128 MiB to give back
    _, history = policy.step(tight, [ballooned], {}, History(), Tuning())
    ok, why = policy.admission(tight, [ballooned], history, 256 * MIB, Tuning())
    assert not ok and "regrowth 128 MiB (1 guests short of memory)" in why


def test_a_balloon_still_on_its_way_down_is_not_a_deflation() -> None:
    history = History()
    g = guest("a", actual=256 * MIB, used=40 * MIB)
    actions, history = policy.step(host(0.01), [g], {}, history, Tuning())
    sent = actions.guest("a").target
    assert sent < 256 * MIB
    # one 1 s period later the guest has not inflated yet: keep going down, no fast deflate
    actions, history = policy.step(host(0.01), [g], {}, history, Tuning())
    d = actions.guest("a")
    assert not d.pressured and d.target <= sent
    assert not any("deflated on its own" in r for r in actions.reasons)


@pytest.mark.parametrize(
    ("free_after", "spike", "period"),
    [pytest.param(0.13, True, 1.0, id="below-20pct-the-spike-goes-on"),
     pytest.param(0.21, False, 2.0, id="at-20pct-the-spike-is-over")],
)
def test_a_spike_is_answered_until_the_critical_target(free_after, spike, period) -> None:
    g = guest("a", configured=384 * MIB, used=60 * MIB)
    actions, history = policy.step(host(0.01), [g], {}, History(), Tuning())
    assert actions.spike and history.spike
    actions, history = policy.step(host(free_after), [g], {}, history, Tuning())  # KSM band by free memory alone
    assert actions.spike is spike and actions.period == period
    assert actions.level >= PressureLevel.BALLOON  # by the spike, or by the one-level-at-a-time hysteresis


def test_the_first_real_guest_stats_replace_the_boot_guess() -> None:
    booting = replace(guest("a", configured=512 * MIB, used=40 * MIB), guest_total=None, guest_available=None,
                      guest_free=None)
    history = History()
    for _ in range(3):  # no balloon stats yet: the policy assumes the guest uses all it has
        history = policy.observe(history, host(), [booting], Tuning())
    assert policy.working_set(history.guest("a")) == 512 * MIB
    history = policy.observe(history, host(), [guest("a", configured=512 * MIB, used=40 * MIB)], Tuning())
    assert policy.working_set(history.guest("a")) == 40 * MIB  # not 512 MiB decaying at 5 % a period
    h = replace(host(0.9), budget_limit=2 * GIB, budget_usage=GIB)
    ok, why = policy.admission(h, [guest("a", configured=512 * MIB, used=40 * MIB)], history, 512 * MIB, Tuning())
    assert ok and "regrowth 0 MiB" in why


# ------------------------------------------------------------------------------------- memory-template clones


@pytest.mark.parametrize(
    ("free", "tuning", "actual_mib", "held"),
    [
        pytest.param(0.9, Tuning(), 200, False, id="none-grows-back"),
        pytest.param(0.15, Tuning(), 256, False, id="ksm-holds"),
        pytest.param(0.08, BALLOON, 256, True, id="balloon-leaves-it-alone"),
        pytest.param(0.02, Tuning(swap_free_fraction=0.04), 256, True, id="a-spike-leaves-it-alone"),
        pytest.param(0.08, BALLOON, 150, True, id="a-half-ballooned-clone-is-not-inflated-further"),
    ],
)
def test_a_clones_balloon_never_inflates_at_any_level(free, tuning, actual_mib, held) -> None:
    """QEMU 7.2 discards a clone's ballooned pages by punching holes in the shared template file."""
    clone = guest("clone", actual=actual_mib * MIB, used=20 * MIB, free=64 * MIB, template="t1")
    log, _ = simulate(host(free), [clone, guest("other", used=20 * MIB, free=64 * MIB)], 20, tuning=tuning)
    for actions in log:
        assert actions.guest("clone").target >= actual_mib * MIB
    reasons = [r for r in log[0].reasons if r.startswith("clone: ")]
    assert bool(reasons) is held
    if held:
        assert reasons == [f"clone: balloon held at {actual_mib} MiB: {policy.CLONE_HELD}"]
        assert "punch holes in the shared template file on QEMU 7.2" in policy.CLONE_HELD


def test_the_other_guests_balloons_give_what_a_clone_cannot() -> None:
    h = host(0.05, total=1 * GIB)  # pool: 2 x 256 + 51 - 154 MiB = 409 MiB for the two
    ordinary, _ = policy.step(h, [guest("a", used=20 * MIB), guest("b", used=20 * MIB)], {}, History(), Tuning())
    cloned = [guest("a", used=20 * MIB), guest("b", used=20 * MIB, template="t1")]
    with_clone, _ = policy.step(h, cloned, {}, History(), Tuning())
    assert ordinary.guest("a").entitlement == ordinary.guest("b").entitlement < 256 * MIB
    assert with_clone.guest("b").entitlement == 256 * MIB  # the clone keeps what it has ...
    pool = ordinary.guest("a").entitlement + ordinary.guest("b").entitlement
    assert with_clone.guest("a").entitlement == pytest.approx(pool - 256 * MIB, abs=MIB)  # ... a gives b's share


def test_a_clone_under_pressure_deflates_fast() -> None:
    history = History()
    clone = guest("clone", actual=120 * MIB, used=80 * MIB, template="t1")
    _, history = policy.step(host(0.01), [clone], {}, history, BALLOON)
    squeezed = guest("clone", actual=120 * MIB, used=110 * MIB, template="t1")
    actions, _ = policy.step(host(0.01), [squeezed], {}, history, BALLOON)
    d = actions.guest("clone")
    assert d.send and d.target - 120 * MIB >= 64 * MIB
    assert any("clone: fast deflate" in r for r in actions.reasons)


@pytest.mark.parametrize(
    ("guest_policy", "template"),
    [pytest.param(GuestPolicy(template=True), True, id="marked"),
     pytest.param(GuestPolicy(), False, id="not-marked"),
     # What it asked for stays (its devices are laid out for it), and page sharing off goes with it:
     # the driver starts such a guest from no template (templatestore.ineligible).
     pytest.param(GuestPolicy(template=True, page_sharing=False), True, id="opted-out-of-sharing-asks")],
)
def test_a_guest_asks_for_a_template_only_if_marked(guest_policy, template) -> None:
    backing = memory_backing(guest_policy)
    assert backing.template is template
    assert backing.page_sharing is guest_policy.page_sharing


def test_a_clone_lends_nothing_to_admission() -> None:
    h = replace(host(0.9), budget_limit=2 * GIB, budget_usage=GIB)
    cached = dict(rss=140 * MIB, free=16 * MIB)  # 256 MiB guest, 64 MiB used, the rest page cache
    history = policy.observe(History(), h, [guest("a", **cached)], Tuning())
    assert policy.admission_room(h, [guest("a", **cached)], {}, history, Tuning()).reclaimable > 0
    clone = guest("a", **cached, template="t1")
    assert policy.admission_room(h, [clone], {}, history, Tuning()).reclaimable == 0


def test_a_guest_that_starts_from_a_template_is_expected_to_cost_what_its_clones_cost() -> None:
    booted = guest("booted", configured=512 * MIB, used=496 * MIB, rss=173 * MIB)  # nothing to balloon
    clones = [replace(guest(f"c{i}", configured=512 * MIB, rss=98 * MIB, template="t1"), anonymous=56 * MIB,
                      cgroup_usage=41 * MIB) for i in range(2)]
    fleet = [booted, *clones]
    # A clone's RSS beyond its anonymous memory is the template's page cache, counted once for the host.
    assert policy.own_footprint(clones[0]) == 56 * MIB and policy.own_footprint(booted) == 173 * MIB
    assert policy.expected_footprint(fleet, 512 * MIB, Tuning(), template="t1") == 56 * MIB
    assert policy.expected_footprint(fleet, 512 * MIB, Tuning()) == 173 * MIB  # it boots: like the booted one
    assert policy.expected_footprint([booted], 512 * MIB, Tuning(), template="t1") == 173 * MIB  # no clone yet
    h = replace(host(0.5, total=4 * GIB), budget_limit=2 * GIB, budget_usage=2 * GIB - 260 * MIB)
    history = policy.observe(History(), h, fleet, Tuning())
    assert policy.admission(h, fleet, history, 512 * MIB, Tuning(), template="t1")[0]
    assert not policy.admission(h, fleet, history, 512 * MIB, Tuning())[0]
