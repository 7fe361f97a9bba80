"""The one place host work is queued and read back: compute's steps on the durable task table.

Every use case that gives a host something to do calls ``queue_step``; every reader of queued work
(the agent link's claims, ``finish`` and ``progress``) calls ``queued``/``current``.  Each server
operation is a one-step task kind ``server.<op>`` whose arguments are the operation's ``protocol``
model (registered from the operation registry, ``register_kinds``), so what a host claims comes
back as exactly that model.  A server's steps run in the order they were queued (the task
service's rule), a later step supersedes one still queued (a delete over a reboot that has not
started), and a running one keeps its host's lease until the host reports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session, object_session, sessionmaker

from yunstack.compute.operations.base import Operation
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.db.tables import tasks as tt
from yunstack.protocol import StepArgs, Work
from yunstack.tasks.model import ACTIVE, REGISTRY, Resource, StepSpec, TaskKind, TaskRegistry, TaskState
from yunstack.tasks.service import TaskService

SERVER = "server"
KIND = "server."  # a server operation's task kind is ``server.<op>``, its one step is ``<op>``
MAX_ATTEMPTS = 3  # a step whose host stopped answering runs at most this often (each step is safe to repeat)


def kind_of(op: str) -> str:
    return KIND + op


def register_kinds(operations: Iterable[Operation], registry: TaskRegistry = REGISTRY) -> None:
    """One task kind per server operation, its step's arguments the operation's protocol model."""
    for decl in operations:
        registry.register(TaskKind(name=kind_of(decl.name), max_attempts=MAX_ATTEMPTS,
                                   steps={decl.name: StepSpec(args=decl.args)}))


# The task service's calls that take the caller's session (enqueue, cancel_queued, abandon) never
# open a transaction of their own, so one unbound instance serves every database.
_IN_TX = TaskService(sessionmaker())


def _engine(s: Session) -> TaskService:
    """The task service for calls made inside ``s``'s transaction."""
    return _IN_TX


def resource(row: t.Instance) -> Resource:
    return Resource(type=SERVER, id=row.id, project_id=row.project_id)


@dataclass(frozen=True)
class Queued:
    """A step of one instance that no host has reported yet (queued, or running on its host)."""

    args: StepArgs | None  # None: stored arguments this version cannot read
    op: str
    request_id: str
    host: str | None = None  # the host that runs it
    task_id: str = ""
    attempt: int = 0
    running: bool = False


def queue_step(s: Session, row: t.Instance, args: StepArgs, request_id: str, *, task: str,
               when: Sequence[ColumnElement[bool]] = (), host: str | None = None, first: bool = False) -> bool:
    """Queue ``args`` for ``row``'s host (or ``host``) and show ``task``; the caller's transaction commits it.

    ``host`` is for a migration's steps, which alternate between the source (the instance's host
    until the guest runs elsewhere) and the destination.  With ``when``, the task state is one
    conditional ``UPDATE`` that takes effect only while those conditions hold (a create racing the
    repair pass), and nothing is queued otherwise; returns whether it was.  A step of the instance
    still queued behind is superseded (cancelled): only the newest intent runs, as a delete must.
    ``first``: the instance's first step (its create's spawn), so there is nothing to supersede.
    """
    now = datetime.now(UTC)
    if when:
        done = s.execute(update(t.Instance).where(t.Instance.id == row.id, *when)
                         .values(task_state=task, updated_at=now)
                         .execution_options(synchronize_session=False))
        if getattr(done, "rowcount", 1) != 1:
            return False
    else:
        row.task_state = task
        row.updated_at = now
    target = host or row.host
    if not target:
        raise ValueError(f"{args.op} of {row.id}: a step needs the host that runs it")
    engine = _engine(s)
    if not first:
        engine.cancel_queued(s, resource(row), f"superseded by {args.op} (request {request_id})")
    engine.enqueue(s, kind=kind_of(args.op), resource=resource(row), host=target, step=args.op, args=args,
                   request_id=request_id)
    return True


def _queued(task: tt.Task) -> Queued:
    op = task.step or ""
    try:
        args: StepArgs | None = REGISTRY.kind(task.kind).step(op).args.model_validate(task.args)  # type: ignore[assignment]
    except (ValueError, ValidationError):
        args = None
    return Queued(args=args, op=op, request_id=task.request_id or "", host=task.host, task_id=task.id,
                  attempt=task.attempt, running=task.state == TaskState.RUNNING)


def _active(s: Session, instance_id: str) -> list[tt.Task]:
    return list(s.scalars(select(tt.Task).where(
        tt.Task.resource_type == SERVER, tt.Task.resource_id == instance_id, tt.Task.state.in_(ACTIVE))
        .order_by(tt.Task.seq).execution_options(populate_existing=True)))


def queued(row: t.Instance) -> Queued | None:
    """The newest step of ``row`` no host has reported yet, if any (read in the row's session)."""
    s = object_session(row)
    if s is None:
        raise ValueError("queued() reads the instance's tasks in the session that loaded it")
    active = _active(s, row.id)
    return _queued(active[-1]) if active else None


def current(s: Session, instance_id: str, task_id: str, *, ended_too: bool = False) -> Queued | None:
    """Step ``task_id`` of the instance while it is queued or running (None once it ended, unless ``ended_too``)."""
    q = select(tt.Task).where(tt.Task.id == task_id, tt.Task.resource_type == SERVER,
                              tt.Task.resource_id == instance_id)
    if not ended_too:
        q = q.where(tt.Task.state.in_(ACTIVE))
    task = s.scalar(q.execution_options(populate_existing=True))
    return None if task is None else _queued(task)


def busy(s: Session, instance_ids: Iterable[str]) -> set[str]:
    """Which of these instances have a step queued or running."""
    ids = list(instance_ids)
    if not ids:
        return set()
    return set(s.scalars(select(tt.Task.resource_id).where(
        tt.Task.resource_type == SERVER, tt.Task.resource_id.in_(ids), tt.Task.state.in_(ACTIVE))))


def end_work(s: Session, row: t.Instance, reason: str, *, but_on: str | None = None) -> None:
    """Every step of ``row`` not reported yet (but those of host ``but_on``) ends now: an evacuation
    fences its old host off it; a delete ends a migration's step on the other host."""
    _engine(s).abandon(s, resource(row), reason, but_on=but_on)


def runs_on(row: t.Instance, step: Queued) -> str | None:
    """The host that runs ``step`` of ``row``."""
    return step.host or row.host


# A migration's statuses while its steps may be queued on either of its hosts.
MOVING = mig.MOVING


def waiting(s: Session, host: str) -> list[Work]:
    """``host``'s steps that are queued and not yet claimed, oldest first (a read: claims nothing)."""
    rows = s.scalars(select(tt.Task).where(tt.Task.host == host, tt.Task.state == TaskState.QUEUED,
                                           tt.Task.resource_type == SERVER).order_by(tt.Task.seq))
    out = []
    for row in rows:
        step = _queued(row)
        if step.args is not None:
            out.append(Work(instance_id=row.resource_id, request_id=step.request_id, args=step.args,
                            task_id=row.id, attempt=row.attempt))
    return out


def hosts_of(s: Session, instance_id: str) -> set[str]:
    """The hosts that have a step of the instance queued or running (a migration's other side too)."""
    return {h for h in s.scalars(select(tt.Task.host).where(
        tt.Task.resource_type == SERVER, tt.Task.resource_id == instance_id, tt.Task.state.in_(ACTIVE))) if h}


def steps_on(s: Session, host: str) -> list[Work]:
    """Every step queued or running on ``host`` (for what a host may read while it works)."""
    rows = s.scalars(select(tt.Task).where(tt.Task.host == host, tt.Task.state.in_(ACTIVE),
                                           tt.Task.resource_type == SERVER).order_by(tt.Task.seq))
    return [Work(instance_id=r.resource_id, request_id=q.request_id, args=q.args, task_id=r.id, attempt=r.attempt)
            for r in rows if (q := _queued(r)).args is not None]
