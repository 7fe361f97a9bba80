"""Tests' hands on a server's queued work (the task table), to stage what a crash leaves behind."""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from yunstack.compute import operations
from yunstack.db.tables import compute as t
from yunstack.db.tables import tasks as tt
from yunstack.protocol import StepArgs
from yunstack.tasks.model import ACTIVE


def drop_work(s: Session, server_id: str) -> None:
    """The server's queued and running steps are gone, as if a control plane died before writing them."""
    s.execute(delete(tt.Task).where(tt.Task.resource_id == server_id, tt.Task.state.in_(ACTIVE)))


def held_by_a_dead_agent(s: Session, row: t.Instance, args: StepArgs, request_id: str, task: str) -> None:
    """``args`` queued for the server's host and claimed by an agent run that is gone (it never reports)."""
    operations.queue_step(s, row, args, request_id, task=task)
    s.execute(update(tt.Task).where(tt.Task.resource_id == row.id, tt.Task.state == "queued").values(
        state="running", attempt=1, lease_owner=f"{row.host}/gone"))
