"""The memory balancer as the control plane runs it: its inputs from the database, its plan, its moves.

``memory.balancer.plan`` decides (pure); this service reads what it needs -- every host's state
and latest memory ledger entry, the servers with their ledger rows, their server groups, the
migrations in flight, and when each server last moved -- and, on ``apply``, queues the plan's
applicable moves as live migrations through the compute service's ``os-migrateLive`` (so every
check a live migration makes is made again, the scheduler's filters on the named target included).
Admins only, like live migration.  A host's mode is its aggregates' ``yunstack:memory_balancer``
(the most conservative when they disagree, ``compute.aggregates``), else ``[compute] memory_balancer``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute.hosts import HostService
from yunstack.compute.memoryledger import LEVELS, OBSERVED_FOR
from yunstack.compute.operations.migrate import LiveMigrateBody
from yunstack.compute.service import ComputeService
from yunstack.db import locks
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.db.tables import servergroups as g
from yunstack.errors import BadRequest, Conflict, YunError
from yunstack.identity import policy
from yunstack.identity.context import AuthContext, Ref
from yunstack.memory import balancer
from yunstack.memory.balancer import (
    BalancerTuning,
    GroupPolicy,
    GuestLoad,
    HostLoad,
    InFlight,
    Membership,
    Mode,
    Plan,
)
from yunstack.memory.model import MIB, PressureLevel
from yunstack.types import utcnow

MODES: tuple[Mode, ...] = ("off", "advise", "auto")
MOVABLE_STATES = ("active", "paused")  # what os-migrateLive takes
# A ledger entry older than this is not planned on (managers report every ~10 s): the host then
# counts as one that has not reported, neither relieved nor a target.
STALE_AFTER = OBSERVED_FOR  # the scheduler's rule too: one age after which a report is not used
HISTORY = timedelta(hours=24)  # recorded passes are kept this long
HISTORY_REFUSALS = 50  # a recorded pass keeps this many of its refusals (the plan of the moment has all)
PASS_LOCK = "memory-balancer"  # one plan-and-queue at a time in the cluster


@dataclass(frozen=True, kw_only=True)
class Applied:
    """What became of one applicable move on ``apply``."""

    server_id: str
    target: str
    result: Literal["queued", "failed"]
    why: str = ""


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _epoch(when: datetime) -> float:
    return _aware(when).timestamp()


class BalancerService:
    def __init__(self, db: sessionmaker[Session], hosts: HostService, compute: ComputeService, *, mode: str,
                 tuning: BalancerTuning = balancer.DEFAULT_TUNING,
                 clock: Callable[[], datetime] = utcnow) -> None:
        if mode not in MODES:
            raise BadRequest("[compute] memory_balancer must be one of off, advise, auto, not {mode!r}.", mode=mode)
        if not (0.1 <= tuning.target_fraction <= 0.95 and tuning.min_benefit_bytes >= 0):
            raise BadRequest("[compute] memory_balancer_target_percent must be 10 to 95 and "
                             "memory_balancer_min_benefit_mib at least 0.")
        self._db = db
        self._hosts = hosts
        self._compute = compute
        self.mode: Mode = mode
        self.tuning = tuning
        self.clock = clock
        self._last_moves: list[tuple[str, str, str, bool]] = []  # of the pass this process recorded last
        self._passing = threading.Lock()

    def plan(self, ctx: AuthContext) -> Plan:
        """The plan for the cluster as it is now (admins only); empty in mode ``off``."""
        policy.require_admin(ctx, "os_compute_api:os-yunstack-memory-balancer")
        modes = self._compute.aggregates.mode_for_hosts(self.mode)
        if self.mode == "off" and all(mode == "off" for mode in modes.values()):
            return Plan()
        with self._db() as s:
            hosts, guests, flying = self.inputs(s, modes)
        return balancer.plan(hosts, guests, flying, self.tuning, _epoch(self.clock()))

    def auto_pass(self, request_id: str) -> list[Applied]:
        """The control plane's periodic pass (``[compute] memory_balancer_interval``): ``apply`` as itself.

        Its moves are recorded as the balancer's (instance actions by the user ``memory-balancer``).
        Several API processes may each run it: a move one of them queued is in flight for the
        others' plans, and a second live migration of a server that is moving is refused.
        """
        now = datetime.now(UTC)
        ctx = AuthContext(user=Ref(id="memory-balancer", name="memory-balancer"), project=Ref(id="", name=""),
                          roles=(Ref(id="admin", name="admin"),), methods=("internal",), audit_ids=("internal",),
                          issued_at=now, expires_at=now)
        with self._one_pass(wait=False) as mine:
            return self._apply(ctx, request_id, trigger="auto")[1] if mine else []

    def history(self, ctx: AuthContext, *, since: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The recorded passes, newest first: each that queued a move, or whose planned moves changed."""
        policy.require_admin(ctx, "os_compute_api:os-yunstack-memory-balancer")
        query = select(t.BalancerPass).order_by(t.BalancerPass.at.desc(), t.BalancerPass.id.desc()).limit(limit)
        if since is not None:
            query = query.where(t.BalancerPass.at >= since)
        with self._db() as s:
            return [{"id": row.id, "at": row.at.isoformat(), "trigger": row.trigger, **row.data}
                    for row in s.scalars(query)]

    def metrics(self) -> tuple[dict[str, int], dict[str, Any] | None]:
        """For ``/metrics``: the moves queued and failed in the recorded passes, and the newest pass."""
        bp = t.BalancerPass
        with self._db() as s:
            queued, failed = s.execute(select(func.coalesce(func.sum(bp.queued), 0),
                                              func.coalesce(func.sum(bp.failed), 0))).one()
            row = s.scalars(select(bp).order_by(bp.at.desc(), bp.id.desc()).limit(1)).first()
            newest = None if row is None else {"at": _aware(row.at), "trigger": row.trigger, **row.data}
        return {"queued": int(queued), "failed": int(failed)}, newest

    def _remember(self, trigger: str, plan: Plan, applied: Sequence[Applied]) -> None:
        """Record a pass that queued a move or planned other moves than the last one this process recorded.

        A quiet cluster's passes (the same plan every 30 s) are not recorded; the history keeps
        ``HISTORY`` of them, like the memory ledger.
        """
        moves = [(m.guest, m.source, m.target, m.advisory) for m in plan.moves]
        if not applied and moves == self._last_moves:
            return
        self._last_moves = moves
        data = plan_json(plan, self.mode, applied)
        data["refusals"] = data["refusals"][:HISTORY_REFUSALS]
        now = self.clock()
        with self._db.begin() as s:
            s.add(t.BalancerPass(at=now, trigger=trigger, data=data,
                                 queued=sum(1 for a in applied if a.result == "queued"),
                                 failed=sum(1 for a in applied if a.result == "failed")))
            s.execute(delete(t.BalancerPass).where(t.BalancerPass.at < now - HISTORY))

    def apply(self, ctx: AuthContext, request_id: str) -> tuple[Plan, list[Applied]]:
        """Plan, then queue every applicable (``auto``) move as a live migration to its target; the
        pass goes into the history when it moved something or its plan changed.

        One pass at a time (``_one_pass``): two plans made side by side would each see the same
        room on a target and fill it twice.  409 while another API process runs one.
        """
        policy.require_admin(ctx, "os_compute_api:os-yunstack-memory-balancer")
        with self._one_pass(wait=True) as mine:
            if not mine:
                raise Conflict("Another memory balancer pass is running; try again in a few seconds.")
            return self._apply(ctx, request_id, trigger="apply")

    @contextlib.contextmanager
    def _one_pass(self, *, wait: bool) -> Iterator[bool]:
        """Whether this caller may plan and queue now: this process's lock, then (PostgreSQL) the
        cluster's; ``wait`` waits for this process's other pass, never for another process's."""
        if not self._passing.acquire(blocking=wait):
            yield False
            return
        try:
            with self._db() as s:
                if not locks.try_session_lock(s, PASS_LOCK):
                    yield False
                    return
                try:
                    yield True
                finally:
                    locks.session_unlock(s, PASS_LOCK)
        finally:
            self._passing.release()

    def _apply(self, ctx: AuthContext, request_id: str, *, trigger: str) -> tuple[Plan, list[Applied]]:
        plan = self.plan(ctx)
        done = []
        for move in plan.applicable:
            body = LiveMigrateBody(host=move.target, block_migration=None, force=False)
            try:
                self._compute.action(ctx, move.guest, "live-migration", request_id, body)
            except YunError as exc:  # one refused move (the server changed meanwhile) does not stop the others
                done.append(Applied(server_id=move.guest, target=move.target, result="failed", why=exc.text))
            else:
                done.append(Applied(server_id=move.guest, target=move.target, result="queued"))
        self._remember(trigger, plan, done)
        return plan, done

    # -- the inputs ----------------------------------------------------------------------------

    def inputs(self, s: Session, modes: Mapping[str, str] | None = None
               ) -> tuple[list[HostLoad], list[GuestLoad], list[InFlight]]:
        """Every host, every placed server and every migration in flight, as the balancer takes them;
        each host in its mode from ``modes`` (its aggregates'), else the cluster's."""
        modes = modes or {}
        now = self.clock()
        reported = {host: (_aware(at), data) for host, (at, data) in self._ledgers(s).items()
                    if _aware(at) >= now - STALE_AFTER}
        ledgers = {host: data for host, (_, data) in reported.items()}
        relieved = self._last_relieved(s, now - timedelta(seconds=self.tuning.pressure_settle_seconds))
        hosts = [replace(self._host(u.host, cast(Mode, modes.get(u.host, self.mode)), u.up, u.disabled,
                                    u.disabled_reason, u.memory_mib, ledgers.get(u.host)), zone=u.availability_zone,
                         last_relieved_at=relieved.get(u.host))
                 for u in self._hosts.host_states(s)]
        rows = {r["instance_id"]: r for entry in ledgers.values() for r in entry.get("guests", [])}
        groups = self._groups(s)
        moved = self._last_moved(s, now - timedelta(seconds=self.tuning.cooldown_seconds))
        inst = t.Instance
        guests = []
        for row in s.scalars(select(inst).where(inst.host.is_not(None), inst.vm_state != "deleted")
                             .order_by(inst.id)):
            seen = rows.get(row.id, {})
            immovable = self._immovable(row)
            guests.append(GuestLoad(
                id=row.id, host=row.host or "", memory=int(row.flavor.get("ram", 0)) * MIB,
                working_set=int(seen.get("working_set") or 0), resident=int(seen.get("resident") or 0),
                shared=int(seen.get("template_shared") or 0),
                dirty_rate=None if seen.get("dirty_rate") is None else float(seen["dirty_rate"]),
                last_moved_at=moved.get(row.id), groups=groups.get(row.id, ()), movable=immovable is None,
                why_immovable=immovable or ""))
        m = mig.Migration
        flying = []
        for record in s.scalars(select(m).where(m.status.in_(mig.MOVING))):
            size = record.memory_total_bytes or self._flavor_bytes(s, record.instance_uuid)
            flying.append(InFlight(guest=record.instance_uuid, source=record.source_compute,
                                   target=record.dest_compute, bytes=size))
        # A move that ended after its source's or target's newest report is not in those reports
        # yet: the source still counts the guest, the target not.  Planning on them would relieve
        # the source twice and fill the target past its target, so it counts as in flight (its
        # hosts take no other move) until both have reported since.
        for record in s.scalars(select(m).where(m.status.not_in(mig.MOVING), m.updated_at >= now - STALE_AFTER)):
            ended = _aware(record.updated_at)
            if any(host in reported and reported[host][0] < ended
                   for host in (record.source_compute, record.dest_compute)):
                size = record.memory_total_bytes or self._flavor_bytes(s, record.instance_uuid)
                flying.append(InFlight(guest=record.instance_uuid, source=record.source_compute,
                                       target=record.dest_compute, bytes=size))
        return hosts, guests, flying

    @staticmethod
    def _host(name: str, mode: Mode, up: bool, disabled: bool, reason: str | None, memory_mib: int,
              entry: Mapping[str, Any] | None) -> HostLoad:
        draining = disabled and "drain" in (reason or "")
        if entry is None:  # no memory report yet: its size only, so it is neither source nor target
            return HostLoad(name=name, physical=0, used=0, mode=mode, up=up, disabled=disabled,
                            draining=draining)
        h = entry.get("host", {})
        physical = int(h.get("physical") or memory_mib * MIB)
        blocked = h.get("admission_blocked")
        return HostLoad(
            name=name, physical=physical, used=max(0, physical - int(h.get("available") or 0)), mode=mode,
            up=up, disabled=disabled, draining=draining,
            level=PressureLevel(LEVELS.get(str(entry.get("level", "none")), 0)),
            psi_some_avg10=float(h.get("psi_some_avg10") or 0.0),
            swap_in_rate=float(h.get("swap_in_rate") or 0.0), swap_out_rate=float(h.get("swap_out_rate") or 0.0),
            admission_room=None if "admission_room" not in h else (0 if blocked else int(h["admission_room"])))

    @staticmethod
    def _ledgers(s: Session) -> dict[str, tuple[datetime, Mapping[str, Any]]]:
        """The latest ledger entry of every host that reported one, with when it came."""
        ms = t.MemorySample
        newest = select(ms.host, func.max(ms.at).label("at")).group_by(ms.host).subquery()
        rows = s.scalars(select(ms).join(newest, (ms.host == newest.c.host) & (ms.at == newest.c.at)))
        return {r.host: (r.at, r.data) for r in rows}

    @staticmethod
    def _groups(s: Session) -> dict[str, tuple[Membership, ...]]:
        m, grp = g.ServerGroupMember, g.ServerGroup
        found: dict[str, list[Membership]] = {}
        for instance_id, group_id, group_policy in s.execute(
                select(m.instance_id, m.group_id, grp.policy).join(grp, grp.id == m.group_id)):
            if group_policy in ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"):
                found.setdefault(instance_id, []).append(Membership(group_id, cast(GroupPolicy, group_policy)))
        return {k: tuple(v) for k, v in found.items()}

    @staticmethod
    def _last_relieved(s: Session, since: datetime) -> dict[str, float]:
        """When the newest move that took a guest off each host ended since ``since`` (its pressure's
        settle time); a move that failed took nothing off."""
        m = mig.Migration
        rows = s.execute(select(m.source_compute, func.max(m.updated_at))
                         .where(m.status.in_(mig.LEFT_ITS_SOURCE), m.updated_at >= since).group_by(m.source_compute))
        return {host: _epoch(when) for host, when in rows if host and when is not None}

    @staticmethod
    def _last_moved(s: Session, since: datetime) -> dict[str, float]:
        """When each server's newest move of any kind ended since ``since`` (the cooldown's start).

        Every end counts, not only arrivals: a move that failed or was cancelled is not tried again
        before the cooldown either (an admin's abort stays an abort; a failing target is not retried
        every pass, each attempt pausing the guest).
        """
        m = mig.Migration
        rows = s.execute(select(m.instance_uuid, func.max(m.updated_at))
                         .where(m.status.not_in(mig.MOVING), m.updated_at >= since).group_by(m.instance_uuid))
        return {iid: _epoch(when) for iid, when in rows if when is not None}

    @staticmethod
    def _immovable(row: t.Instance) -> str | None:
        if row.task_state is not None:
            return f"a task is running ({row.task_state})"
        if row.vm_state not in MOVABLE_STATES:
            return f"it is {row.vm_state}: only an active or paused server moves live"
        return None

    @staticmethod
    def _flavor_bytes(s: Session, instance_id: str) -> int:
        row = s.get(t.Instance, instance_id)
        return 0 if row is None else int(row.flavor.get("ram", 0)) * MIB


def plan_json(plan: Plan, mode: str, applied: Sequence[Applied] | None = None) -> dict[str, Any]:
    """The plan as the API renders it (bytes and seconds; fractions of physical rounded to 0.1 %)."""
    body: dict[str, Any] = {
        "mode": mode,
        "moves": [asdict(m) for m in plan.moves],
        "refusals": [asdict(r) for r in plan.refusals],
        "hosts": [dict(asdict(p), before_fraction=round(p.before_fraction, 3),
                       after_fraction=round(p.after_fraction, 3)) for p in plan.hosts],
    }
    if applied is not None:
        body["applied"] = [asdict(a) for a in applied]
    return body
