"""os-migrateLive: a running server moves to another host (four steps on two hosts, or a rollback).

The action schedules (or checks) the destination, records a ``migrations`` row and queues the
first step on the destination.  Each step's end queues the next on the other host:

    prepare (destination) -> send (source) -> finish_incoming (destination) -> finish_outgoing (source)

A step that fails, or an abort asked for through the API, turns the chain into its rollback:
``abort`` on the destination (drops its waiting guest), then ``abort`` on the source (its guest runs
on).  The instance's ``host`` changes when the destination reports its guest running, and its ports
follow then.  The migration row says which step is queued, so the start-up reconcile of a control
plane that died in the middle knows what to finish or undo (``compute.migrations``).
See ``docs/explanation/migration.md``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from yunstack.compute import scheduler
from yunstack.compute import states as st
from yunstack.compute.aggregates import follow_host
from yunstack.compute.driver import MigrationMode, PowerState
from yunstack.compute.operations.base import ActionContext, Body, Later, Operation, Prepared, allowed, becomes
from yunstack.compute.operations.queue import queued
from yunstack.compute.servergroups import ServerGroupService
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.errors import BadRequest, NoValidHost
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.protocol import (
    IncomingResult,
    LiveMigrationAbortArgs,
    LiveMigrationFinishIncomingArgs,
    LiveMigrationFinishOutgoingArgs,
    LiveMigrationPrepareArgs,
    LiveMigrationSendArgs,
    Outcome,
    SentResult,
)
from yunstack.types import new_uuid

log = logging.getLogger(__name__)

MIGRATING = "migrating"  # Nova's task state for a live migration
LIVE = "live-migration"

# Nova's migration statuses on the way; the final ones are completed, error and cancelled.
QUEUED, PREPARING, RUNNING, POST_MIGRATING = "queued", "preparing", "running", "post-migrating"
COMPLETED, ERROR, CANCELLED = "completed", "error", "cancelled"


class LiveMigrateBody(Body):
    """What the API made of ``os-migrateLive`` (its microversion rules: ``api.compute.migrations``)."""

    host: str | None = None
    block_migration: bool | None = None  # None: "auto" (always block here: every disk is local)
    force: bool = False  # skip the scheduler's filters for ``host`` (2.30 to 2.67; implied before 2.30)


def migration_row(row: t.Instance, migration_id: str) -> mig.Migration | None:
    # Finishing a step runs in the agent link's transaction, which holds ``row``.
    s = object_session(row)
    if s is None:
        return None
    return s.scalar(select(mig.Migration).where(mig.Migration.uuid == migration_id))


def _choose(svc: ActionContext, s: Session, row: t.Instance, body: LiveMigrateBody) -> str:
    """The destination: the scheduler's choice, or ``body.host`` checked (or forced) as Nova does."""
    hosts: list[scheduler.HostState] = svc.scheduler_hosts(s)
    known = {h.host: h for h in hosts}
    if body.host is not None:
        if body.host not in known:
            raise BadRequest("Compute host {host} could not be found.", host=body.host)
        if body.host == row.host:
            raise BadRequest("The target host can't be the same one.")
    flavor = row.flavor
    needs = scheduler.Needs(migration_mode=MigrationMode.PAUSED, block_migration=True)
    group_policy, group_hosts = ServerGroupService.for_move(s, row.id)
    spec = scheduler.RequestSpec(vcpus=int(flavor["vcpus"]), memory_mib=int(flavor["ram"]),
                                 disk_gb=int(flavor.get("disk", 0)) + int(flavor.get("ephemeral", 0)),
                                 availability_zone=row.requested_availability_zone,
                                 ignore_hosts=frozenset({row.host or ""}), force_host=body.host, needs=needs,
                                 group_policy=group_policy, group_hosts=group_hosts)
    if body.host is not None and body.force:
        target = known[body.host]
        if not target.up:
            raise BadRequest("Compute service of {host} is unavailable at this time.", host=body.host)
        return body.host
    decision = scheduler.select(hosts, spec)
    if decision.host is None:
        # Nova's live migration answers a failed host check with 400, not a create's 500 fault.
        raise BadRequest(NoValidHost(decision.reasons).text)
    return decision.host


def _live(svc: ActionContext, s: Session, ctx: AuthContext, row: t.Instance, body: Any) -> Prepared:
    policy.require_admin(ctx, "os_compute_api:os-migrate-server:migrate_live")
    assert isinstance(body, LiveMigrateBody)
    if body.block_migration is False:
        raise BadRequest("Migration pre-check error: {id} has local disks and this cloud has no shared "
                         "storage; use block_migration true or \"auto\".", id=row.id)
    if not row.host:
        raise BadRequest("Instance {id} is on no host.", id=row.id)
    dest = _choose(svc, s, row, body)
    now = datetime.now(UTC)
    record = mig.Migration(uuid=new_uuid(), instance_uuid=row.id, project_id=row.project_id, user_id=ctx.user.id,
                           migration_type=LIVE, status=PREPARING, source_compute=row.host, dest_compute=dest,
                           old_flavor_id=str(row.flavor.get("id")), new_flavor_id=str(row.flavor.get("id")),
                           block_migration=True, step="live_migration_prepare", rolling_back=False,
                           created_at=now, updated_at=now)
    s.add(record)
    if row.vm_state == st.PAUSED:  # it moves paused and stays paused (Nova moves a PAUSED server too)
        row.system_metadata = {**(row.system_metadata or {}), PAUSED_BEFORE: True}
    return LiveMigrationPrepareArgs(host=dest, migration_id=record.uuid), {"migration_id": record.uuid}


def rollback(record: mig.Migration, why: str | None, now: datetime) -> LiveMigrationAbortArgs:
    """The first step of undoing ``record``: the destination drops its guest.  ``why`` None: asked by the user."""
    record.rolling_back = True
    record.error = why
    record.step = "live_migration_abort"
    record.updated_at = now
    return LiveMigrationAbortArgs(host=record.dest_compute, migration_id=record.uuid, side="destination")


PAUSED_BEFORE = "live_migration_paused"  # system_metadata: the server was PAUSED when its move began


def _paused(row: t.Instance) -> bool:
    return bool((row.system_metadata or {}).get(PAUSED_BEFORE))


def _as_before(row: t.Instance) -> None:
    """The server shows as it was when the move began: running, or paused by its user."""
    paused = _paused(row)
    row.vm_state = st.PAUSED if paused else st.ACTIVE
    row.power_state = int(PowerState.PAUSED if paused else PowerState.RUNNING)


def _ended(row: t.Instance) -> None:
    """The move is over (completed or undone): the server is as it was, and forgets it moved."""
    _as_before(row)
    row.system_metadata = {k: v for k, v in (row.system_metadata or {}).items() if k != PAUSED_BEFORE}


def _keep_running(row: t.Instance) -> None:
    """While the chain runs or rolls back, the server shows as the source's guest: as it was."""
    _as_before(row)
    row.fault = None


def _advance(row: t.Instance, outcome: Outcome, args: Any, now: datetime, *, status: str,
             then: Any) -> Later:
    """Common end of a forward step: the next one, or the rollback when it failed."""
    record = migration_row(row, args.migration_id) if args is not None else None
    if record is None:
        return Later()
    record.updated_at = now
    if record.rolling_back:
        # An abort came while this step ran: the rollback starts now.
        _keep_running(row)
        return Later(then=rollback(record, record.error, now))
    if outcome.error is not None:
        _keep_running(row)
        return Later(then=rollback(record, f"{outcome.op} failed on {args.host}: {outcome.error}", now))
    record.status = status
    record.step = then.op
    return Later(then=then)


def _prepared(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    result = outcome.result
    if outcome.error is None and not isinstance(result, IncomingResult):
        outcome = outcome.model_copy(update={"error": "the destination reported no address"})
    record = migration_row(row, args.migration_id) if args is not None else None
    source = record.source_compute if record is not None else ""
    then = (LiveMigrationSendArgs(host=source, migration_id=args.migration_id, uri=result.uri,
                                  disks_uri=result.disks_uri, mode=MigrationMode.PAUSED.value)
            if isinstance(result, IncomingResult) and args is not None else None)
    if record is not None and outcome.error is None:
        record.dest_host = result.uri if isinstance(result, IncomingResult) else None
    later = _advance(row, outcome, args, now, status=RUNNING, then=then)
    _as_before(row)  # the destination's waiting guest is not the server's
    return later


def _sent(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    record = migration_row(row, args.migration_id) if args is not None else None
    if record is not None and isinstance(outcome.result, SentResult):
        stats = outcome.result
        record.total_ms, record.downtime_ms = stats.total_ms, stats.downtime_ms
        record.memory_total_bytes, record.disk_total_bytes = stats.memory_bytes, stats.disk_bytes
        log.info("live migration %s of %s: %s mode, send %d ms, downtime %d ms, %d bytes of memory, %d of disk",
                 record.uuid, row.id, stats.mode, stats.total_ms, stats.downtime_ms, stats.memory_bytes,
                 stats.disk_bytes)
    dest = record.dest_compute if record is not None else ""
    then = (LiveMigrationFinishIncomingArgs(host=dest, migration_id=args.migration_id, resume=not _paused(row))
            if args is not None else None)
    later = _advance(row, outcome, args, now, status=POST_MIGRATING, then=then)
    _as_before(row)
    return later


def _arrived(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    record = migration_row(row, args.migration_id) if args is not None else None
    if record is None:
        return Later()
    record.updated_at = now
    if outcome.error is not None:
        _keep_running(row)
        return Later(then=rollback(record, f"{outcome.op} failed on {args.host}: {outcome.error}", now))
    # The guest runs on the destination now: it is the server's host from here on, even if a
    # rollback was asked meanwhile (too late: the source's copy is stale once the other one ran).
    row.host = record.dest_compute
    follow_host(row)
    _as_before(row)
    record.step = "live_migration_finish_outgoing"
    then = LiveMigrationFinishOutgoingArgs(host=record.source_compute, migration_id=record.uuid)
    return Later(then=then, rebound=(row.id, row.project_id, record.dest_compute))


def _cleaned(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    record = migration_row(row, args.migration_id) if args is not None else None
    _ended(row)
    row.fault = None
    if record is None:
        return Later()
    record.updated_at = now
    if queued(row) is None:
        record.step = None
    # else: the same step was queued again (the start-up reconcile) and runs once more.
    if outcome.error is not None:
        # The guest runs on the destination; only the source's leftovers are in doubt.
        record.status = ERROR
        record.error = f"the source {record.source_compute} could not clean up: {outcome.error}"
    else:
        record.status = COMPLETED
    return Later()


def _aborted(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    record = migration_row(row, args.migration_id) if args is not None else None
    if record is None or args is None:
        return Later()
    record.updated_at = now
    if args.side == "destination":
        _keep_running(row)
        if outcome.error is not None:
            record.error = (record.error or "aborted") + f"; the destination's abort failed: {outcome.error}"
        record.step = "live_migration_abort"
        return Later(then=LiveMigrationAbortArgs(host=record.source_compute, migration_id=record.uuid,
                                                 side="source"))
    record.step = None
    record.status = ERROR if record.error else CANCELLED
    if outcome.error is not None:
        record.status = ERROR
        record.error = (record.error or "aborted") + f"; the source's abort failed: {outcome.error}"
        row.vm_state = st.ERROR
        row.fault = {"code": 500, "message": record.error[:255], "details": record.error, "created": now.isoformat()}
        return Later()
    _ended(row)
    row.fault = None
    return Later()


def named_host(args: Any) -> str | None:
    """The host a migration's step names (``args.host``): its ``runs_on``."""
    return str(args.host) if args is not None else None


LIVE_MIGRATE = Operation(name="live_migration_prepare", args=LiveMigrationPrepareArgs, task=MIGRATING,
                         event="compute_live_migration", action="live-migration", verb="os-migrateLive",
                         body=LiveMigrateBody, allowed=allowed(st.ACTIVE, st.PAUSED), prepare=_live,
                         on_success=becomes(st.ACTIVE), keeps_state_on_failure=True, apply=_prepared,
                         runs_on=named_host)
SEND = Operation(name="live_migration_send", args=LiveMigrationSendArgs, task=MIGRATING,
                 event="compute_live_migration_send", on_success=becomes(st.ACTIVE), keeps_state_on_failure=True,
                 apply=_sent, runs_on=named_host)
FINISH_INCOMING = Operation(name="live_migration_finish_incoming", args=LiveMigrationFinishIncomingArgs,
                            task=MIGRATING, event="compute_post_live_migration_at_destination",
                            on_success=becomes(st.ACTIVE), keeps_state_on_failure=True, apply=_arrived,
                            runs_on=named_host)
FINISH_OUTGOING = Operation(name="live_migration_finish_outgoing", args=LiveMigrationFinishOutgoingArgs,
                            task=MIGRATING, event="compute_post_live_migration", on_success=becomes(st.ACTIVE),
                            keeps_state_on_failure=True, apply=_cleaned, runs_on=named_host)
ABORT = Operation(name="live_migration_abort", args=LiveMigrationAbortArgs, task=MIGRATING,
                  event="compute_rollback_live_migration", on_success=becomes(st.ACTIVE),
                  keeps_state_on_failure=True, apply=_aborted, runs_on=named_host)

OPERATIONS = (LIVE_MIGRATE, SEND, FINISH_INCOMING, FINISH_OUTGOING, ABORT)
