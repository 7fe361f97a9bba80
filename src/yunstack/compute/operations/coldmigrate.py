"""migrate, and resize to another host: the guest moves powered off, then waits to be confirmed.

``migrate`` (admins) and a ``resize`` that does not fit on the server's own host both record a
``migrations`` row and queue ``send`` on the source.  Each step's end queues the next:

    send (source: power off, export the disks) -> finish (destination: copy, start if it ran)
        -> VERIFY_RESIZE -> confirmResize: confirm (source: the stopped copy goes)
                         -> revertResize:  revert (destination: the new copy goes)
                                           -> restore (source: the guest starts again)

A failed ``send`` or ``finish`` is undone by ``restore``: the server stays on its host as it was,
and the migration says why in ``error``.  The server shows its new flavor from the start, and its
size is held on the destination while it moves (``migrations.arriving``) and its old size on the
source until the confirm (``migrations.unconfirmed``), so a revert always has room.  See
``docs/explanation/migration.md``.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from yunstack.compute import scheduler
from yunstack.compute import states as st
from yunstack.compute.aggregates import follow_host
from yunstack.compute.driver import PowerState
from yunstack.compute.operations.base import (
    ActionContext,
    Later,
    NoBody,
    Operation,
    Prepared,
    Success,
    allowed,
    becomes,
)
from yunstack.compute.operations.migrate import migration_row, named_host
from yunstack.compute.servergroups import ServerGroupService
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.errors import BadRequest, NoValidHost
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.protocol import (
    ColdMigrationConfirmArgs,
    ColdMigrationFinishArgs,
    ColdMigrationRestoreArgs,
    ColdMigrationRevertArgs,
    ColdMigrationSendArgs,
    ExportedResult,
    FlavorData,
    Outcome,
)
from yunstack.types import new_uuid

log = logging.getLogger(__name__)

MIGRATION, RESIZE = "migration", "resize"  # Nova's migration_type of a cold migration and of a resize
# Nova's statuses of a cold move, in order; it ends confirmed, reverted or error.
MIGRATING, POST_MIGRATING, FINISHED = "migrating", "post-migrating", "finished"
CONFIRMING, CONFIRMED, REVERTING, REVERTED, ERROR = "confirming", "confirmed", "reverting", "reverted", "error"
OLD_VM_STATE = "old_vm_state"  # system_metadata: the state to go back to (Nova's key)
NOT_NULL = "Invalid input for field/attribute {name}. Value: {value}. {value} is not of type 'null'"


def destination(svc: ActionContext, s: Session, row: t.Instance, flavor: FlavorData,
                here: dict[str, str] | None = None) -> str:
    """A host other than the server's own for ``flavor``; NoValidHost with every host's reason.

    ``here``: why the server's own host was not taken (a resize tried it first).
    """
    group_policy, group_hosts = ServerGroupService.for_move(s, row.id)
    spec = scheduler.RequestSpec(vcpus=flavor.vcpus, memory_mib=flavor.ram, disk_gb=flavor.disk + flavor.ephemeral,
                                 availability_zone=row.requested_availability_zone,
                                 ignore_hosts=frozenset({row.host or ""}), group_policy=group_policy,
                                 group_hosts=group_hosts)
    decision = scheduler.select(svc.scheduler_hosts(s), spec)
    if decision.host is None:
        reasons = dict(decision.reasons)
        if here and row.host in here:
            reasons[str(row.host)] = here[str(row.host)]
        raise NoValidHost(reasons)
    return decision.host


def start(s: Session, ctx: AuthContext, row: t.Instance, flavor: FlavorData, dest: str,
          kind: str) -> ColdMigrationSendArgs:
    """Record the move of ``row`` to ``dest`` with ``flavor`` and return its first step."""
    now = datetime.now(UTC)
    power_on = row.vm_state == st.ACTIVE
    record = mig.Migration(uuid=new_uuid(), instance_uuid=row.id, project_id=row.project_id, user_id=ctx.user.id,
                           migration_type=kind, status=MIGRATING, source_compute=row.host, dest_compute=dest,
                           old_flavor_id=str(row.flavor.get("id")), new_flavor_id=flavor.id,
                           block_migration=True, step="cold_migration_send", rolling_back=False,
                           created_at=now, updated_at=now)
    s.add(record)
    # The new size counts from now: on the destination while the server moves, and the old one
    # on the source until the confirm.
    row.old_flavor = row.flavor
    row.flavor = flavor.model_dump(mode="json")
    row.system_metadata = {**(row.system_metadata or {}), OLD_VM_STATE: row.vm_state}
    return ColdMigrationSendArgs(host=str(row.host), migration_id=record.uuid, secret=secrets.token_hex(32),
                                 power_on=power_on)


def _migrate(svc: ActionContext, s: Session, ctx: AuthContext, row: t.Instance, body: Any) -> Prepared:
    policy.require_admin(ctx, "os_compute_api:os-migrate-server:migrate")
    if not row.host:
        raise BadRequest("Instance {id} is on no host.", id=row.id)
    flavor = FlavorData.model_validate({k: v for k, v in row.flavor.items() if k in FlavorData.model_fields})
    try:
        dest = destination(svc, s, row, flavor)
    except NoValidHost as exc:
        # Nova answers a cold migration that finds no host with 400, its reasons in the message.
        raise BadRequest(exc.text) from None
    return start(s, ctx, row, flavor, dest, MIGRATION), {}


def unconfirmed(s: Session, row: t.Instance) -> mig.Migration | None:
    """The server's cold move that waits for its confirm or revert, if it is one."""
    return s.scalar(select(mig.Migration).where(mig.Migration.instance_uuid == row.id,
                                                mig.Migration.status == FINISHED,
                                                mig.Migration.dest_compute == row.host))


def confirm_args(s: Session, row: t.Instance, record: mig.Migration) -> ColdMigrationConfirmArgs:
    record.status, record.step, record.updated_at = CONFIRMING, "cold_migration_confirm", datetime.now(UTC)
    return ColdMigrationConfirmArgs(host=record.source_compute, migration_id=record.uuid,
                                    running=row.power_state == int(PowerState.RUNNING))


def revert_args(s: Session, row: t.Instance, record: mig.Migration) -> ColdMigrationRevertArgs:
    record.status, record.step, record.updated_at = REVERTING, "cold_migration_revert", datetime.now(UTC)
    return ColdMigrationRevertArgs(host=record.dest_compute, migration_id=record.uuid, power_on=_was_active(row))


def _was_active(row: t.Instance) -> bool:
    return str((row.system_metadata or {}).get(OLD_VM_STATE, st.ACTIVE)) == st.ACTIVE


def _back(row: t.Instance) -> None:
    """The server is its source's again, with its old flavor (a revert, or a move that failed)."""
    if row.old_flavor:
        row.flavor, row.old_flavor = row.old_flavor, None
    row.system_metadata = {k: v for k, v in (row.system_metadata or {}).items() if k != OLD_VM_STATE}


def _failed(row: t.Instance, record: mig.Migration, why: str, now: datetime) -> Later:
    """A step of the move failed: the source takes the guest back as it was."""
    power_on = _was_active(row)
    _back(row)
    record.status, record.error, record.step, record.updated_at = ERROR, why, "cold_migration_restore", now
    row.vm_state = st.ACTIVE if power_on else st.STOPPED
    return Later(then=ColdMigrationRestoreArgs(host=record.source_compute, migration_id=record.uuid,
                                               power_on=power_on))


def _exported(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    record = migration_row(row, args.migration_id) if args is not None else None
    if record is None:
        return Later()
    result = outcome.result
    if outcome.error is not None or not isinstance(result, ExportedResult):
        why = outcome.error or "the source reported no disk export"
        return _failed(row, record, f"cold_migration_send failed on {record.source_compute}: {why}", now)
    record.status, record.step, record.updated_at = POST_MIGRATING, "cold_migration_finish", now
    return Later(then=ColdMigrationFinishArgs(host=record.dest_compute, migration_id=record.uuid, secret=args.secret,
                                              disks=result.disks, power_on=args.power_on))


def _arrived(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    record = migration_row(row, args.migration_id) if args is not None else None
    if record is None:
        return Later()
    if outcome.error is not None:
        return _failed(row, record, f"cold_migration_finish failed on {record.dest_compute}: {outcome.error}", now)
    row.host = record.dest_compute
    follow_host(row)
    record.status, record.step, record.updated_at = FINISHED, None, now
    return Later(rebound=(row.id, row.project_id, record.dest_compute))


def _confirmed(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    record = migration_row(row, args.migration_id) if args is not None else None
    row.old_flavor = None
    row.system_metadata = {k: v for k, v in (row.system_metadata or {}).items() if k != OLD_VM_STATE}
    if args is not None:
        row.vm_state = st.ACTIVE if args.running else st.STOPPED
        row.power_state = int(PowerState.RUNNING if args.running else PowerState.SHUTDOWN)
    row.fault = None
    if record is None:
        return Later()
    record.step, record.updated_at = None, now
    if outcome.error is not None:
        # The server runs on the destination; only the source's leftovers are in doubt.
        record.status = ERROR
        record.error = f"the source {record.source_compute} could not remove its copy: {outcome.error}"
    else:
        record.status = CONFIRMED
    return Later()


def _reverted(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    record = migration_row(row, args.migration_id) if args is not None else None
    if record is None or args is None:
        return Later()
    record.updated_at = now
    if outcome.error is not None:
        record.status, record.step = ERROR, None
        record.error = f"the destination {record.dest_compute} could not remove its copy: {outcome.error}"
        return Later()
    _back(row)
    row.host = record.source_compute
    follow_host(row)
    record.step = "cold_migration_restore"
    return Later(rebound=(row.id, row.project_id, record.source_compute),
                 then=ColdMigrationRestoreArgs(host=record.source_compute, migration_id=record.uuid,
                                               power_on=args.power_on))


def _restored(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    record = migration_row(row, args.migration_id) if args is not None else None
    if record is None:
        return Later()
    record.step, record.updated_at = None, now
    if outcome.error is not None:
        record.status = ERROR
        record.error = (record.error + "; " if record.error else "") + (
            f"the source {record.source_compute} could not take the guest back: {outcome.error}")
    elif record.status == REVERTING:
        record.status = REVERTED
    return Later()


def _as_before(outcome: Outcome, args: Any) -> str:
    """The state the server had when the move began (the guest runs again if it ran)."""
    return st.ACTIVE if args is None or args.power_on else st.STOPPED


def runs_on(args: Any) -> str | None:
    """The host of a resize family step: a cold move's step names it, a same-host one runs at home."""
    return named_host(args) if isinstance(args, (ColdMigrationConfirmArgs, ColdMigrationRevertArgs)) else None


KEEP: Success = _as_before
SEND = Operation(name="cold_migration_send", args=ColdMigrationSendArgs, task=st.RESIZE_MIGRATING,
                 event="compute_resize_instance", action="migrate", verb="migrate", body=NoBody, body_error=NOT_NULL,
                 prepare=_migrate, allowed=allowed(st.ACTIVE, st.STOPPED), on_success=KEEP,
                 keeps_state_on_failure=True, apply=_exported, runs_on=named_host)
FINISH = Operation(name="cold_migration_finish", args=ColdMigrationFinishArgs, task=st.RESIZE_FINISH,
                   event="compute_finish_resize", on_success=becomes(st.RESIZED), keeps_state_on_failure=True,
                   apply=_arrived, runs_on=named_host)
CONFIRM = Operation(name="cold_migration_confirm", args=ColdMigrationConfirmArgs, task=st.RESIZE_CONFIRMING,
                    event="compute_confirm_resize", on_success=becomes(st.ACTIVE), keeps_state_on_failure=True,
                    apply=_confirmed, runs_on=named_host)
REVERT = Operation(name="cold_migration_revert", args=ColdMigrationRevertArgs, task=st.RESIZE_REVERTING,
                   event="compute_revert_resize", on_success=becomes(st.RESIZED), apply=_reverted,
                   runs_on=named_host)
RESTORE = Operation(name="cold_migration_restore", args=ColdMigrationRestoreArgs, task=st.RESIZE_REVERTING,
                    event="compute_finish_revert_resize", on_success=KEEP, apply=_restored, runs_on=named_host)

OPERATIONS = (SEND, FINISH, CONFIRM, REVERT, RESTORE)
