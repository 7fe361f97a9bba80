"""Migrations as Nova shows them (``os-migrations``, ``/servers/{id}/migrations``), abort, and the
start-up reconcile that ends every migration a stopped control plane left in the middle.

The steps themselves are ``compute.operations.migrate``; this service reads and steers their
``migrations`` rows.  Only admins see migrations (Nova's default policy); a server of another
project is 404 before that (its existence is not revealed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import operations, states
from yunstack.compute.operations import migrate as live
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.errors import BadRequest, Conflict, NotFound
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.protocol import LiveMigrationAbortArgs, LiveMigrationFinishOutgoingArgs

log = logging.getLogger(__name__)

IN_PROGRESS = (live.QUEUED, live.PREPARING, live.RUNNING, live.POST_MIGRATING)


@dataclass(frozen=True, kw_only=True)
class MigrationFilters:
    host: str | None = None  # source or destination
    status: str | None = None
    migration_type: str | None = None
    instance_uuid: str | None = None
    limit: int | None = None
    marker: str | None = None  # a migration's uuid (2.59)


@dataclass(frozen=True, kw_only=True)
class MigrationView:
    id: int
    uuid: str
    instance_uuid: str
    project_id: str
    user_id: str
    migration_type: str
    status: str
    source_compute: str
    dest_compute: str
    dest_host: str | None
    old_flavor_id: str | None
    new_flavor_id: str | None
    memory_total_bytes: int | None
    disk_total_bytes: int | None
    total_ms: int | None
    downtime_ms: int | None
    error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS


def _view(m: mig.Migration) -> MigrationView:
    return MigrationView(id=m.id, uuid=m.uuid, instance_uuid=m.instance_uuid, project_id=m.project_id,
                         user_id=m.user_id, migration_type=m.migration_type, status=m.status,
                         source_compute=m.source_compute, dest_compute=m.dest_compute, dest_host=m.dest_host,
                         old_flavor_id=m.old_flavor_id, new_flavor_id=m.new_flavor_id,
                         memory_total_bytes=m.memory_total_bytes, disk_total_bytes=m.disk_total_bytes,
                         total_ms=m.total_ms, downtime_ms=m.downtime_ms, error=m.error, created_at=m.created_at,
                         updated_at=m.updated_at)


class MigrationService:
    def __init__(self, db: sessionmaker[Session], notify: Callable[[str], None]) -> None:
        self._db = db
        self._notify = notify

    def _server(self, s: Session, ctx: AuthContext, server_id: str, action: str) -> t.Instance:
        row = s.get(t.Instance, server_id)
        if row is None or row.vm_state == states.DELETED:
            raise NotFound("Instance {id} could not be found.", id=server_id)
        try:
            policy.visible(ctx, row.project_id, kind="instance", id=server_id)
        except NotFound:
            raise NotFound("Instance {id} could not be found.", id=server_id) from None
        policy.require_admin(ctx, action)
        return row

    def list_all(self, ctx: AuthContext, f: MigrationFilters) -> list[MigrationView]:
        """``GET /os-migrations``: every migration, newest first (admins only)."""
        policy.require_admin(ctx, "os_compute_api:os-migrations:index")
        q = select(mig.Migration)
        if f.host:
            q = q.where((mig.Migration.source_compute == f.host) | (mig.Migration.dest_compute == f.host))
        if f.status:
            q = q.where(mig.Migration.status == f.status)
        if f.migration_type:
            q = q.where(mig.Migration.migration_type == f.migration_type)
        if f.instance_uuid:
            q = q.where(mig.Migration.instance_uuid == f.instance_uuid)
        with self._db() as s:
            if f.marker is not None:
                after = s.scalar(select(mig.Migration).where(mig.Migration.uuid == f.marker))
                if after is None:
                    raise BadRequest("Marker {marker} could not be found.", marker=f.marker)
                q = q.where(mig.Migration.id < after.id)
            q = q.order_by(mig.Migration.id.desc())
            if f.limit is not None:
                q = q.limit(f.limit)
            return [_view(m) for m in s.scalars(q)]

    def in_progress(self, ctx: AuthContext, server_id: str) -> list[MigrationView]:
        """``GET /servers/{id}/migrations``: its live migrations in progress."""
        with self._db() as s:
            self._server(s, ctx, server_id, "os_compute_api:servers:migrations:index")
            q = (select(mig.Migration).where(mig.Migration.instance_uuid == server_id,
                                             mig.Migration.migration_type == live.LIVE,
                                             mig.Migration.status.in_(IN_PROGRESS))
                 .order_by(mig.Migration.id.desc()))
            return [_view(m) for m in s.scalars(q)]

    def _in_progress(self, s: Session, server_id: str, migration_id: str) -> mig.Migration:
        found = None
        if migration_id.isdigit():
            found = s.scalar(select(mig.Migration).where(mig.Migration.id == int(migration_id),
                                                        mig.Migration.instance_uuid == server_id))
        if found is None or found.migration_type != live.LIVE or found.status not in IN_PROGRESS:
            raise NotFound("In-progress live migration {mid} is not found for server {id}.",
                           mid=migration_id, id=server_id)
        return found

    def show(self, ctx: AuthContext, server_id: str, migration_id: str) -> MigrationView:
        with self._db() as s:
            self._server(s, ctx, server_id, "os_compute_api:servers:migrations:show")
            return _view(self._in_progress(s, server_id, migration_id))

    def abort(self, ctx: AuthContext, server_id: str, migration_id: str) -> None:
        """``DELETE /servers/{id}/migrations/{mid}``: roll back at the next step's end.

        Only before the guest runs on the destination (after that there is nothing to go back
        to): a migration past ``send`` is 400 as Nova's ``InvalidMigrationState``.
        """
        with self._db.begin() as s:
            row = self._server(s, ctx, server_id, "os_compute_api:servers:migrations:delete")
            record = self._in_progress(s, server_id, migration_id)
            if row.task_state != live.MIGRATING:
                raise Conflict("Cannot 'abort live migration' instance {id} while it is in task_state {task}",
                               id=server_id, task=row.task_state)
            if record.rolling_back or record.status not in (live.QUEUED, live.PREPARING, live.RUNNING):
                raise BadRequest("Migration {mid} state of instance {id} is {status}. Cannot abort live "
                                 "migration {mid} of instance {id} in this state.", mid=migration_id,
                                 id=server_id, status=record.status)
            record.rolling_back = True
            record.updated_at = datetime.now(UTC)

    def force_complete(self, ctx: AuthContext, server_id: str, migration_id: str) -> None:
        """``force_complete``: a paused migration is already as complete-able as it gets.

        Nova pauses a precopy guest that does not converge; here every migration copies a paused
        guest, so a running one is accepted and nothing changes.  Others: Nova's 400/409.
        """
        with self._db() as s:
            row = self._server(s, ctx, server_id, "os_compute_api:servers:migrations:force_complete")
            if row.vm_state != states.ACTIVE or row.task_state != live.MIGRATING:
                raise Conflict("Cannot 'force_complete' instance {id} while it is in vm_state {vm} and "
                               "task_state {task}", id=server_id, vm=row.vm_state, task=row.task_state)
            record = self._in_progress(s, server_id, migration_id)
            if record.status != live.RUNNING:
                raise BadRequest("Migration {mid} state of instance {id} is {status}. Cannot force_complete "
                                 "while the migration is in this state.", mid=migration_id, id=server_id,
                                 status=record.status)

    # -- crash safety ---------------------------------------------------------------------------

    def reconcile(self) -> Sequence[str]:
        """End what a stopped control plane left: every migration in progress with no step queued.

        A queued step is durable (the host takes it up again, and every step is safe to redo), so
        a migration whose instance still has its step queued goes on by itself.  One whose step was
        lost (the instance's queue holds something else, or nothing) is rolled back if the guest
        never ran on the destination, and finished (the source cleaned) if it did.  Returns the
        uuids of the migrations it restarted.
        """
        restarted = []
        hosts: set[str] = set()
        now = datetime.now(UTC)
        with self._db.begin() as s:
            # A cold move's steps are all queued work (restore undoes any failure): nothing to end here.
            live_ones = select(mig.Migration).where(mig.Migration.status.in_(IN_PROGRESS),
                                                    mig.Migration.migration_type == live.LIVE)
            for record in s.scalars(live_ones):
                row = s.get(t.Instance, record.instance_uuid)
                step = operations.queued(row) if row is not None else None
                if row is None or row.vm_state == states.DELETED:
                    record.status, record.step, record.updated_at = live.ERROR, None, now
                    record.error = "the server was deleted during its migration"
                    continue
                if step is not None and step.op.startswith("live_migration_"):
                    continue  # still queued: its host carries it out
                if step is not None:
                    continue  # other work (a delete) owns the instance now
                args: LiveMigrationFinishOutgoingArgs | LiveMigrationAbortArgs
                if row.host == record.dest_compute:
                    # The guest ran on the destination: only the source's copy is left to remove.
                    args = LiveMigrationFinishOutgoingArgs(host=record.source_compute, migration_id=record.uuid)
                    record.step = args.op
                else:
                    args = live.rollback(record, "the control plane stopped during the migration", now)
                decl = operations.operation(args.op)
                operations.queue_step(s, row, args, f"req-reconcile-{record.uuid}", task=decl.task_state(args),
                                      host=decl.host_for(args))
                hosts.add(str(args.host))
                restarted.append(record.uuid)
        for host in hosts:
            self._notify(host)
        if restarted:
            log.warning("migrations left in the middle, restarted to their end: %s", ", ".join(restarted))
        return restarted
