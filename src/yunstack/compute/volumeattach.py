"""A server's volumes (Nova's os-volume_attachments): attach, list, detach.

The use cases check the server's and the volume's states, record the attachment and the volume's
``attaching``/``detaching`` in one transaction with the host step (``compute.operations.volumes``),
and return; the compute host hot-plugs the disk and its report sets ``in-use`` or ``available``.
Today the guest must run on the volume's storage host, which opens the volume's own file; a
volume on another host needs the network data path of the design's fourth slice, and is refused
with that reason rather than half-attached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import operations, states
from yunstack.compute.driver import disk_device_name
from yunstack.compute.operations import Operation
from yunstack.db.tables import compute as t
from yunstack.db.tables import volume as vt
from yunstack.errors import BadRequest, Conflict, NotFound
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.protocol import AttachVolumeArgs, DetachVolumeArgs, ExtendVolumeArgs, NbdConnection, StepArgs
from yunstack.types import new_uuid
from yunstack.volume import attachments
from yunstack.volume import operations as volume_operations
from yunstack.volume import states as vs
from yunstack.volume.backend import reached_directly


@dataclass(frozen=True, kw_only=True)
class VolumeAttachment:
    """One volume of a server, as Nova shows it (``id`` is the volume's id, as in Nova)."""

    id: str
    server_id: str
    volume_id: str
    device: str | None
    status: str
    delete_on_termination: bool


def _view(a: vt.VolumeAttachment) -> VolumeAttachment:
    return VolumeAttachment(id=a.volume_id, server_id=a.instance_id, volume_id=a.volume_id, device=a.device,
                            status=a.status, delete_on_termination=a.delete_on_termination)


def _next_device(s: Session, row: t.Instance) -> str:
    """The name the next disk gets in the guest, as the driver names it (its report confirms it): vda
    is the root disk of the host (none when the server boots from a volume), then the config drive if
    the server has one, then the volumes in attach order (a root volume first)."""
    count = s.scalar(select(func.count()).select_from(vt.VolumeAttachment)
                     .where(vt.VolumeAttachment.instance_id == row.id,
                            vt.VolumeAttachment.origin == attachments.COMPUTE)) or 0
    return "/dev/" + disk_device_name(int(bool(row.image_id)) + int(bool(row.config_drive)) + int(count))


class VolumeAttachOps:
    """Mixed into ``ComputeService``, which provides the attributes and helpers below."""

    _db: sessionmaker[Session]
    notify: Callable[[str], None]

    def _row(self, s: Session, ctx: AuthContext, server_id: str) -> t.Instance:
        raise NotImplementedError

    def _begin(self, s: Session, ctx: AuthContext, server_id: str, action: str) -> tuple[t.Instance, Operation]:
        raise NotImplementedError

    def _queue_action(self, s: Session, ctx: AuthContext, row: t.Instance, decl: Operation, args: StepArgs,
                      request_id: str) -> None:
        raise NotImplementedError

    def _record(self, s: Session, row: t.Instance, action: str, request_id: str, ctx: AuthContext,
                message: str | None = None) -> None:
        raise NotImplementedError

    # ``BootVolumeOps``'s (annotations only: a method here would hide it, coming first in the MRO).
    boot_volume_done: Callable[[str, str, str | None], None]
    boot_export_failed: Callable[[Session, t.Instance, str, str], None]

    def list_volume_attachments(self, ctx: AuthContext, server_id: str) -> list[VolumeAttachment]:
        with self._db() as s:
            row = self._row(s, ctx, server_id)
            return [_view(a) for a in attachments.of_servers(s, [row.id])[row.id]]

    def get_volume_attachment(self, ctx: AuthContext, server_id: str, volume_id: str) -> VolumeAttachment:
        for att in self.list_volume_attachments(ctx, server_id):
            if att.volume_id == volume_id:
                return att
        raise NotFound("Volume {volume_id} is not attached to server {server_id}.", volume_id=volume_id,
                       server_id=server_id)

    def attach_volume(self, ctx: AuthContext, server_id: str, volume_id: str, request_id: str, *,
                      delete_on_termination: bool = False) -> VolumeAttachment:
        """Reserve the volume for the server and queue the hot-plug; the attachment is returned at once."""
        policy.require_write(ctx, "compute:os-volumes-attachments:create")
        now = datetime.now(UTC)
        with self._db.begin() as s:
            row, decl = self._begin(s, ctx, server_id, "attach_volume")
            # Locked (PostgreSQL) until this reservation commits: a revert or another attach that
            # checked the same "available" meanwhile waits, then sees "reserved".
            vol = s.get(vt.Volume, volume_id, with_for_update=True)
            if vol is None or (vol.project_id != row.project_id and not ctx.is_admin):
                raise NotFound("Volume {id} could not be found.", id=volume_id)
            if s.scalar(select(vt.VolumeAttachment.id).where(vt.VolumeAttachment.volume_id == volume_id,
                                                             vt.VolumeAttachment.instance_id == row.id)):
                raise BadRequest("Invalid volume: volume {id} is already attached to server {server}.",
                                 id=volume_id, server=row.id)
            if vol.status != vs.AVAILABLE:
                raise BadRequest("Invalid volume: volume {id} status must be available to attach, but it is "
                                 "{status}.", id=volume_id, status=vol.status)
            if not row.host:
                raise Conflict("Cannot attach volume {id}: server {server} is on no host.", id=volume_id,
                               server=row.id)
            att = vt.VolumeAttachment(id=new_uuid(), volume_id=vol.id, instance_id=row.id,
                                      project_id=row.project_id, host=row.host, device=_next_device(s, row),
                                      status=attachments.ATTACHING, mode="ro" if vol.read_only else "rw",
                                      delete_on_termination=delete_on_termination, created_at=now, updated_at=now)
            s.add(att)
            vol.status, vol.status_reason, vol.updated_at = vs.ATTACHING, None, now
            args = AttachVolumeArgs(volume_id=vol.id, read_only=bool(vol.read_only))
            if reached_directly(vol.backend, vol.host, row.host):
                self._queue_action(s, ctx, row, decl, args, request_id)
                host = row.host
            else:
                # Kept on another host: that host exports it first (``volume_exported`` then queues
                # the hot-plug with where and how to reach it).  The server shows the attach meanwhile.
                row.task_state, row.updated_at = decl.task_state(args), now
                self._record(s, row, decl.action or decl.name, request_id, ctx)
                volume_operations.export(s, vol, row.host, request_id)
                host = vol.host
            view = _view(att)
        self.notify(host)
        return view

    def volume_exported(self, instance_id: str, volume_id: str, request_id: str) -> None:
        """The storage host serves the volume to the server's host: queue the hot-plug over NBD (or, for
        a server being built with it, the build's next move)."""
        with self._db.begin() as s:
            row = s.get(t.Instance, instance_id)
            if row is None:
                return  # the server went meanwhile: its delete ended the attachment (and the export)
            building = row.vm_state == states.BUILDING and row.task_state == states.BLOCK_DEVICE_MAPPING
            att = s.scalar(select(vt.VolumeAttachment).where(vt.VolumeAttachment.volume_id == volume_id,
                                                             vt.VolumeAttachment.instance_id == instance_id))
            host = None
            if not building and att is not None and att.connection is not None \
                    and row.task_state == states.ATTACHING_VOLUME:
                args = AttachVolumeArgs(volume_id=volume_id, read_only=att.mode == "ro",
                                        nbd=NbdConnection.model_validate(att.connection))
                operations.queue_step(s, row, args, request_id, task=states.ATTACHING_VOLUME)
                host = row.host
        if building:
            self.boot_volume_done(instance_id, volume_id, None)
        elif host:
            self.notify(host)

    def volume_export_failed(self, instance_id: str, volume_id: str, why: str) -> None:
        """The storage host could not export the volume: the attach is over (the volume says why), or the
        build that waited for it fails."""
        with self._db.begin() as s:
            row = s.get(t.Instance, instance_id)
            if row is not None and row.task_state == states.ATTACHING_VOLUME:
                row.task_state, row.updated_at = None, datetime.now(UTC)
            elif row is not None and row.vm_state == states.BUILDING and row.task_state == states.BLOCK_DEVICE_MAPPING:
                self.boot_export_failed(s, row, volume_id, why)

    def extend_attached_volume(self, ctx: AuthContext, volume_id: str, size_gib: int, request_id: str | None) -> None:
        """Queue the growth of an in-use volume on its server's host (the volume service checked the
        size and the quota and shows ``extending``); the guest then sees the new size."""
        with self._db.begin() as s:
            att = s.scalar(select(vt.VolumeAttachment).where(vt.VolumeAttachment.volume_id == volume_id,
                                                             vt.VolumeAttachment.status == attachments.ATTACHED,
                                                             vt.VolumeAttachment.origin == attachments.COMPUTE))
            if att is None:  # a record of Cinder's attachments API plugs nothing: no guest to grow it in
                raise Conflict("Volume {id} is not attached to a server that could grow it.", id=volume_id)
            if att.connection is not None:
                raise Conflict("Volume {id} reaches its server over the network (NBD), which cannot grow it while "
                               "attached yet: detach it, extend it, attach it again.", id=volume_id)
            row, decl = self._begin(s, ctx, att.instance_id, "extend_volume")
            self._queue_action(s, ctx, row, decl, ExtendVolumeArgs(volume_id=volume_id, size_gib=size_gib),
                               request_id or "")
            host = row.host
        if host:
            self.notify(host)

    def detach_volume(self, ctx: AuthContext, server_id: str, volume_id: str, request_id: str) -> None:
        """Queue the unplug; the volume is ``available`` once the guest has let go of it."""
        policy.require_write(ctx, "compute:os-volumes-attachments:delete")
        now = datetime.now(UTC)
        with self._db.begin() as s:
            row, decl = self._begin(s, ctx, server_id, "detach_volume")
            att = s.scalar(select(vt.VolumeAttachment).where(vt.VolumeAttachment.volume_id == volume_id,
                                                             vt.VolumeAttachment.instance_id == row.id))
            if att is None:
                raise NotFound("Volume {volume_id} is not attached to server {server_id}.", volume_id=volume_id,
                               server_id=server_id)
            if att.boot_index == 0:
                raise BadRequest("Can't detach root device volume {id} of server {server}.", id=volume_id,
                                 server=row.id)
            if att.status != attachments.ATTACHED:
                raise Conflict("Volume {id} is {status} on server {server}: wait until that ends.", id=volume_id,
                               status=att.status, server=row.id)
            vol = s.get(vt.Volume, volume_id)
            att.status, att.updated_at = attachments.DETACHING, now
            if vol is not None:
                vol.status, vol.updated_at = vs.DETACHING, now
            self._queue_action(s, ctx, row, decl, DetachVolumeArgs(volume_id=volume_id), request_id)
            host = row.host
        if host:
            self.notify(host)
