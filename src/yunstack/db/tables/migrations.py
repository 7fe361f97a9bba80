"""Nova's migrations: one row per move of a server between hosts (live migration for now).

The row is both the compatible view (``GET /os-migrations``, ``/servers/{id}/migrations``) and the
state of the multi-step work: which step is queued on which host, so that a control plane that
restarts mid-migration can finish or roll back what it finds (``compute.migrations.reconcile``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ColumnElement, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from yunstack.db.base import Base
from yunstack.db.tables.compute import Instance

# The statuses of a move that is under way (Nova's words); the final ones are completed, error and
# cancelled (live migrations), done, failed and error (evacuations), confirmed, reverted and error
# (cold migrations and resizes).
MOVING = ("queued", "preparing", "running", "pre-migrating", "migrating", "post-migrating")
# A cold move that arrived and waits for its confirm or revert: a stopped copy of the guest is
# still on the source, which keeps its old size held for a revert.
UNCONFIRMED = ("finished", "confirming", "reverting")
# The final statuses of a move that took its guest off its source (the others failed or went back).
LEFT_ITS_SOURCE = ("completed", "done", "finished", "confirmed")


class Migration(Base):
    __tablename__ = "migrations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    instance_uuid: Mapped[str] = mapped_column(String(36), index=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    migration_type: Mapped[str] = mapped_column(String(32))  # live-migration | migration | resize
    status: Mapped[str] = mapped_column(String(32), index=True)  # Nova's words: queued, running, completed...
    source_compute: Mapped[str] = mapped_column(String(255), index=True)
    dest_compute: Mapped[str] = mapped_column(String(255), index=True)
    dest_host: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the address the state goes to
    old_flavor_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    new_flavor_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    block_migration: Mapped[bool] = mapped_column(Boolean, default=False)
    # The step queued now (``live_migration_*``, ``cold_migration_*``) and whether the work is rolling back.
    step: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rolling_back: Mapped[bool] = mapped_column(Boolean, default=False)
    memory_total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disk_total_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    total_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    downtime_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


def arriving() -> ColumnElement[bool]:
    """The migrations whose server is on its way to ``dest_compute`` and not there yet (joined
    with ``instances``): the destination holds its size and plugs its ports meanwhile."""
    return Migration.status.in_(MOVING) & (Instance.host != Migration.dest_compute)


def unconfirmed() -> ColumnElement[bool]:
    """The cold moves whose server arrived at ``dest_compute`` and whose source still holds a stopped
    copy (joined with ``instances``): the source keeps its old size until the confirm."""
    return Migration.status.in_(UNCONFIRMED) & (Instance.host != Migration.source_compute)
