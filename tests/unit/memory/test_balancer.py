"""The cluster memory balancer is a pure function: checked as tables of hosts/guests -> moves and reasons."""

from __future__ import annotations

from dataclasses import replace

import pytest

from yunstack.memory import balancer
from yunstack.memory.balancer import BalancerTuning, GuestLoad, HostLoad, InFlight, Membership, Plan
from yunstack.memory.model import MIB, PressureLevel

GIB = 1024 * MIB
NOW = 10_000.0
TUNING = BalancerTuning()  # target 80 %, hysteresis 5 %: triggers above 85 %, takes up to 75 %


def host(name: str, used: float, *, physical: int = 10 * GIB, **kw: object) -> HostLoad:
    """A host with ``used`` (a fraction) of its physical memory in use."""
    return HostLoad(name=name, physical=physical, used=int(used * physical), **kw)  # type: ignore[arg-type]


def guest(gid: str, on: str, gib: float, **kw: object) -> GuestLoad:
    """A guest whose working set and resident memory are ``gib`` GiB."""
    size = int(gib * GIB)
    return GuestLoad(id=gid, host=on, memory=max(size, GIB), working_set=size, resident=size,
                     **kw)  # type: ignore[arg-type]


def run(hosts: list[HostLoad], guests: list[GuestLoad], *, in_flight: tuple[InFlight, ...] = (),
        tuning: BalancerTuning = TUNING) -> Plan:
    return balancer.plan(hosts, guests, in_flight, tuning, NOW)


def moves(p: Plan) -> list[tuple[str, str, str]]:
    return [(m.guest, m.source, m.target) for m in p.moves]


def reasons(p: Plan, subject: str) -> str:
    return " | ".join(r.reason for r in p.refusals if r.subject == subject)


# ------------------------------------------------------------------------------------- the shared rule


@pytest.mark.parametrize(
    ("load", "need_gib", "fits", "why"),
    [
        pytest.param(host("h", 0.50), 1, True, "", id="plenty-of-room"),
        pytest.param(host("h", 0.70), 1, False, "would exceed its pressure target (80% > 75%)",
                     id="would-cross-target-minus-hysteresis"),
        pytest.param(host("h", 0.50, admission_room=512 * MIB), 1, False,
                     "it has 512 MiB of admission room, 1024 MiB needed", id="beyond-its-admission-room"),
        pytest.param(host("h", 0.30, level=PressureLevel.SWAP), 1, False,
                     "under memory pressure (level swap)", id="swap-level-takes-nothing"),
        pytest.param(host("h", 0.30, psi_some_avg10=12.0), 1, False, "PSI some 12% >= 10%", id="psi-at-the-limit"),
        pytest.param(host("h", 0.30, swap_in_rate=8.0 * MIB), 1, False, "swapping (in 8.0 MiB/s, out 0.0 MiB/s)",
                     id="swapping-in"),
        pytest.param(host("h", 0.30, swap_out_rate=4.0 * MIB), 1, False, "out 4.0 MiB/s", id="swapping-out"),
    ],
)
def test_a_host_takes_a_guest_only_below_its_target_minus_hysteresis_and_without_pressure(load, need_gib, fits,
                                                                                         why) -> None:
    value, reason = balancer.target_score(load, need_gib * GIB, TUNING)
    assert (value is not None) == fits
    assert why in reason


@pytest.mark.parametrize(
    ("better", "worse"),
    [
        pytest.param(host("a", 0.30), host("b", 0.50), id="more-spare-memory-wins"),
        pytest.param(host("a", 0.30, admission_room=6 * GIB), host("b", 0.30, admission_room=2 * GIB),
                     id="more-admission-room-wins"),
        pytest.param(host("a", 0.30), host("b", 0.30, psi_some_avg10=6.0), id="lower-psi-wins"),
    ],
)
def test_the_score_prefers_room_and_low_pressure(better, worse) -> None:
    a, _ = balancer.target_score(better, GIB, TUNING)
    b, _ = balancer.target_score(worse, GIB, TUNING)
    assert a is not None and b is not None and a > b


# ------------------------------------------------------------------------------------- the cost of a move


@pytest.mark.parametrize(
    ("style", "dirty_mib", "duration", "downtime"),
    [
        pytest.param("paused", None, 10.24, 10.24, id="paused-copy-stops-the-guest-throughout"),
        pytest.param("precopy", 0.0, 10.24, 0.0, id="idle-guest-precopy-has-no-downtime"),
        pytest.param("precopy", 50.0, 20.32, 0.16, id="half-the-bandwidth-dirty-converges"),
        pytest.param("precopy", 95.0, 20.48, 10.24, id="too-dirty-never-converges"),
    ],
)
def test_a_moves_duration_and_downtime_follow_the_style_and_the_dirty_rate(style, dirty_mib, duration,
                                                                           downtime) -> None:
    g = guest("g", "h1", 1.0, dirty_rate=None if dirty_mib is None else dirty_mib * MIB)
    _, took, stopped = balancer.estimate(g, replace(TUNING, migration=style))
    assert took == pytest.approx(duration, abs=0.05)
    assert stopped == pytest.approx(downtime, abs=0.05)


def test_an_unknown_dirty_rate_is_estimated_from_the_working_set_not_taken_as_zero() -> None:
    precopy = replace(TUNING, migration="precopy")
    _, unknown, _ = balancer.estimate(guest("g", "h", 2.0), precopy)
    _, idle, _ = balancer.estimate(guest("g", "h", 2.0, dirty_rate=0.0), precopy)
    assert unknown > idle


# ------------------------------------------------------------------------------------- plans


H2_H3 = [host("h2", 0.40), host("h3", 0.60)]


@pytest.mark.parametrize(
    ("hosts", "guests", "expected"),
    [
        pytest.param([host("h1", 0.84), *H2_H3], [guest("a", "h1", 2.0)], [], id="inside-the-band-nothing-moves"),
        pytest.param([host("h1", 0.90), *H2_H3], [guest("big", "h1", 4.0), guest("small", "h1", 1.0)],
                     [("small", "h1", "h2")], id="the-smallest-sufficient-guest-goes"),
        pytest.param([host("h1", 0.90), *H2_H3], [guest("a", "h1", 0.5), guest("b", "h1", 0.75)],
                     [("b", "h1", "h2")], id="none-enough-the-largest-goes-first-then-the-limit-stops"),
        pytest.param([host("h1", 0.90), host("h2", 0.40, disabled=True), host("h3", 0.30, up=False),
                      host("h4", 0.30, draining=True), host("h5", 0.30, mode="off"), host("h6", 0.60)],
                     [guest("a", "h1", 1.0)], [("a", "h1", "h6")], id="only-an-up-enabled-balanced-host-takes-it"),
        pytest.param([host("h1", 0.90), host("h2", 0.70)], [guest("a", "h1", 1.0)], [],
                     id="no-target-may-cross-its-own-low-mark"),
        pytest.param([host("h1", 0.90), *H2_H3],
                     [guest("a", "h1", 1.0, groups=(Membership("g", "anti-affinity"),)),
                      guest("b", "h2", 1.0, groups=(Membership("g", "anti-affinity"),))],
                     [("a", "h1", "h3")], id="anti-affinity-skips-the-host-with-a-member"),
        pytest.param([host("h1", 0.90), *H2_H3],
                     [guest("a", "h1", 1.0, groups=(Membership("g", "soft-anti-affinity"),)),
                      guest("b", "h2", 1.0, groups=(Membership("g", "soft-anti-affinity"),))],
                     [("a", "h1", "h3")], id="soft-anti-affinity-prefers-a-host-without-members"),
        pytest.param([host("h1", 0.90), *H2_H3],
                     [guest("a", "h1", 1.0, groups=(Membership("g", "soft-affinity"),)),
                      guest("b", "h3", 1.0, groups=(Membership("g", "soft-affinity"),))],
                     [("a", "h1", "h3")], id="soft-affinity-prefers-the-host-with-members"),
        pytest.param([host("h1", 0.90), *H2_H3],
                     [guest("a", "h1", 1.0, last_moved_at=NOW - 40), guest("b", "h1", 1.0)],
                     [("b", "h1", "h2")], id="a-guest-in-its-cooldown-stays"),
        pytest.param([host("h1", 0.90, mode="off"), *H2_H3], [guest("a", "h1", 1.0)], [],
                     id="a-source-in-mode-off-is-left-alone"),
        pytest.param([host("h1", 0.90, up=False), *H2_H3], [guest("a", "h1", 1.0)], [],
                     id="a-down-source-is-left-alone"),
        # A memory template's clone frees only what it does not share: the template's pages stay.
        pytest.param([host("h1", 0.90), *H2_H3],
                     [guest("clone", "h1", 1.0, shared=int(0.8 * GIB)), guest("own", "h1", 0.75)],
                     [("own", "h1", "h2")], id="a-clone-frees-less-than-its-resident"),
    ],
)
def test_the_plan_moves_what_the_rule_says(hosts, guests, expected) -> None:
    assert moves(run(hosts, guests)) == expected


@pytest.mark.parametrize(
    ("hosts", "guests", "subject", "says"),
    [
        pytest.param([host("h1", 0.90), *H2_H3], [guest("a", "h1", 1.0, last_moved_at=NOW - 40)], "a",
                     "guest a stays: moved 40 s ago, cooldown 300 s", id="cooldown"),
        pytest.param([host("h1", 0.90), *H2_H3], [guest("a", "h1", 0.1)], "a",
                     "frees 102 MiB, less than the minimum benefit 256 MiB", id="minimum-benefit"),
        pytest.param([host("h1", 0.90), *H2_H3], [guest("a", "h1", 1.0, movable=False,
                                                        why_immovable="it is in rescue")], "a",
                     "guest a stays: it is in rescue", id="immovable-with-the-callers-reason"),
        pytest.param([host("h1", 0.90), *H2_H3],
                     [guest("a", "h1", 1.0, groups=(Membership("g", "affinity"),)),
                      guest("b", "h1", 1.0, groups=(Membership("g", "affinity"),))], "a",
                     "in affinity group g with b: it does not move alone", id="hard-affinity"),
        pytest.param([host("h1", 0.90), host("h2", 0.70)], [guest("a", "h1", 1.0)], "a",
                     "h2: it would exceed its pressure target (80% > 75%)", id="target-over-its-low-mark"),
        pytest.param([host("h1", 0.90), host("h3", 0.30)],
                     [guest("a", "h1", 1.0, groups=(Membership("g", "anti-affinity"),)),
                      guest("y", "h3", 1.0, groups=(Membership("g", "anti-affinity"),))], "a",
                     "h3: anti-affinity with server y on h3", id="anti-affinity"),
        pytest.param([host("h1", 0.90), host("h2", 0.30, draining=True)], [guest("a", "h1", 1.0)], "h2",
                     "host h2 takes no guest: it is draining (maintenance)", id="draining-host"),
        pytest.param([host("h1", 0.90, mode="off"), *H2_H3], [guest("a", "h1", 1.0)], "h1",
                     "host h1 is at 90%, above its trigger 85%, but its balancer mode is off", id="source-off"),
        pytest.param([host("h1", 0.60), *H2_H3], [], "h1", "host h1 stays: 60% used, it triggers above 85%",
                     id="under-the-trigger"),
        pytest.param([host("h1", 0.90), host("h2", 0.0, physical=0), host("h3", 0.60)], [guest("a", "h1", 1.0)],
                     "h2", "host h2 has not reported its memory", id="unreported-host"),
        pytest.param([host("h1", 0.90), *H2_H3], [guest("a", "h1", 0.5), guest("b", "h1", 0.75)], "h1",
                     "no more moves now, 1 of at most 1 moves in flight on it", id="per-host-limit"),
        pytest.param([host("h1", 0.90), *H2_H3], [guest("a", "h1", 0.5), guest("b", "h1", 0.75)], "a",
                     "guest a stays: the move limits are reached (1 of at most 1 moves in flight on it)",
                     id="a-guest-held-by-the-limits"),
        pytest.param([host("h1", 0.90), host("h2", 0.10)], [guest("big", "h1", 4.0), guest("small", "h1", 1.0)],
                     "big", "guest big stays: h1 is relieved by the planned moves", id="a-guest-not-needed"),
    ],
)
def test_everything_left_alone_says_why(hosts, guests, subject, says) -> None:
    assert says in reasons(run(hosts, guests), subject)


def test_a_host_in_advise_mode_gets_advisory_moves_that_are_not_applicable() -> None:
    p = run([host("h1", 0.90, mode="advise"), *H2_H3], [guest("a", "h1", 1.0)])
    assert moves(p) == [("a", "h1", "h2")]
    assert p.moves[0].advisory and "advisory" in p.moves[0].reason
    assert p.applicable == ()
    to_advise = run([host("h1", 0.90), host("h2", 0.40, mode="advise")], [guest("a", "h1", 1.0)])
    assert to_advise.moves[0].advisory


def test_two_triggered_hosts_share_the_cluster_wide_limit() -> None:
    hosts = [host("h1", 0.95), host("h2", 0.90), host("h3", 0.10), host("h4", 0.10), host("h5", 0.10)]
    guests = [guest("a", "h1", 2.0), guest("b", "h2", 1.0)]
    one = run(hosts, guests, tuning=replace(TUNING, max_moves=1))
    assert moves(one) == [("a", "h1", "h3")]
    assert "1 of at most 1 moves in flight cluster-wide" in reasons(one, "h2")
    assert "guest b stays: the move limits are reached" in reasons(one, "b")
    assert moves(run(hosts, guests)) == [("a", "h1", "h3"), ("b", "h2", "h4")]


def test_moves_in_flight_count_against_the_limits_and_load_their_target() -> None:
    hosts = [host("h1", 0.90), host("h2", 0.40), host("h3", 0.60)]
    flying = (InFlight(guest="x", source="h3", target="h2", bytes=3 * GIB),)
    p = run(hosts, [guest("a", "h1", 1.0)], in_flight=flying)
    assert moves(p) == []
    assert "h2: it already has 1 move(s) in flight; h3: it already has 1 move(s) in flight" in reasons(p, "a")
    # h2 at 40 % + 3 GiB coming = 70 %: a 1 GiB guest would take it to 80 % > 75 %; h3 (60 %) takes it.
    two = run(hosts, [guest("a", "h1", 1.0)], in_flight=flying, tuning=replace(TUNING, max_moves_per_host=2))
    assert moves(two) == [("a", "h1", "h3")]
    assert balancer.by_host(two)["h2"].before_fraction == pytest.approx(0.70)
    assert "h2 goes" not in two.moves[0].reason and "h3 goes to 70%" in two.moves[0].reason


def test_a_greedy_loop_brings_the_host_under_target_when_the_limits_allow() -> None:
    hosts = [host("h1", 0.95), host("h2", 0.10), host("h3", 0.10), host("h4", 0.10)]
    guests = [guest("a", "h1", 0.5), guest("b", "h1", 0.75), guest("c", "h1", 0.3)]
    p = run(hosts, guests, tuning=replace(TUNING, max_moves=3, max_moves_per_host=3))
    # 1.5 GiB over target, no guest is enough alone: b (largest), then a (largest again), then c (enough)
    assert moves(p) == [("b", "h1", "h2"), ("a", "h1", "h3"), ("c", "h1", "h4")]
    after = balancer.by_host(p)["h1"]
    assert after.after_fraction <= TUNING.target_fraction
    assert after.before_fraction == pytest.approx(0.95)


def test_after_a_plan_no_host_triggers_and_a_second_plan_moves_nothing_back() -> None:
    """No ping-pong: apply the plan's projections and plan again; nothing moves."""
    hosts = [host("h1", 0.90), host("h2", 0.55), host("h3", 0.60)]
    guests = [guest("a", "h1", 1.0), guest("b", "h2", 1.0)]
    first = run(hosts, guests)
    after = balancer.by_host(first)
    moved = {m.guest: m.target for m in first.moves}
    hosts2 = [replace(h, used=after[h.name].after) for h in hosts]
    guests2 = [replace(g, host=moved.get(g.id, g.host), last_moved_at=NOW if g.id in moved else None) for g in guests]
    assert moves(first) == [("a", "h1", "h2")]
    assert all(p.after_fraction <= TUNING.target_fraction + TUNING.hysteresis for p in first.hosts)
    assert moves(balancer.plan(hosts2, guests2, (), TUNING, NOW + 1)) == []


def test_the_cheapest_sufficient_guest_is_the_one_that_dirties_least_when_sizes_are_close() -> None:
    precopy = replace(TUNING, migration="precopy")
    hosts = [host("h1", 0.90), host("h2", 0.30)]
    busy = guest("busy", "h1", 1.0, dirty_rate=80.0 * MIB)
    calm = guest("calm", "h1", 1.1, dirty_rate=1.0 * MIB)
    assert moves(run(hosts, [busy, calm], tuning=precopy)) == [("calm", "h1", "h2")]


def test_a_planned_move_uses_up_its_targets_admission_room() -> None:
    hosts = [host("h1", 0.95), host("h2", 0.90), host("h3", 0.10, admission_room=1536 * MIB)]
    guests = [guest("a", "h1", 1.0), guest("b", "h2", 1.0)]
    p = run(hosts, guests, tuning=replace(TUNING, max_moves_per_host=2))
    assert moves(p) == [("a", "h1", "h3")]
    assert "h3: it has 512 MiB of admission room, 1024 MiB needed" in reasons(p, "b")


def test_a_guest_no_host_takes_names_a_few_hosts_and_counts_the_rest() -> None:
    hosts = [host("h0", 0.90), *(host(f"t{i}", 0.74) for i in range(8))]
    p = run(hosts, [guest("a", "h0", 1.0)])
    why = reasons(p, "a")
    assert why.count("would exceed its pressure target") == balancer.SHOWN_REASONS
    assert why.endswith("and 3 more hosts)")


def test_a_guest_moves_only_within_its_hosts_availability_zone() -> None:
    p = run([host("a", 0.90, zone="az1"), host("b", 0.10, zone="az2"), host("c", 0.40, zone="az1")],
            [guest("g", "a", 2)])
    assert moves(p) == [("g", "a", "c")]
    p = run([host("a", 0.90, zone="az1"), host("b", 0.10, zone="az2")], [guest("g", "a", 2)])
    assert moves(p) == [] and "b: in zone 'az2', the server is in 'az1'" in reasons(p, "g")


def test_a_clones_move_frees_its_own_pages_at_its_source_and_costs_all_of_them_at_its_target() -> None:
    clone = guest("clone", "h1", 1.0, shared=256 * MIB)
    p = run([host("h1", 0.90), host("h2", 0.30)], [clone])
    (move,) = p.moves
    assert move.benefit == clone.footprint - 256 * MIB and "frees 768 MiB" in move.reason
    projected = balancer.by_host(p)
    assert projected["h1"].after == int(0.90 * 10 * GIB) - 768 * MIB
    assert projected["h2"].after == int(0.30 * 10 * GIB) + GIB


# ------------------------------------------------------------------------------ pressure under the trigger

PSI = {"psi_some_avg10": 25.0}
SWAPPING_IN = {"swap_in_rate": 6.0 * MIB}


@pytest.mark.parametrize(
    ("pressed", "expected", "says"),
    [
        pytest.param(host("h1", 0.60, **PSI), [("small", "h1", "h2")],
                     "host h1 is under memory pressure (PSI some 25% >= 10%) at 60% used, under its trigger 85%; "
                     "one guest relieves it: the cheapest move", id="psi-moves-the-cheapest-guest-only"),
        pytest.param(host("h1", 0.60, **SWAPPING_IN), [("small", "h1", "h2")],
                     "swapping in 6.0 MiB/s", id="swapping-in-moves-one-guest"),
        pytest.param(host("h1", 0.60, swap_out_rate=6.0 * MIB), [], "host h1 stays: 60% used",
                     id="swapping-out-alone-is-the-managers-last-resort-not-pressure"),
        pytest.param(host("h1", 0.60, psi_some_avg10=8.0), [], "host h1 stays: 60% used", id="psi-below-the-limit"),
        pytest.param(host("h1", 0.60, last_relieved_at=NOW - 30, **PSI), [],
                     "host h1 is under memory pressure (PSI some 25% >= 10%) at 60% used, it triggers above 85%, "
                     "but a guest left it 30 s ago: its pressure gets 120 s to fall first",
                     id="settling-after-a-move-lags-psi-so-no-second-move"),
        pytest.param(host("h1", 0.60, last_relieved_at=NOW - 121, **PSI), [("small", "h1", "h2")],
                     "one guest relieves it", id="settled-and-still-pressed-moves-another"),
        pytest.param(host("h1", 0.60, mode="advise", **PSI), [("small", "h1", "h2")], "advisory",
                     id="advise-shows-it"),
    ],
)
def test_a_host_under_pressure_below_its_trigger_loses_one_guest_then_settles(pressed, expected, says) -> None:
    p = run([pressed, host("h2", 0.20)], [guest("big", "h1", 3.0), guest("small", "h1", 1.0)])
    assert moves(p) == expected
    text = " | ".join([*(m.reason for m in p.moves), reasons(p, "h1")])
    assert says in text


def test_a_pressed_host_sends_nowhere_that_is_pressed_or_full_and_says_so() -> None:
    p = run([host("h1", 0.60, **PSI), host("h2", 0.20, **SWAPPING_IN), host("h3", 0.74)],
            [guest("small", "h1", 1.0)])
    assert moves(p) == []
    why = reasons(p, "small")
    assert "h2: it is swapping (in 6.0 MiB/s" in why and "h3: it would exceed its pressure target" in why
    assert "still 60% after the planned moves" in reasons(p, "h1")


def test_hosts_over_their_trigger_are_relieved_before_pressed_ones() -> None:
    # One move in flight allowed: the host over its trigger gets it.
    tuning = replace(TUNING, max_moves=1)
    p = run([host("full", 0.95), host("pressed", 0.60, **PSI), host("spare", 0.10)],
            [guest("a", "full", 2.0), guest("b", "pressed", 1.0)], tuning=tuning)
    assert moves(p) == [("a", "full", "spare")]
    assert "no more moves now, 1 of at most 1 moves in flight cluster-wide" in reasons(p, "pressed")


def test_after_a_pressure_move_the_next_pass_moves_nothing_back_or_further() -> None:
    hosts = [host("h1", 0.60, **PSI), host("h2", 0.20)]
    guests = [guest("big", "h1", 3.0), guest("small", "h1", 1.0)]
    first = run(hosts, guests)
    assert moves(first) == [("small", "h1", "h2")]
    # The move ended; PSI (a 10 s average) still shows the old pressure on h1.
    after_hosts = [replace(hosts[0], used=hosts[0].used - GIB, last_relieved_at=NOW),
                   replace(hosts[1], used=hosts[1].used + GIB)]
    after_guests = [guests[0], replace(guests[1], host="h2", last_moved_at=NOW)]
    second = run(after_hosts, after_guests)
    assert moves(second) == []
    assert "its pressure gets 120 s to fall first" in reasons(second, "h1")


def test_a_pressed_host_loses_exactly_one_guest_whatever_the_minimum_benefit() -> None:
    for minimum in (0, 256 * MIB):
        p = run([host("h1", 0.60, **PSI), host("h2", 0.10)],
                [guest("a", "h1", 1.0), guest("b", "h1", 1.5), guest("c", "h1", 2.0)],
                tuning=replace(TUNING, min_benefit_bytes=minimum))
        assert moves(p) == [("a", "h1", "h2")], minimum
        assert "guest b stays: h1 is relieved by the planned moves" in reasons(p, "b")


def test_the_worst_pressure_is_relieved_first_when_the_limits_allow_one_move() -> None:
    p = run([host("mild", 0.60, psi_some_avg10=12.0), host("worst", 0.60, psi_some_avg10=40.0), host("spare", 0.10)],
            [guest("m", "mild", 1.0), guest("w", "worst", 1.0)], tuning=replace(TUNING, max_moves=1))
    assert moves(p) == [("w", "worst", "spare")]
