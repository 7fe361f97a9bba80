"""The cluster memory balancer: which guests to move where, so that no host stays over its memory target.

A pure function, like ``policy.py``: hosts, guests, the moves in flight, the tuning and ``now`` in;
a ``Plan`` out (ordered moves, and a reason for every guest or host considered but left alone).  No
I/O, no database and no clock.  The rule (VMware DRS's, for memory only) is argued in
docs/explanation/memory-balancer.md:

- a host *triggers* only above ``target + hysteresis`` of its physical memory, and is then brought
  back to ``target``; a host *takes* a guest only if it stays below ``target - hysteresis``
  afterwards, so a move never makes a host trigger (no ping-pong);
- a host under its trigger that is still under memory pressure (PSI some at ``psi_limit``, or
  swapping in faster than ``swap_limit``: its guests fault back memory its manager took) is
  relieved by one guest, then left ``pressure_settle_seconds`` for its pressure to fall before it
  may lose another: PSI is a 10 s average and lags the move;
- on a triggered host, the cheapest guest whose move alone brings it under target goes first
  (cost: the bytes to copy and the rate the guest dirties them); if none is enough, the guest that
  frees the most, and again while the host is over target and the move limits allow;
- never a guest within its cooldown, one whose move frees less than the minimum benefit, one the
  caller marked immovable, or one in a hard-affinity group with other members; never to a host that
  is down, disabled, draining, in mode ``off``, or that holds a member of the guest's anti-affinity
  group;
- ``target_score`` is the one rule for "may this host take ``need`` bytes, and how gladly": the
  balancer chooses targets with it and the scheduler weighs hosts with it.

Sizes are bytes, rates bytes per second, times seconds on the caller's clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from yunstack.memory.model import MIB, PressureLevel

Mode = Literal["off", "advise", "auto"]
GroupPolicy = Literal["affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"]
MigrationStyle = Literal["paused", "precopy"]


@dataclass(frozen=True, kw_only=True)
class BalancerTuning:
    """The balancer's constants; the defaults are argued in docs/explanation/memory-balancer.md."""

    target_fraction: float = 0.80  # a host's used memory should stay at or below this share of physical
    hysteresis: float = 0.05  # trigger above target + this; a target must stay at or below target - this
    cooldown_seconds: float = 300.0  # a guest moved this recently stays
    min_benefit_bytes: int = 256 * MIB  # a move that frees less than this is not worth its cost
    max_moves: int = 2  # moves in flight cluster-wide, the ones already running included
    max_moves_per_host: int = 1  # moves in flight per host, as source or target
    bandwidth: float = 100.0 * MIB  # what one migration copies per second
    migration: MigrationStyle = "paused"  # paused: the guest stops for the whole copy (TCG, QEMU 7.2)
    max_downtime_seconds: float = 0.3  # precopy stops and copies the rest once it fits this (QEMU's default)
    unknown_dirty_fraction: float = 0.10  # dirty rate assumed when unknown: this share of the working set per s
    downtime_weight: float = 10.0  # in a move's cost, a second of downtime counts as this many of copying
    psi_limit: float = 10.0  # a host whose memory PSI some avg10 (%) reaches this takes no guest
    swap_limit: float = 1.0 * MIB  # nor one that swaps in or out faster than this (bytes/s)
    pressure_settle_seconds: float = 120.0  # after a move off a host, its pressure alone moves nothing for this long


DEFAULT_TUNING = BalancerTuning()


@dataclass(frozen=True)
class Membership:
    """One server group a guest belongs to."""

    group: str
    policy: GroupPolicy


@dataclass(frozen=True, kw_only=True)
class HostLoad:
    """One host as the balancer sees it: its state, size and the memory in use (its latest ledger entry)."""

    name: str
    physical: int  # the memory guests may use in all (the manager's capacity)
    used: int  # in use now: physical - the manager's headroom
    mode: Mode = "auto"  # resolved by the caller (cluster default, then aggregate)
    zone: str = ""  # its availability zone: a guest moves only within its host's zone
    up: bool = True
    disabled: bool = False
    draining: bool = False  # in maintenance: its guests are leaving
    level: PressureLevel = PressureLevel.NONE
    psi_some_avg10: float = 0.0
    admission_room: int | None = None  # policy.admission_room; None = not reported
    swap_in_rate: float = 0.0
    swap_out_rate: float = 0.0
    last_relieved_at: float | None = None  # when the newest move off it ended (the caller's clock)


@dataclass(frozen=True, kw_only=True)
class GuestLoad:
    """One guest: where it runs, what it costs its host and what a move of it would copy."""

    id: str
    host: str
    memory: int  # the flavor's RAM
    working_set: int = 0
    resident: int = 0  # QEMU's RSS: what the host frees when the guest leaves
    # Of that, pages it shares with other guests of its host, which stay when it leaves: a memory
    # template's page cache (the ledger's template_shared).  Its destination pays them in full.
    shared: int = 0
    dirty_rate: float | None = None  # None = unknown (estimated from the working set)
    last_moved_at: float | None = None
    groups: tuple[Membership, ...] = ()
    movable: bool = True
    why_immovable: str = "not movable"  # the caller's reason when ``movable`` is False

    @property
    def footprint(self) -> int:
        """What the guest costs a host: its resident or working set, whichever is more (RAM if unknown)."""
        return max(self.resident, self.working_set) or self.memory

    @property
    def frees(self) -> int:
        """What its host frees when it leaves: its footprint but the pages other guests still map."""
        return max(self.footprint - self.shared, 0)


@dataclass(frozen=True, kw_only=True)
class InFlight:
    """A move already running: it counts against the limits, and its bytes against the target."""

    guest: str
    source: str
    target: str
    bytes: int


@dataclass(frozen=True, kw_only=True)
class Move:
    """One planned live migration."""

    guest: str
    source: str
    target: str
    bytes: int  # memory to copy
    duration_seconds: float
    downtime_seconds: float
    benefit: int  # bytes the source frees
    cost: float  # duration + downtime_weight x downtime
    advisory: bool  # source or target is in mode advise: shown, never applied
    reason: str


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """A guest or host the balancer considered and left alone, and why."""

    subject: str  # a guest id or a host name
    kind: Literal["guest", "host"]
    reason: str


@dataclass(frozen=True, kw_only=True)
class Projection:
    """One host's used memory before the plan and after it (in-flight moves counted in both)."""

    host: str
    physical: int
    before: int
    after: int

    @property
    def before_fraction(self) -> float:
        return self.before / self.physical if self.physical else 0.0

    @property
    def after_fraction(self) -> float:
        return self.after / self.physical if self.physical else 0.0


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What the balancer would do, in order, and why it does nothing else."""

    moves: tuple[Move, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    hosts: tuple[Projection, ...] = ()

    @property
    def applicable(self) -> tuple[Move, ...]:
        """The moves that may be applied (not advisory)."""
        return tuple(m for m in self.moves if not m.advisory)


# ------------------------------------------------------------------------------ the shared rule


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f}%"


def score(*, physical: int, used: int, need: int, admission_room: int | None, level: PressureLevel,
          psi_some_avg10: float, swap_in_rate: float, swap_out_rate: float = 0.0,
          tuning: BalancerTuning = DEFAULT_TUNING) -> tuple[float | None, str]:
    """``target_score`` on plain numbers (the scheduler calls this without building a ``HostLoad``)."""
    if physical <= 0:
        return None, "its memory is not known"
    if level >= PressureLevel.SWAP:
        return None, f"it is under memory pressure (level {level.name.lower()})"
    if psi_some_avg10 >= tuning.psi_limit:
        return None, f"it is under memory pressure (PSI some {psi_some_avg10:.0f}% >= {tuning.psi_limit:.0f}%)"
    if swap_in_rate > tuning.swap_limit or swap_out_rate > tuning.swap_limit:
        return None, f"it is swapping (in {swap_in_rate / MIB:.1f} MiB/s, out {swap_out_rate / MIB:.1f} MiB/s)"
    low = tuning.target_fraction - tuning.hysteresis
    after = used + need
    if after > low * physical:
        return None, f"it would exceed its pressure target ({_pct(after / physical)} > {_pct(low)})"
    spare = low * physical - after
    if admission_room is not None:
        if need > admission_room:
            return None, f"it has {admission_room // MIB} MiB of admission room, {need // MIB} MiB needed"
        spare = min(spare, admission_room - need)
    # Pressure that is building (PSI below the limit) makes a host less welcome before it refuses.
    return spare * (1.0 - 0.5 * psi_some_avg10 / tuning.psi_limit), ""


def target_score(host: HostLoad, need: int, tuning: BalancerTuning = DEFAULT_TUNING) -> tuple[float | None, str]:
    """How gladly ``host`` takes ``need`` more bytes; ``(None, reason)`` when it must not.

    It must not when it is under memory pressure (level SWAP, PSI some at ``psi_limit``, swapping
    in or out) or when it would end above ``target - hysteresis`` of its physical memory or beyond its
    admission room.  Otherwise the score is the bytes still spare below that mark (and within the
    room) after taking ``need``, discounted by up to half as its PSI approaches the limit: more
    room and less pressure score higher.  The balancer picks targets with it and the scheduler's
    MemoryPressureWeigher weighs hosts with it, so placement and balancing follow one rule.
    """
    return score(physical=host.physical, used=host.used, need=need, admission_room=host.admission_room,
                 level=host.level, psi_some_avg10=host.psi_some_avg10, swap_in_rate=host.swap_in_rate,
                 swap_out_rate=host.swap_out_rate, tuning=tuning)


# ------------------------------------------------------------------------------ the cost of a move


def estimate(g: GuestLoad, tuning: BalancerTuning) -> tuple[int, float, float]:
    """``(bytes, duration, downtime)`` of moving ``g``: a paused copy, or precopy rounds that converge.

    Precopy copies everything, then what was dirtied meanwhile, round after round, and stops the
    guest once the rest fits ``max_downtime_seconds``.  A guest that dirties at 90 % of the
    bandwidth or more never converges: it is counted as a paused copy of its working set after a
    first full round.  An unknown dirty rate is taken as ``unknown_dirty_fraction`` of the working
    set per second (conservative for an idle guest, optimistic for a database).
    """
    size = g.resident or g.footprint
    bw = max(tuning.bandwidth, 1.0)
    if tuning.migration == "paused":
        return size, size / bw, size / bw
    dirty = g.dirty_rate if g.dirty_rate is not None else tuning.unknown_dirty_fraction * (g.working_set or size)
    ratio = dirty / bw
    if ratio >= 0.9:
        hot = min(size, g.working_set or size)
        return size + hot, (size + hot) / bw, hot / bw
    sent, rest = 0.0, float(size)
    for _ in range(30):
        if rest <= tuning.max_downtime_seconds * bw:
            break
        sent += rest
        rest = min(rest * ratio, float(g.working_set or size))
    return int(sent + rest), (sent + rest) / bw, rest / bw


def cost(duration: float, downtime: float, tuning: BalancerTuning) -> float:
    return duration + tuning.downtime_weight * downtime


# ------------------------------------------------------------------------------ the plan


@dataclass(kw_only=True)
class _World:
    """The planner's running projection: used bytes and moves per host, as the plan grows."""

    hosts: dict[str, HostLoad]
    used: dict[str, int]
    busy: dict[str, int]  # moves (in flight + planned) per host
    moving: set[str]  # guests in flight or planned
    placed: dict[str, str]  # guest -> host, after the planned moves
    incoming: dict[str, int]  # bytes on their way to each host (in flight + planned): out of its admission room
    members: dict[str, list[GuestLoad]]  # server group -> its guests
    open: list[str]  # the hosts that may take guests at all, by name
    total: int = 0
    moves: list[Move] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    def score(self, name: str, need: int, tuning: BalancerTuning) -> tuple[float | None, str]:
        """``target_score`` of host ``name`` as the plan so far leaves it."""
        h = self.hosts[name]
        room = None if h.admission_room is None else h.admission_room - self.incoming[name]
        return score(physical=h.physical, used=self.used[name], need=need, admission_room=room, level=h.level,
                     psi_some_avg10=h.psi_some_avg10, swap_in_rate=h.swap_in_rate, swap_out_rate=h.swap_out_rate,
                     tuning=tuning)


def _static_refusal(h: HostLoad) -> str | None:
    """Why ``h`` takes no guest whatever the numbers, or None."""
    if not h.up:
        return "it is down"
    if h.disabled:
        return "it is disabled"
    if h.draining:
        return "it is draining (maintenance)"
    if h.mode == "off":
        return "its balancer mode is off"
    return None


def _pressure(h: HostLoad, tuning: BalancerTuning) -> str | None:
    """Why ``h`` is under memory pressure whatever its used share, or None.

    Swapping out alone is not pressure: it is the host's manager using swap as its last resort for
    memory its guests do not touch.  Swapping in is: the guests want that memory back.
    """
    if h.psi_some_avg10 >= tuning.psi_limit:
        return f"under memory pressure (PSI some {h.psi_some_avg10:.0f}% >= {tuning.psi_limit:.0f}%)"
    if h.swap_in_rate > tuning.swap_limit:
        return (f"swapping in {h.swap_in_rate / MIB:.1f} MiB/s (more than {tuning.swap_limit / MIB:.1f} MiB/s: "
                "its guests fault back memory it swapped out)")
    return None


def _guest_hold(g: GuestLoad, world: _World, now: float, tuning: BalancerTuning) -> str | None:
    """Why ``g`` stays wherever the targets are, or None."""
    if not g.movable:
        return g.why_immovable
    if g.last_moved_at is not None and now - g.last_moved_at < tuning.cooldown_seconds:
        return f"moved {now - g.last_moved_at:.0f} s ago, cooldown {tuning.cooldown_seconds:.0f} s"
    for m in g.groups:
        if m.policy == "affinity":
            others = sorted(o.id for o in world.members[m.group] if o.id != g.id)
            if others:
                return f"in affinity group {m.group} with {', '.join(others)}: it does not move alone"
    if g.frees < tuning.min_benefit_bytes:
        return (f"moving it frees {g.frees // MIB} MiB, less than the minimum benefit "
                f"{tuning.min_benefit_bytes // MIB} MiB")
    return None


def _members(g: GuestLoad, world: _World, host: str, policy: GroupPolicy) -> list[str]:
    """The other members of ``g``'s groups with ``policy`` that run on ``host`` after the plan."""
    return sorted({o.id for m in g.groups if m.policy == policy for o in world.members[m.group]
                   if o.id != g.id and world.placed.get(o.id) == host})


def _soft_misses(g: GuestLoad, world: _World, host: str) -> int:
    """How many of ``g``'s soft group policies a move to ``host`` would break."""
    misses = len(_members(g, world, host, "soft-anti-affinity"))
    for m in g.groups:
        if m.policy == "soft-affinity":
            where = {world.placed.get(o.id) for o in world.members[m.group] if o.id != g.id}
            if where and host not in where:
                misses += 1
    return misses


SHOWN_REASONS = 5  # a guest no host takes names this many hosts' reasons, then counts the rest


def _best_target(g: GuestLoad, world: _World, tuning: BalancerTuning) -> tuple[str | None, list[str]]:
    """The host ``g`` should go to, or None with the hosts' reasons."""
    why: list[str] = []
    best: tuple[int, float] | None = None
    chosen = None
    need = g.footprint
    for name in world.open:
        if name == g.host:
            continue
        if world.busy[name] >= tuning.max_moves_per_host:
            why.append(f"{name}: it already has {world.busy[name]} move(s) in flight")
            continue
        here, there = world.hosts[g.host].zone if g.host in world.hosts else "", world.hosts[name].zone
        if there != here:
            # A user who spread servers over zones for availability keeps them there.
            why.append(f"{name}: in zone {there!r}, the server is in {here!r}")
            continue
        anti = _members(g, world, name, "anti-affinity") if g.groups else []
        if anti:
            why.append(f"{name}: anti-affinity with server {', '.join(anti)} on {name}")
            continue
        value, reason = world.score(name, need, tuning)
        if value is None:
            why.append(f"{name}: {reason}")
            continue
        key = (-_soft_misses(g, world, name) if g.groups else 0, value)
        if best is None or key > best:
            best, chosen = key, name
    if len(why) > SHOWN_REASONS:
        why = [*why[:SHOWN_REASONS], f"and {len(why) - SHOWN_REASONS} more hosts"]
    return chosen, why


def plan(hosts: Sequence[HostLoad], guests: Sequence[GuestLoad], in_flight: Sequence[InFlight],
         tuning: BalancerTuning, now: float) -> Plan:
    """The moves that bring every triggered host back to its target, and why nothing else moves."""
    members: dict[str, list[GuestLoad]] = {}
    on: dict[str, list[GuestLoad]] = {}
    for g in guests:
        on.setdefault(g.host, []).append(g)
        for m in g.groups:
            members.setdefault(m.group, []).append(g)
    world = _World(hosts={h.name: h for h in hosts}, used={h.name: h.used for h in hosts},
                   busy={h.name: 0 for h in hosts}, moving=set(), placed={g.id: g.host for g in guests},
                   incoming={h.name: 0 for h in hosts}, members=members,
                   open=sorted(h.name for h in hosts if _static_refusal(h) is None))
    for f in in_flight:
        world.moving.add(f.guest)
        world.total += 1
        for name in (f.source, f.target):
            if name in world.busy:
                world.busy[name] += 1
        if f.target in world.used:  # the source frees it only at the end: counted on both, conservatively
            world.used[f.target] += f.bytes
            world.incoming[f.target] += f.bytes
        world.placed[f.guest] = f.target
    before = dict(world.used)
    for h in hosts:
        if (why := _static_refusal(h)) is not None:
            world.refusals.append(Refusal(subject=h.name, kind="host", reason=f"host {h.name} takes no guest: {why}"))

    trigger = tuning.target_fraction + tuning.hysteresis
    over = sorted((h for h in hosts if h.physical > 0 and before[h.name] > trigger * h.physical),
                  key=lambda h: before[h.name] / h.physical, reverse=True)
    triggered = {h.name for h in over}
    pressed: list[tuple[HostLoad, str]] = []
    for h in hosts:
        if h.physical <= 0:
            world.refusals.append(Refusal(subject=h.name, kind="host", reason=(
                f"host {h.name} has not reported its memory: it is neither relieved nor a target")))
            continue
        if h.name in triggered:
            continue
        share = f"{_pct(before[h.name] / h.physical)} used, it triggers above {_pct(trigger)}"
        pressure = _pressure(h, tuning)
        if pressure is None:
            world.refusals.append(Refusal(subject=h.name, kind="host", reason=f"host {h.name} stays: {share}"))
        elif h.last_relieved_at is not None and now - h.last_relieved_at < tuning.pressure_settle_seconds:
            world.refusals.append(Refusal(subject=h.name, kind="host", reason=(
                f"host {h.name} is {pressure} at {share}, but a guest left it {now - h.last_relieved_at:.0f} s "
                f"ago: its pressure gets {tuning.pressure_settle_seconds:.0f} s to fall first")))
        else:
            pressed.append((h, pressure))
    for source in over:
        goal = int(tuning.target_fraction * source.physical)
        note = (f"host {source.name} is at {_pct(world.used[source.name] / source.physical)}, above its trigger "
                f"{_pct(trigger)}")
        _relieve(source, on.get(source.name, []), world, tuning, now, goal, note,
                 enough=f"target {_pct(tuning.target_fraction)}; the cheapest move that brings it under its target")
    # After the hosts over their trigger (those need it more), the worst pressure first.
    pressed.sort(key=lambda p: (-p[0].psi_some_avg10, -p[0].swap_in_rate, p[0].name))
    for source, pressure in pressed:
        # One guest, whatever it frees: the settle time decides whether another follows.
        note = (f"host {source.name} is {pressure} at {_pct(world.used[source.name] / source.physical)} used, "
                f"under its trigger {_pct(trigger)}")
        _relieve(source, on.get(source.name, []), world, tuning, now, world.used[source.name], note,
                 enough="one guest relieves it: the cheapest move", one=True)
    projections = tuple(Projection(host=h.name, physical=h.physical, before=before[h.name],
                                   after=world.used[h.name]) for h in hosts)
    return Plan(moves=tuple(world.moves), refusals=tuple(world.refusals), hosts=projections)


def _relieve(source: HostLoad, here: Sequence[GuestLoad], world: _World, tuning: BalancerTuning,
             now: float, goal: int, note: str, *, enough: str, one: bool = False) -> None:
    """Plan the moves that bring one host's used bytes down to ``goal``, cheapest sufficient guest first;
    with ``one``, exactly one move (the cheapest), whatever the goal.

    ``note`` says why the host is relieved; ``enough`` why a move that reaches the goal is chosen.
    """
    name = source.name
    if not source.up:
        world.refusals.append(Refusal(subject=name, kind="host",
                                      reason=f"{note}, but it is down (its numbers are old)"))
        return
    if source.mode == "off":
        world.refusals.append(Refusal(subject=name, kind="host", reason=f"{note}, but its balancer mode is off"))
        return
    candidates = []
    for g in sorted((g for g in here if g.id not in world.moving), key=lambda g: g.id):
        hold = _guest_hold(g, world, now, tuning)
        if hold is None:
            candidates.append(g)
        else:
            world.refusals.append(Refusal(subject=g.id, kind="guest", reason=f"guest {g.id} stays: {hold}"))
    limit = None
    planned = len(world.moves)

    def short() -> bool:  # still to relieve: above the goal, or (``one``) no move planned yet
        return world.used[name] > goal or (one and len(world.moves) == planned)

    while short() and candidates:
        if world.total >= tuning.max_moves:
            limit = f"{world.total} of at most {tuning.max_moves} moves in flight cluster-wide"
            break
        if world.busy[name] >= tuning.max_moves_per_host:
            limit = f"{world.busy[name]} of at most {tuning.max_moves_per_host} moves in flight on it"
            break
        options: list[tuple[GuestLoad, str, int, float, float]] = []
        for g in list(candidates):
            target, why = _best_target(g, world, tuning)
            if target is None:
                candidates.remove(g)
                where = "; ".join(why) or "there is no other host"
                world.refusals.append(Refusal(subject=g.id, kind="guest",
                                              reason=f"guest {g.id} stays: no host can take it ({where})"))
                continue
            size, duration, downtime = estimate(g, tuning)
            options.append((g, target, size, duration, downtime))
        if not options:
            break
        excess = world.used[name] - goal
        sufficient = options if one else [o for o in options if o[0].frees >= excess]
        if sufficient:
            pick = min(sufficient, key=lambda o: (cost(o[3], o[4], tuning), o[0].id))
            why_this = enough
        else:
            pick = max(options, key=lambda o: (o[0].frees, -cost(o[3], o[4], tuning), o[0].id))
            why_this = "no single move is enough: the largest first"
        g, target, size, duration, downtime = pick
        candidates.remove(g)
        _add(world, g, source, target, size, duration, downtime, tuning, f"{note}; {why_this}")
    if limit is not None:
        world.refusals.append(Refusal(subject=name, kind="host", reason=f"{note}: no more moves now, {limit}"))
    elif short():
        world.refusals.append(Refusal(subject=name, kind="host", reason=(
            f"{note}: still {_pct(world.used[name] / source.physical)} after the planned moves "
            "(no other guest can move)")))
    for g in candidates:  # considered, and not needed (or not allowed yet)
        why_not = f"the move limits are reached ({limit})" if limit is not None else (
            f"{name} is relieved by the planned moves")
        world.refusals.append(Refusal(subject=g.id, kind="guest", reason=f"guest {g.id} stays: {why_not}"))


def _add(world: _World, g: GuestLoad, source: HostLoad, target: str, size: int, duration: float,
         downtime: float, tuning: BalancerTuning, why: str) -> None:
    dest = world.hosts[target]
    world.used[source.name] -= g.frees
    world.used[target] += g.footprint
    world.incoming[target] += g.footprint
    world.busy[source.name] += 1
    world.busy[target] += 1
    world.total += 1
    world.moving.add(g.id)
    world.placed[g.id] = target
    advisory = source.mode != "auto" or dest.mode != "auto"
    after = world.used[target] / dest.physical
    world.moves.append(Move(
        guest=g.id, source=source.name, target=target, bytes=size, duration_seconds=round(duration, 3),
        downtime_seconds=round(downtime, 3), benefit=g.frees, cost=round(cost(duration, downtime, tuning), 3),
        advisory=advisory,
        reason=f"{why}; frees {g.frees // MIB} MiB; {target} goes to {_pct(after)}"
               + (" (advisory: a host is in mode advise)" if advisory else "")))


def by_host(plan_: Plan) -> Mapping[str, Projection]:
    """The plan's projections keyed by host name."""
    return {p.host: p for p in plan_.hosts}


__all__ = ["DEFAULT_TUNING", "SHOWN_REASONS", "BalancerTuning", "GroupPolicy", "GuestLoad", "HostLoad", "InFlight",
           "Membership", "MigrationStyle", "Mode", "Move", "Plan", "Projection", "Refusal", "by_host", "cost",
           "estimate", "plan", "score", "target_score"]
