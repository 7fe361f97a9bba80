"""The durable task record: one row per step of long-running work (``tasks.service`` owns it).

``seq`` is the insertion order, the one order the claim rule needs ("an earlier step of the same
resource runs first"); ``id`` is the UUID everything else (API, agents, parents) names a task by.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from yunstack.db.base import Base

# SQLite only auto-numbers an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
SEQ = BigInteger().with_variant(Integer(), "sqlite")


class Task(Base):
    __tablename__ = "tasks"
    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # None for a parent (a group of steps): hosts never claim it, its children decide its end.
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    step: Mapped[str | None] = mapped_column(String(64), nullable=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    lease_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), nullable=True,
                                                  index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (
        # A host's claim: its queued steps, oldest first.
        Index("ix_tasks_host_state", "host", "state", "seq"),
        # The ordering rule and "what runs on this server": a resource's tasks in order.
        Index("ix_tasks_resource", "resource_type", "resource_id", "seq"),
        # The lease sweep: running tasks by expiry.
        Index("ix_tasks_state_lease", "state", "lease_expires_at"),
    )
