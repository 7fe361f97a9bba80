"""The volume steps on the durable task table, and how a storage host's report is applied.

Each volume operation is a one-step task kind ``volume.<op>`` whose arguments are its
``protocol`` model, queued on the volume's storage host with resource type ``volume``: the task
service's ordering rule runs one volume's steps in the order they were queued (a delete waits
for the create it follows), whichever host or process queued them.  The host reports what it did
(``Outcome``); ``apply`` alone decides the volume's or snapshot's status from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import tasks as tt
from yunstack.db.tables import volume as t
from yunstack.protocol import (
    Outcome,
    VolumeCreateArgs,
    VolumeDeleteArgs,
    VolumeExportArgs,
    VolumeExportedResult,
    VolumeExtendArgs,
    VolumeRevertArgs,
    VolumeSnapshotArgs,
    VolumeSnapshotDeleteArgs,
    VolumeUnexportArgs,
    VolumeUploadArgs,
)
from yunstack.tasks.model import ACTIVE, REGISTRY, Resource, StepSpec, TaskKind, TaskRegistry, TaskState
from yunstack.tasks.service import TaskService
from yunstack.volume import attachments, states

log = logging.getLogger(__name__)

VOLUME = "volume"
KIND = "volume."
MAX_ATTEMPTS = 3  # a step whose host stopped answering runs at most this often (each is safe to repeat)
STEPS: tuple[type[BaseModel], ...] = (VolumeCreateArgs, VolumeDeleteArgs, VolumeExtendArgs, VolumeSnapshotArgs,
                                      VolumeSnapshotDeleteArgs, VolumeUploadArgs, VolumeExportArgs,
                                      VolumeUnexportArgs, VolumeRevertArgs)


def _op(model: type[BaseModel]) -> str:
    return str(model.model_fields["op"].default)


def register_kinds(registry: TaskRegistry = REGISTRY) -> None:
    for model in STEPS:
        name = _op(model)
        if KIND + name not in registry:
            registry.register(TaskKind(name=KIND + name, max_attempts=MAX_ATTEMPTS, steps={name: StepSpec(args=model)}))


register_kinds()

# enqueue and abandon take the caller's session and open no transaction: one instance serves all.
_IN_TX = TaskService(sessionmaker())


def resource(row: t.Volume) -> Resource:
    return Resource(type=VOLUME, id=row.id, project_id=row.project_id)


def queue(s: Session, row: t.Volume, args: BaseModel, request_id: str | None) -> None:
    """Queue ``args`` for the volume's storage host, in the caller's transaction."""
    op = _op(type(args))
    _IN_TX.enqueue(s, kind=KIND + op, resource=resource(row), host=row.host, step=op, args=args,
                   request_id=request_id)


def busy(s: Session, volume_id: str) -> bool:
    """Whether the volume has a step queued or running."""
    return s.scalar(select(tt.Task.seq).where(tt.Task.resource_type == VOLUME, tt.Task.resource_id == volume_id,
                                              tt.Task.state.in_(ACTIVE)).limit(1)) is not None


def running(s: Session, volume_id: str, task_id: str) -> tt.Task | None:
    """Step ``task_id`` of the volume while a host runs it."""
    return s.scalar(select(tt.Task).where(tt.Task.id == task_id, tt.Task.resource_type == VOLUME,
                                          tt.Task.resource_id == volume_id, tt.Task.state == TaskState.RUNNING)
                    .execution_options(populate_existing=True))


def hosts_with_step(s: Session, host: str) -> list[tt.Task]:
    """The volume steps queued or running on ``host`` (what a storage host may read while it works)."""
    return list(s.scalars(select(tt.Task).where(tt.Task.host == host, tt.Task.resource_type == VOLUME,
                                                tt.Task.state.in_(ACTIVE))))


@dataclass(frozen=True)
class Applied:
    """What finishing a step changed that callers outside the transaction care about."""

    deleted: bool = False
    abandoned_image: str | None = None  # a failed upload's queued image: deleted once committed
    booting: str | None = None  # the server whose block device mapping waited for this volume
    exported: str | None = None  # the server whose attach waited for this volume's export
    export_failed: str | None = None  # the server whose attach failed with the export
    doomed: bool = False  # made for a server that went meanwhile, to be deleted with it


def settled(s: Session, row: t.Volume) -> str:
    """The status a volume goes back to after an operation that left its attachments as they were."""
    attached = s.scalar(select(t.VolumeAttachment.id).where(t.VolumeAttachment.volume_id == row.id).limit(1))
    return states.IN_USE if attached else states.AVAILABLE


def _fail(row: t.Volume, status: str, why: str, now: datetime) -> None:
    row.status = status
    row.status_reason = why[:2000]
    row.updated_at = now


def _snapshot(s: Session, snapshot_id: str) -> t.Snapshot | None:
    return s.get(t.Snapshot, snapshot_id)


def _create(s: Session, row: t.Volume, outcome: Outcome, args: BaseModel, now: datetime) -> Applied:
    # A volume a server's block device mapping asked for goes to that server (``attaching``: the
    # server's spawn opens it) in this same transaction, so no one else can take it in between.
    held = s.scalar(select(t.VolumeAttachment).where(
        t.VolumeAttachment.volume_id == row.id,
        t.VolumeAttachment.status.in_((attachments.RESERVED, attachments.RELEASED))))
    if outcome.error is not None:
        _fail(row, states.ERROR, outcome.error, now)
        if held is None:
            return Applied()
        if held.status == attachments.RELEASED:
            s.delete(held)
            return Applied(doomed=held.delete_on_termination)
        held.status, held.updated_at = attachments.FAILED, now  # its server reads why on the volume
        return Applied(booting=held.instance_id)
    row.status, row.status_reason, row.launched_at, row.updated_at = states.AVAILABLE, None, now, now
    if held is None:
        return Applied()
    if held.status == attachments.RELEASED:
        s.delete(held)
        return Applied(doomed=held.delete_on_termination)
    held.status, held.updated_at = attachments.ATTACHING, now
    row.status = states.ATTACHING
    return Applied(booting=held.instance_id)


def _delete(s: Session, row: t.Volume, outcome: Outcome, args: BaseModel, now: datetime) -> Applied:
    if outcome.error is not None:
        _fail(row, states.ERROR_DELETING, outcome.error, now)
        return Applied()
    # Records of Cinder's attachments API go with their volume (an admin's force delete), as in Cinder.
    for record in s.scalars(select(t.VolumeAttachment).where(t.VolumeAttachment.volume_id == row.id,
                                                             t.VolumeAttachment.origin == attachments.CINDER)):
        s.delete(record)
    s.flush()
    s.delete(row)
    return Applied(deleted=True)


def _extend(s: Session, row: t.Volume, outcome: Outcome, args: BaseModel, now: datetime) -> Applied:
    assert isinstance(args, VolumeExtendArgs)
    if outcome.error is not None:
        _fail(row, states.ERROR_EXTENDING, outcome.error, now)
    else:
        row.size, row.status, row.status_reason, row.updated_at = args.size_gib, states.AVAILABLE, None, now
    return Applied()


def _snap(s: Session, row: t.Volume, outcome: Outcome, args: BaseModel, now: datetime) -> Applied:
    assert isinstance(args, VolumeSnapshotArgs)
    snap = _snapshot(s, args.snapshot_id)
    if snap is not None:
        if outcome.error is not None:
            snap.status, snap.status_reason = states.ERROR, outcome.error[:2000]
        else:
            snap.status, snap.status_reason, snap.progress = states.AVAILABLE, None, "100%"
        snap.updated_at = now
    return Applied()


def _unsnap(s: Session, row: t.Volume, outcome: Outcome, args: BaseModel, now: datetime) -> Applied:
    assert isinstance(args, VolumeSnapshotDeleteArgs)
    snap = _snapshot(s, args.snapshot_id)
    if snap is not None:
        if outcome.error is not None:
            snap.status, snap.status_reason, snap.updated_at = states.ERROR_DELETING, outcome.error[:2000], now
        else:
            s.delete(snap)
    return Applied()


def _revert(s: Session, row: t.Volume, outcome: Outcome, args: BaseModel, now: datetime) -> Applied:
    """Cinder's ends of a revert: the volume ``available`` (``error`` if the host failed), the
    snapshot ``available`` again either way."""
    assert isinstance(args, VolumeRevertArgs)
    if outcome.error is not None:
        _fail(row, states.ERROR, f"revert to snapshot {args.snapshot_id} failed: {outcome.error}", now)
    else:
        row.status, row.status_reason, row.updated_at = states.AVAILABLE, None, now
    snap = _snapshot(s, args.snapshot_id)
    if snap is not None and snap.status == states.RESTORING:
        snap.status, snap.updated_at = states.AVAILABLE, now
    return Applied()


def _upload(s: Session, row: t.Volume, outcome: Outcome, args: BaseModel, now: datetime) -> Applied:
    assert isinstance(args, VolumeUploadArgs)
    row.status, row.updated_at = settled(s, row), now
    if outcome.error is not None:
        row.status_reason = f"upload to image {args.image_id} failed: {outcome.error}"[:2000]
        return Applied(abandoned_image=args.image_id)
    row.status_reason = None
    return Applied()


def _export(s: Session, row: t.Volume, outcome: Outcome, args: BaseModel, now: datetime) -> Applied:
    """The storage host serves the volume to the attaching server's host: the attachment keeps where
    (and its key), and the server's hot-plug can go; a failed export fails the attach."""
    att = s.scalar(select(t.VolumeAttachment).where(t.VolumeAttachment.volume_id == row.id,
                                                    t.VolumeAttachment.status == attachments.ATTACHING))
    if att is None:
        return Applied()  # the attach ended meanwhile (its server was deleted): the export goes again
    result = outcome.result
    if outcome.error is None and isinstance(result, VolumeExportedResult):
        att.connection, att.updated_at = result.connection.model_dump(), now
        return Applied(exported=att.instance_id)
    why = outcome.error or "the storage host reported no export"
    instance_id = att.instance_id
    attachments.attach_failed(s, instance_id, row.id, f"the storage host could not export it: {why}", now)
    return Applied(export_failed=instance_id)


def _unexport(s: Session, row: t.Volume, outcome: Outcome, args: BaseModel, now: datetime) -> Applied:
    if outcome.error is not None:  # a daemon left running serves no one without the key it was given
        log.warning("volume %s: its export could not be stopped: %s", row.id, outcome.error)
    return Applied()


def unexport(s: Session, volume_id: str, request_id: str | None = None) -> None:
    """Queue the end of the volume's export (its attachment across hosts ended), in the caller's transaction."""
    row = s.get(t.Volume, volume_id)
    if row is not None:
        queue(s, row, VolumeUnexportArgs(), request_id)


def export(s: Session, row: t.Volume, client_host: str, request_id: str | None) -> None:
    """Queue the volume's export to ``client_host`` (an attach across hosts), in the caller's transaction."""
    queue(s, row, VolumeExportArgs(client_host=client_host), request_id)


APPLY: dict[str, Callable[[Session, t.Volume, Outcome, BaseModel, datetime], Applied]] = {
    "volume_create": _create, "volume_delete": _delete, "volume_extend": _extend,
    "volume_snapshot": _snap, "volume_snapshot_delete": _unsnap, "volume_upload": _upload,
    "volume_export": _export, "volume_unexport": _unexport, "volume_revert": _revert,
}
