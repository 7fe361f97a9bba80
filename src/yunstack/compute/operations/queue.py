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
from yunstack.protocol import StepArgs, Work

_ARGS: TypeAdapter[StepArgs] = TypeAdapter(StepArgs)


@dataclass(frozen=True)
class Queued:
    """The step queued for one instance."""

    args: StepArgs | None  # None: stored arguments this version cannot read (logged by the reader)
    op: str
    request_id: str


def queue_step(s: Session, row: t.Instance, args: StepArgs, request_id: str, *, task: str,
               when: Sequence[ColumnElement[bool]] = ()) -> bool:
    """Queue ``args`` for ``row``'s host and show ``task``; the caller's transaction commits it.

    With ``when``, the write is one conditional ``UPDATE`` that takes effect only while those
    conditions hold (a create racing the repair pass); returns whether it did.
    """
    now = datetime.now(UTC)
    stored = {"op": args.op, "args": args.model_dump(mode="json", exclude={"op"}), "request_id": request_id}
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
    return Queued(args=args, op=op, request_id=request_id)


def pending_for(s: Session, host: str) -> list[Work]:
    """The work queued for the instances on ``host`` (unreadable entries are left for a newer agent)."""
    rows = s.scalars(select(t.Instance).where(t.Instance.host == host, t.Instance.pending.is_not(None)))
    out = []
    for row in rows:
        step = queued(row)
        if step is not None and step.args is not None:
            out.append(Work(instance_id=row.id, request_id=step.request_id, args=step.args))
    return out
