"""The one place host work is queued and read back (``Instance.pending`` stores it for now).

Every use case that gives a host something to do calls ``queue_step``; every reader of queued work
(the agent link's ``pending_work``, ``finish`` and ``progress``) calls ``queued``/``pending_for``.
The durable task table replaces these bodies, not their callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.protocol import StepArgs, Work

_ARGS: TypeAdapter[StepArgs] = TypeAdapter(StepArgs)


@dataclass(frozen=True)
class Queued:
    """The step queued for one instance."""

    args: StepArgs | None  # None: stored arguments this version cannot read (logged by the reader)
    op: str
    request_id: str
    host: str | None = None  # the host that runs it when not the instance's own (a migration's other side)


def queue_step(s: Session, row: t.Instance, args: StepArgs, request_id: str, *, task: str,
               when: Sequence[ColumnElement[bool]] = (), host: str | None = None) -> bool:
    """Queue ``args`` for ``row``'s host (or ``host``) and show ``task``; the caller's transaction commits it.

    ``host`` is for a migration's steps, which alternate between the source (the instance's host
    until the guest runs elsewhere) and the destination.  With ``when``, the write is one
    conditional ``UPDATE`` that takes effect only while those conditions hold (a create racing the
    repair pass); returns whether it did.
    """
    now = datetime.now(UTC)
    stored: dict[str, object] = {"op": args.op, "args": args.model_dump(mode="json", exclude={"op"}),
                                 "request_id": request_id}
    if host is not None and host != row.host:
        stored["host"] = host
    if when:
        done = s.execute(update(t.Instance).where(t.Instance.id == row.id, *when)
                         .values(pending=stored, task_state=task, updated_at=now)
                         .execution_options(synchronize_session=False))
        return getattr(done, "rowcount", 1) == 1
    row.pending = stored
    row.task_state = task
    row.updated_at = now
    return True


def queued(row: t.Instance) -> Queued | None:
    """The step queued for ``row``, if any."""
    stored = row.pending
    if not stored:
        return None
    op, request_id = str(stored.get("op", "")), str(stored.get("request_id", ""))
    try:
        args: StepArgs | None = _ARGS.validate_python({**(stored.get("args") or {}), "op": op})
    except ValidationError:
        args = None
    host = stored.get("host")
    return Queued(args=args, op=op, request_id=request_id, host=str(host) if host else None)


def runs_on(row: t.Instance, step: Queued) -> str | None:
    """The host that runs ``step`` of ``row``."""
    return step.host or row.host


# A migration's statuses while its steps may be queued on either of its hosts.
MOVING = mig.MOVING


def pending_for(s: Session, host: str) -> list[Work]:
    """The work queued for ``host``: its instances' steps, and the steps of migrations to or from it.

    (Unreadable entries are left for a newer agent.)
    """
    moving = select(mig.Migration.instance_uuid).where(
        mig.Migration.status.in_(MOVING) | mig.Migration.step.is_not(None),
        (mig.Migration.dest_compute == host) | (mig.Migration.source_compute == host))
    rows = s.scalars(select(t.Instance).where((t.Instance.host == host) | t.Instance.id.in_(moving),
                                              t.Instance.pending.is_not(None)))
    out = []
    for row in rows:
        step = queued(row)
        if step is not None and step.args is not None and runs_on(row, step) == host:
            out.append(Work(instance_id=row.id, request_id=step.request_id, args=step.args))
    return out
