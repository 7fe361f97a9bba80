"""The task service: the one place long-running work is recorded, claimed, retried and finished.

Life of a step::

    enqueue (in the caller's transaction) -> queued
    claim (by its host, under a lease)     -> running, attempt + 1
    complete                               -> succeeded
    fail                                   -> failed (or queued again with ``retry=True`` while attempts remain)
    lease runs out (``expire``)            -> queued again while attempts remain, else failed with the reason
    cancel (only while queued)             -> cancelled

A *parent* (``enqueue_group``) has no host and is never claimed: it runs when its first child
starts, fails when a child fails (its queued children are then cancelled), and succeeds when every
child has.  A resource's tasks run in the order they were queued: a step is not claimable while
an earlier task of the same resource (other than its own parent) is queued or running.

Every state change is one conditional ``UPDATE`` (``... WHERE state = 'running' AND lease_owner =
:owner``), so a late report from a host whose lease ran out changes nothing and is refused
(``LeaseLost``).  Claiming is one ``UPDATE ... WHERE seq IN (SELECT ... LIMIT n)``: on PostgreSQL
the inner select is ``FOR UPDATE SKIP LOCKED``, so concurrent claimers skip each other's rows
instead of waiting; SQLite has one writer, and the single statement takes the write lock before it
reads, so two claimers never see the same row queued.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Engine, and_, bindparam, delete, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from yunstack.db.tables import tasks as t
from yunstack.errors import BadRequest
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.tasks.errors import LeaseLost, TaskNotCancellable, TaskNotFound
from yunstack.tasks.model import (
    ACTIVE,
    FINISHED,
    REGISTRY,
    Claim,
    Expiry,
    Resource,
    TaskRecord,
    TaskRegistry,
    TaskState,
)
from yunstack.types import new_uuid, utcnow

Clock = Callable[[], datetime]
Q, R, S, F, C = (TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED, TaskState.FAILED,
                 TaskState.CANCELLED)
MAX_LEASE_SECONDS = 24 * 3600.0

_T = t.Task.__table__
# ``outstanding``, built once: an idle host's long-poll runs it every twenty seconds.
_OUTSTANDING = select(
    exists().where(_T.c.host == bindparam("o_host"), _T.c.state == Q),
    exists().where(_T.c.host == bindparam("o_host"), _T.c.state == R, _T.c.lease_owner == bindparam("o_owner")))


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


class TaskService:
    """Durable tasks.  ``clock`` is injected so that tests move time instead of sleeping."""

    def __init__(self, db: sessionmaker[Session], registry: TaskRegistry = REGISTRY, *,
                 clock: Clock = utcnow, statements: Engine | None = None) -> None:
        self._db = db
        self._statements = statements  # autocommit, for ``outstanding`` (db.engine.make_engine)
        self.registry = registry
        self._clock = clock

    @contextmanager
    def _tx(self, s: Session | None) -> Iterator[Session]:
        """The caller's transaction if it passes one, else one of our own."""
        if s is not None:
            yield s
            return
        with self._db.begin() as own:
            yield own

    # -- queueing work, inside the caller's transaction -----------------------------------------

    def enqueue(self, s: Session, *, kind: str, resource: Resource, host: str, step: str, args: BaseModel,
                request_id: str | None = None, parent_id: str | None = None,
                max_attempts: int | None = None) -> str:
        """Queue one host step; returns its id.  Commits with the caller's transaction, or not at all.

        ``args`` must be an instance of the model the kind registered for ``step`` (a TypeError
        otherwise: that is a bug in the caller, not bad input).  With ``parent_id`` the step is a
        child of a group from :meth:`enqueue_group` of the same kind.
        """
        spec = self.registry.kind(kind).step(step)
        if type(args) is not spec.args:
            raise TypeError(f"{kind}/{step} takes {spec.args.__name__}, not {type(args).__name__}")
        if not host:
            raise ValueError("a step needs the host that runs it")
        attempts = self.registry.kind(kind).max_attempts if max_attempts is None else max_attempts
        if attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if parent_id is not None:
            self._check_parent(s, parent_id, kind)
        return self._add(s, kind=kind, resource=resource, host=host, step=step,
                         args=args.model_dump(mode="json"), request_id=request_id, parent_id=parent_id,
                         max_attempts=attempts)

    def enqueue_group(self, s: Session, *, kind: str, resource: Resource, request_id: str | None = None) -> str:
        """Queue a parent for multi-step work; add its steps with ``enqueue(..., parent_id=id)``."""
        self.registry.kind(kind)
        return self._add(s, kind=kind, resource=resource, host=None, step=None, args={}, request_id=request_id,
                         parent_id=None, max_attempts=1)

    def _add(self, s: Session, *, kind: str, resource: Resource, host: str | None, step: str | None,
             args: dict[str, object], request_id: str | None, parent_id: str | None, max_attempts: int) -> str:
        now = self._clock()
        row = t.Task(id=new_uuid(), kind=kind, resource_type=resource.type, resource_id=resource.id,
                     project_id=resource.project_id, host=host, step=step, args=args, state=Q, attempt=0,
                     max_attempts=max_attempts, request_id=request_id, parent_id=parent_id, created_at=now,
                     updated_at=now)
        s.add(row)
        s.flush()  # assigns seq now: the order of the resource's tasks is the order of enqueue calls
        return row.id

    @staticmethod
    def _check_parent(s: Session, parent_id: str, kind: str) -> None:
        parent = s.scalar(select(t.Task).where(t.Task.id == parent_id))
        if parent is None:
            raise TaskNotFound(id=parent_id)
        if parent.host is not None or parent.parent_id is not None:
            raise ValueError(f"task {parent_id} is not a group: only enqueue_group makes parents")
        if parent.kind != kind:
            raise ValueError(f"a {kind} step cannot belong to a {parent.kind} group")
        if parent.state not in ACTIVE:
            raise ValueError(f"group {parent_id} has already ended ({parent.state})")

    def cancel_queued(self, s: Session, resource: Resource, reason: str) -> list[str]:
        """Cancel every queued task of a resource (work a delete supersedes); returns their ids."""
        rows = list(s.scalars(select(t.Task).where(
            t.Task.resource_type == resource.type, t.Task.resource_id == resource.id, t.Task.state == Q)
            .order_by(t.Task.seq)))
        done = [row for row in rows if self._finish(s, row.id, C, reason, only=(Q,))]
        for parent_id in {row.parent_id for row in done if row.parent_id}:
            self._settle(s, parent_id)
        return [row.id for row in done]

    def abandon(self, s: Session, resource: Resource, reason: str, *, but_on: str | None = None) -> None:
        """End every task of a resource that has not ended (but those on host ``but_on``): running
        ones fail, queued ones are cancelled.

        For a decision that takes the work away from its host (an evacuation fences a dead host, a
        delete ends a migration's step on the other host); a late report of such a step is then
        refused like any other whose lease is gone.
        """
        q = select(t.Task).where(
            t.Task.resource_type == resource.type, t.Task.resource_id == resource.id, t.Task.state.in_(ACTIVE))
        if but_on is not None:
            q = q.where(or_(t.Task.host.is_(None), t.Task.host != but_on))
        rows = list(s.scalars(q.order_by(t.Task.seq)))
        for row in rows:
            self._finish(s, row.id, F if row.state == R else C, reason, only=ACTIVE)
        for parent_id in {row.parent_id for row in rows if row.parent_id}:
            self._settle(s, parent_id)

    # -- hosts: claim, renew, complete, fail ------------------------------------------------------

    def renew_held(self, host: str, owner: str, task_ids: Collection[str], *, lease_seconds: float = 60.0) -> int:
        """Extend, from now, the leases ``owner`` holds on ``host`` among ``task_ids`` (what the agent
        says it still runs); one UPDATE.  Returns how many it extended."""
        if not task_ids:
            return 0
        now = self._clock()
        with self._db.begin() as s:
            done = s.execute(update(t.Task).where(
                t.Task.host == host, t.Task.state == R, t.Task.lease_owner == owner, t.Task.id.in_(list(task_ids)))
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now))
            return int(done.rowcount)  # type: ignore[attr-defined]

    def outstanding(self, host: str, owner: str) -> tuple[bool, bool]:
        """Whether ``host`` has a step to claim, and whether ``owner`` holds one there: one read.

        Most long-polls of a cloud come from idle hosts; this answers them without the claim's and
        the hand-out's statements.  (A step queued after the read wakes the wait: ``HostHub``.)
        """
        params = {"o_host": host, "o_owner": owner}
        if self._statements is not None:
            with self._statements.connect() as c:
                row = c.execute(_OUTSTANDING, params).one()
        else:
            with self._db() as s:
                row = s.execute(_OUTSTANDING, params).one()
        return bool(row[0]), bool(row[1])

    def claim(self, host: str, *, limit: int = 1, lease_seconds: float = 60.0,
              owner: str | None = None) -> list[Claim]:
        """Up to ``limit`` of ``host``'s claimable steps, oldest first, each now leased to ``owner``.

        ``owner`` defaults to the host's name; an agent that restarts under another owner name
        cannot finish its predecessor's leases (they run out and are retried).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if not 0 < lease_seconds <= MAX_LEASE_SECONDS:
            raise ValueError(f"lease_seconds must be in (0, {MAX_LEASE_SECONDS:.0f}]")
        owner = owner or host
        now = self._clock()
        with self._db.begin() as s:
            task = t.Task
            # Most polls find nothing: an indexed read answers them without taking SQLite's write
            # lock or writing on PostgreSQL.  Work committed after this read is the next poll's.
            if s.scalar(select(task.seq).where(task.host == host, task.state == Q).limit(1)) is None:
                return []
            earlier = aliased(t.Task)  # (built only when there is work: it is not cheap)
            blocked = exists().where(
                earlier.resource_type == task.resource_type, earlier.resource_id == task.resource_id,
                earlier.seq < task.seq, earlier.state.in_(ACTIVE),
                or_(task.parent_id.is_(None), earlier.id != task.parent_id))
            pick = (select(task.seq).where(task.host == host, task.state == Q, ~blocked)
                    .order_by(task.seq).limit(limit))
            if s.get_bind().dialect.name == "postgresql":
                pick = pick.with_for_update(skip_locked=True, of=task)
            seqs = list(s.scalars(
                update(task).where(task.seq.in_(pick.scalar_subquery()), task.state == Q)
                .values(state=R, attempt=task.attempt + 1, lease_owner=owner,
                        lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
                .returning(task.seq)))
            rows = list(s.scalars(select(task).where(task.seq.in_(seqs)).order_by(task.seq))) if seqs else []
            claims = [c for c in (self._claimed(s, row) for row in rows) if c is not None]
            parents = {row.parent_id for row in rows if row.parent_id}
            if parents:
                # Skip a parent another transaction holds (a sibling settling it): a claim never waits
                # for a lock while it holds its steps' row locks, so claims and settles cannot deadlock.
                promote = select(task.seq).where(task.id.in_(parents), task.state == Q)
                if s.get_bind().dialect.name == "postgresql":
                    promote = promote.with_for_update(skip_locked=True)
                s.execute(update(task).where(task.seq.in_(promote.scalar_subquery()), task.state == Q)
                          .values(state=R, updated_at=now))
        return claims

    def held(self, host: str, owner: str, *, besides: Collection[str] = ()) -> list[Claim]:
        """The steps ``owner`` holds on ``host`` other than ``besides`` (task ids), oldest first.

        What an agent was handed but does not list as running: a hand-out whose answer it never
        received (a long-poll cut off).  Handing them out again beats waiting for their leases.
        """
        with self._db.begin() as s:
            q = select(t.Task).where(t.Task.host == host, t.Task.state == R, t.Task.lease_owner == owner)
            if besides:
                q = q.where(t.Task.id.not_in(list(besides)))
            rows = list(s.scalars(q.order_by(t.Task.seq)))
            return [c for c in (self._claimed(s, row) for row in rows) if c is not None]

    def _claimed(self, s: Session, row: t.Task) -> Claim | None:
        """The claim, with its arguments read back as their model; a row that no longer parses fails."""
        assert row.step is not None and row.host is not None and row.lease_owner is not None
        assert row.lease_expires_at is not None
        try:
            spec = self.registry.kind(row.kind).step(row.step)
            args = spec.args.model_validate(row.args)
        except ValueError as exc:  # pydantic.ValidationError is one
            # Version skew or a removed kind: running it would be a guess, so it fails with the why.
            self._finish(s, row.id, F, f"arguments cannot be read: {exc}", only=(R,))
            if row.parent_id:
                self._settle(s, row.parent_id)
            return None
        return Claim(id=row.id, kind=row.kind, step=row.step,
                     resource=Resource(type=row.resource_type, id=row.resource_id, project_id=row.project_id),
                     host=row.host, args=args, attempt=row.attempt, max_attempts=row.max_attempts,
                     lease_owner=row.lease_owner, lease_expires_at=row.lease_expires_at,
                     request_id=row.request_id, parent_id=row.parent_id)

    def renew(self, task_id: str, *, owner: str, lease_seconds: float = 60.0, attempt: int | None = None
              ) -> datetime:
        """Extend a running task's lease from now; LeaseLost if ``owner`` (in ``attempt``) no longer holds it."""
        if not 0 < lease_seconds <= MAX_LEASE_SECONDS:
            raise ValueError(f"lease_seconds must be in (0, {MAX_LEASE_SECONDS:.0f}]")
        now = self._clock()
        until = now + timedelta(seconds=lease_seconds)
        with self._db.begin() as s:
            cond = [t.Task.id == task_id, t.Task.state == R, t.Task.lease_owner == owner]
            if attempt is not None:
                cond.append(t.Task.attempt == attempt)
            done = s.execute(update(t.Task).where(*cond).values(lease_expires_at=until, updated_at=now))
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise self._lost(s, task_id, owner)
        return until

    def complete(self, task_id: str, result: BaseModel | None = None, *, owner: str | None = None,
                 attempt: int | None = None, s: Session | None = None) -> None:
        """The step succeeded.  ``result`` must be the step's registered result model (or None).

        With ``s`` it commits with the caller's transaction, so that what the control plane
        applies from the result and the task's end are one change.  With ``owner`` (and
        ``attempt``, the claim's) only that lease holder, in that run, may complete it; LeaseLost
        when the task is no longer running under it (a run whose lease ran out and was retried).
        """
        with self._tx(s) as tx:
            row = self._row(tx, task_id)
            if row.step is None:
                raise ValueError(f"task {task_id} is a group: it completes from its children")
            spec = self.registry.kind(row.kind).step(row.step)
            if result is not None and (spec.result is None or type(result) is not spec.result):
                expected = spec.result.__name__ if spec.result else "no result"
                raise TypeError(f"{row.kind}/{row.step} reports {expected}, not {type(result).__name__}")
            stored = None if result is None else result.model_dump(mode="json")
            if not self._finish(tx, task_id, S, None, only=(R,), owner=owner, attempt=attempt, result=stored):
                raise self._lost(tx, task_id, owner)
            if row.parent_id:
                self._settle(tx, row.parent_id)

    def fail(self, task_id: str, reason: str, *, owner: str | None = None, attempt: int | None = None,
             retry: bool = False, s: Session | None = None) -> TaskState:
        """The step failed.  With ``retry`` (a transient error) it is queued again while attempts
        remain.  Returns the task's new state (QUEUED or FAILED)."""
        with self._tx(s) as tx:
            row = self._row(tx, task_id)
            if row.step is None:
                raise ValueError(f"task {task_id} is a group: it fails from its children")
            if attempt is not None and attempt != row.attempt:
                raise self._lost(tx, task_id, owner)
            if retry and row.attempt < row.max_attempts:
                why = f"{reason} (attempt {row.attempt} of {row.max_attempts}); queued again"
                if not self._requeue(tx, row, why, owner):
                    raise self._lost(tx, task_id, owner)
                return Q
            if not self._finish(tx, task_id, F, reason, only=(R,), owner=owner, attempt=attempt):
                raise self._lost(tx, task_id, owner)
            if row.parent_id:
                self._settle(tx, row.parent_id)
            return F

    def cancel(self, task_id: str, reason: str = "cancelled") -> None:
        """Cancel a queued step, or a group none of whose steps has started (with its queued steps)."""
        with self._db.begin() as s:
            row = self._row(s, task_id)
            if row.step is None:
                started = s.scalar(select(t.Task.id).where(t.Task.parent_id == task_id, t.Task.state != Q))
                if started is None:
                    s.execute(update(t.Task).where(t.Task.parent_id == task_id, t.Task.state == Q)
                              .values(state=C, reason=reason, updated_at=self._clock(),
                                      finished_at=self._clock()))
            if not self._finish(s, task_id, C, reason, only=(Q,)):
                raise TaskNotCancellable(id=task_id, state=self._row(s, task_id).state)
            if row.parent_id:
                self._settle(s, row.parent_id)

    # -- the lease sweep ---------------------------------------------------------------------------

    def expire(self) -> list[Expiry]:
        """Retry or fail every running step whose lease has run out.  Call it periodically."""
        now = self._clock()
        return self._end_leases(t.Task.lease_expires_at < now, now, "expired")

    def release(self, host: str, *, keep_owner: str | None = None) -> list[Expiry]:
        """End every lease on ``host`` now (but ``keep_owner``'s), as if it had run out.

        An agent that restarts calls this under its new owner name: the steps its predecessor held
        run again at once (or fail, out of attempts) instead of after their leases.
        """
        cond = [t.Task.host == host]
        if keep_owner is not None:
            cond.append(or_(t.Task.lease_owner.is_(None), t.Task.lease_owner != keep_owner))
        return self._end_leases(and_(*cond), None, "released")

    def _end_leases(self, which: ColumnElement[bool], expired_before: datetime | None, verb: str) -> list[Expiry]:
        out: list[Expiry] = []
        with self._db.begin() as s:
            q = select(t.Task).where(t.Task.state == R, t.Task.host.is_not(None), which).order_by(t.Task.seq)
            if s.get_bind().dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)  # two sweepers share the work, never count twice
            for row in list(s.scalars(q)):
                if row.attempt < row.max_attempts:
                    why = (f"lease {verb} on host {row.host} (attempt {row.attempt} of {row.max_attempts}); "
                           "queued again")
                    if self._requeue(s, row, why, row.lease_owner, expired_before=expired_before):
                        out.append(Expiry(id=row.id, host=row.host, state=Q, reason=why))
                    continue
                why = f"lease {verb} on host {row.host} after {_attempts(row.attempt)}"
                if self._finish(s, row.id, F, why, only=(R,), owner=row.lease_owner, expired_before=expired_before):
                    out.append(Expiry(id=row.id, host=row.host, state=F, reason=why))
                    if row.parent_id:
                        self._settle(s, row.parent_id)
        return out

    def purge(self, finished_before: datetime) -> int:
        """Delete tasks that ended before ``finished_before`` (a group with its steps, once none runs).

        Nova's instance actions keep the users' history; the task table only needs recent work.
        """
        child = aliased(t.Task)
        running_child = exists().where(child.parent_id == t.Task.id, child.state.in_(ACTIVE))
        with self._db.begin() as s:
            done = s.execute(delete(t.Task).where(
                t.Task.parent_id.is_(None), t.Task.state.in_(FINISHED), t.Task.finished_at < finished_before,
                ~running_child))
            return int(done.rowcount)  # type: ignore[attr-defined]

    # -- state changes: each one conditional UPDATE ------------------------------------------------

    def _finish(self, s: Session, task_id: str, state: TaskState, reason: str | None, *,
                only: Sequence[TaskState], owner: str | None = None, attempt: int | None = None,
                result: dict[str, object] | None = None, expired_before: datetime | None = None) -> bool:
        now = self._clock()
        cond = [t.Task.id == task_id, t.Task.state.in_(only)]
        if owner is not None:
            cond.append(t.Task.lease_owner == owner)
        if attempt is not None:
            cond.append(t.Task.attempt == attempt)
        if expired_before is not None:
            cond.append(t.Task.lease_expires_at < expired_before)
        done = s.execute(update(t.Task).where(and_(*cond)).values(
            state=state, reason=reason, result=result, lease_expires_at=None, updated_at=now, finished_at=now))
        return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def _requeue(self, s: Session, row: t.Task, reason: str, owner: str | None, *,
                 expired_before: datetime | None = None) -> bool:
        cond = [t.Task.id == row.id, t.Task.state == R, t.Task.attempt == row.attempt]
        if owner is not None:
            cond.append(t.Task.lease_owner == owner)
        if expired_before is not None:
            cond.append(t.Task.lease_expires_at < expired_before)
        done = s.execute(update(t.Task).where(and_(*cond)).values(
            state=Q, reason=reason, lease_owner=None, lease_expires_at=None, updated_at=self._clock()))
        return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def _settle(self, s: Session, parent_id: str) -> None:
        """A group's state from its children: failed as soon as one fails, succeeded when all have."""
        lock = select(t.Task.seq).where(t.Task.id == parent_id)
        if s.get_bind().dialect.name == "postgresql":
            lock = lock.with_for_update()  # two children ending at once settle one after the other
        s.execute(lock)
        # populate_existing: rows this session loaded before our UPDATEs must not answer with old states.
        children = list(s.scalars(select(t.Task).where(t.Task.parent_id == parent_id).order_by(t.Task.seq)
                                  .execution_options(populate_existing=True)))
        # A group cannot do what it was for once one step failed or was cancelled: it ends at once
        # with that step's reason, and its steps no host has started are cancelled.
        ended = next((c for c in children if c.state == F), None) or next(
            (c for c in children if c.state == C), None)
        if ended is not None:
            state = F if ended.state == F else C
            verb = "failed" if state == F else "was cancelled"
            why = f"step {ended.step} on host {ended.host} {verb}: {ended.reason}"
            if self._finish(s, parent_id, state, why, only=ACTIVE):
                now = self._clock()
                s.execute(update(t.Task).where(t.Task.parent_id == parent_id, t.Task.state == Q).values(
                    state=C, reason=f"cancelled: the group ended ({why})", updated_at=now, finished_at=now))
            return
        if children and all(c.state == S for c in children):
            self._finish(s, parent_id, S, None, only=ACTIVE)

    @staticmethod
    def _row(s: Session, task_id: str) -> t.Task:
        row = s.scalar(select(t.Task).where(t.Task.id == task_id).execution_options(populate_existing=True))
        if row is None:
            raise TaskNotFound(id=task_id)
        return row

    def _lost(self, s: Session, task_id: str, owner: str | None) -> LeaseLost:
        row = s.scalar(select(t.Task).where(t.Task.id == task_id).execution_options(populate_existing=True))
        state = "gone" if row is None else row.state
        return LeaseLost(id=task_id, owner=owner or "anyone", state=state)

    # -- reads -------------------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord:
        """One task by id (for the control plane; the API uses :meth:`show`)."""
        with self._db() as s:
            row = self._row(s, task_id)
            return self._records(s, [row])[0]

    def for_resource(self, resource: Resource) -> list[TaskRecord]:
        """A resource's tasks in the order they were queued."""
        with self._db() as s:
            rows = list(s.scalars(select(t.Task).where(t.Task.resource_type == resource.type,
                                                       t.Task.resource_id == resource.id).order_by(t.Task.seq)))
            return self._records(s, rows)

    def active(self, s: Session, resource: Resource) -> list[TaskRecord]:
        """The resource's queued and running tasks, oldest first, read in the caller's transaction
        (is work outstanding for this resource, and which)."""
        rows = list(s.scalars(select(t.Task).where(
            t.Task.resource_type == resource.type, t.Task.resource_id == resource.id, t.Task.state.in_(ACTIVE))
            .order_by(t.Task.seq)))
        return self._records(s, rows)

    def args_of(self, record: TaskRecord) -> BaseModel:
        """A step's stored arguments as its registered model; ValueError for a group or an unreadable row."""
        if record.step is None:
            raise ValueError(f"task {record.id} is a group: it has no arguments")
        return self.registry.kind(record.kind).step(record.step).args.model_validate(record.args)

    def show(self, ctx: AuthContext, task_id: str) -> TaskRecord:
        policy.require_admin(ctx, "yunstack:os-tasks:show")
        return self.get(task_id)

    def list_tasks(self, ctx: AuthContext, *, state: str | None = None, host: str | None = None,
                   resource_id: str | None = None, kind: str | None = None, limit: int | None = None,
                   marker: str | None = None) -> list[TaskRecord]:
        """Tasks, newest first, for admins; ``marker`` is the id of the last task of the previous page."""
        policy.require_admin(ctx, "yunstack:os-tasks:index")
        q = select(t.Task).order_by(t.Task.seq.desc())
        if state is not None:
            if state not in set(TaskState):
                raise BadRequest("Invalid state {state!r}: one of {ok}.", state=state,
                                 ok=", ".join(TaskState))
            q = q.where(t.Task.state == state)
        for column, value in ((t.Task.host, host), (t.Task.resource_id, resource_id), (t.Task.kind, kind)):
            if value is not None:
                q = q.where(column == value)
        with self._db() as s:
            if marker is not None:
                seq = s.scalar(select(t.Task.seq).where(t.Task.id == marker))
                if seq is None:
                    raise BadRequest("marker [{marker}] not found", marker=marker)
                q = q.where(t.Task.seq < seq)
            if limit is not None:
                q = q.limit(limit)
            return self._records(s, list(s.scalars(q)))

    @staticmethod
    def _records(s: Session, rows: list[t.Task]) -> list[TaskRecord]:
        groups = [r.id for r in rows if r.step is None]
        children: dict[str, list[str]] = {g: [] for g in groups}
        if groups:
            for parent_id, child_id in s.execute(select(t.Task.parent_id, t.Task.id)
                                                 .where(t.Task.parent_id.in_(groups)).order_by(t.Task.seq)):
                children[str(parent_id)].append(child_id)
        return [TaskRecord(
            id=r.id, kind=r.kind, step=r.step,
            resource=Resource(type=r.resource_type, id=r.resource_id, project_id=r.project_id),
            host=r.host, state=TaskState(r.state), attempt=r.attempt, max_attempts=r.max_attempts,
            lease_owner=r.lease_owner, lease_expires_at=r.lease_expires_at, request_id=r.request_id,
            parent_id=r.parent_id, reason=r.reason, args=dict(r.args), result=r.result,
            created_at=r.created_at, updated_at=r.updated_at, finished_at=r.finished_at,
            children=tuple(children.get(r.id, ()))) for r in rows]
