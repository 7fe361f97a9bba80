"""Cinder's attachments API (3.27): attachments as records, in the one ``volume_attachment`` table.

A record made here plugs nothing: as in Cinder, the consumer that asked for it (Nova, a CSI
driver) connects the volume itself with the ``connection_info`` it gets back.  Nova's own path
(``compute.volumeattach``, which hot-plugs over QMP) writes rows of the same table with origin
``compute``; both show here with their real status, and only this API's own records can be
updated or deleted through it (Nova's are detached through Nova, which unplugs them).

Statuses, Cinder's: a record made without a connector is ``reserved`` (the volume ``reserved``);
one given a connector, at create or by an update, is ``attaching`` (the volume ``attaching``)
and carries ``connection_info``; ``os-complete`` (3.44) makes it ``attached`` (the volume
``in-use``); deleting the last one leaves the volume ``available``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from yunstack.config import Config
from yunstack.db.tables import volume as t
from yunstack.errors import BadRequest, NotFound
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.types import new_uuid, utcnow
from yunstack.volume import attachments as rows
from yunstack.volume import states

# Our row statuses in Cinder's words (a row whose server went away before its volume was made is not shown).
_CINDER_STATUS = {rows.RESERVED: "reserved", rows.ATTACHING: "attaching", rows.ATTACHED: "attached",
                  rows.DETACHING: "detaching", rows.FAILED: "error_attaching"}
_OUR_STATUS = {v: k for k, v in _CINDER_STATUS.items()}
RESERVABLE = frozenset({states.AVAILABLE})


class AttachmentNotFound(NotFound):
    """Raised when no attachment has the id in the caller's project."""

    message = "VolumeAttachment {id} could not be found."


@dataclass(frozen=True, kw_only=True)
class Record:
    """One attachment as Cinder's attachments API shows it."""

    id: str
    volume_id: str
    instance: str
    status: str
    attach_mode: str
    attached_at: datetime | None
    connection_info: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True, kw_only=True)
class RecordQuery:
    volume_id: str | None = None
    instance_id: str | None = None
    status: str | None = None
    all_projects: bool = False
    limit: int | None = None
    marker: str | None = None
    offset: int = 0
    sort_dir: str = "desc"


class AttachmentRecords:
    def __init__(self, db: sessionmaker[Session], config: Config) -> None:
        self._db = db
        self._config = config

    def _connection_info(self, att: t.VolumeAttachment, vol: t.Volume) -> dict[str, Any] | None:
        """How the consumer reaches the volume.  A ``file`` volume on its storage host: its qcow2 file
        there (os-brick's ``local`` connector).  Nova's attachment from another host: the storage
        host's NBD export (its TLS key stays between the two agents, never in the API).  Other
        backends (``rbd``, ``lvm``) do not hand one out through this API yet: null."""
        if att.origin == rows.CINDER and att.connector is None:
            return None
        common = {"volume_id": vol.id, "access_mode": att.mode, "encrypted": False, "qos_specs": None}
        if att.connection:
            nbd = att.connection
            return {"driver_volume_type": "nbd",
                    "data": {"host": nbd.get("host"), "port": nbd.get("port"), "export_name": nbd.get("export"),
                             "tls": "psk", "psk_identity": nbd.get("psk_identity"), **common}}
        if vol.backend != "file":
            return None
        path = self._config.volumes_path / "volumes" / f"{vol.id}.qcow2"
        return {"driver_volume_type": "local",
                "data": {"device_path": str(path), "format": "qcow2", "host": vol.host, **common}}

    def _record(self, att: t.VolumeAttachment, vol: t.Volume) -> Record:
        reserved = att.origin == rows.CINDER and att.connector is None
        return Record(id=att.id, volume_id=att.volume_id, instance=att.instance_id,
                      status=_CINDER_STATUS.get(att.status, att.status),
                      attach_mode="null" if reserved else att.mode, attached_at=att.attached_at,
                      connection_info=self._connection_info(att, vol), created_at=att.created_at)

    def _row(self, s: Session, ctx: AuthContext, attachment_id: str) -> tuple[t.VolumeAttachment, t.Volume]:
        att = s.get(t.VolumeAttachment, attachment_id)
        vol = None if att is None else s.get(t.Volume, att.volume_id)
        if (att is None or vol is None or att.status == rows.RELEASED
                or (not ctx.is_admin and att.project_id != ctx.project_id)):
            raise AttachmentNotFound(id=attachment_id)
        return att, vol

    def get(self, ctx: AuthContext, attachment_id: str) -> Record:
        with self._db() as s:
            return self._record(*self._row(s, ctx, attachment_id))

    def list(self, ctx: AuthContext, query: RecordQuery) -> list[Record]:
        project = None if ctx.is_admin and query.all_projects else ctx.project_id
        with self._db() as s:
            q = select(t.VolumeAttachment, t.Volume).join(t.Volume, t.Volume.id == t.VolumeAttachment.volume_id)
            q = q.where(t.VolumeAttachment.status != rows.RELEASED)
            if project is not None:
                q = q.where(t.VolumeAttachment.project_id == project)
            if query.volume_id is not None:
                q = q.where(t.VolumeAttachment.volume_id == query.volume_id)
            if query.instance_id is not None:
                q = q.where(t.VolumeAttachment.instance_id == query.instance_id)
            if query.status is not None:
                q = q.where(t.VolumeAttachment.status == _OUR_STATUS.get(query.status, query.status))
            if query.sort_dir not in ("asc", "desc"):
                raise BadRequest(f"Invalid input received: Invalid sort direction {query.sort_dir}")
            newest = query.sort_dir == "desc"
            if query.marker is not None:
                marker = s.get(t.VolumeAttachment, query.marker)
                if marker is None or (project is not None and marker.project_id != project):
                    raise NotFound(f"Marker {query.marker} could not be found.")
                key = tuple_(t.VolumeAttachment.created_at, t.VolumeAttachment.id)
                at = tuple_(marker.created_at, marker.id)
                q = q.where(key < at if newest else key > at)
            order = (t.VolumeAttachment.created_at, t.VolumeAttachment.id)
            q = q.order_by(*[c.desc() if newest else c.asc() for c in order])
            limit = min(query.limit if query.limit is not None else 1000, 1000)
            return [self._record(att, vol) for att, vol in s.execute(q.offset(query.offset).limit(limit))]

    def create(self, ctx: AuthContext, volume_id: str, instance_id: str,
               connector: Mapping[str, Any] | None) -> Record:
        policy.require_write(ctx, "volume:attachment_create")
        with self._db.begin() as s:
            vol = s.get(t.Volume, volume_id, with_for_update=True)  # as Nova's attach (compute/volumeattach.py)
            if vol is None or (not ctx.is_admin and vol.project_id != ctx.project_id):
                raise NotFound(f"Volume {volume_id} could not be found.")
            if vol.status not in RESERVABLE:
                raise BadRequest(f"Invalid volume: Volume {volume_id} status must be available to reserve, but "
                                 f"the current status is: {vol.status}.")
            now = utcnow()
            att = t.VolumeAttachment(id=new_uuid(), volume_id=vol.id, instance_id=instance_id,
                                     project_id=vol.project_id, host="", device=None, status=rows.RESERVED,
                                     mode="rw", origin=rows.CINDER, connector=None, created_at=now,
                                     updated_at=now)
            s.add(att)
            vol.status, vol.updated_at = states.RESERVED, now
            if connector is not None:
                self._connect(att, vol, connector, now)
            s.flush()
            return self._record(att, vol)

    @staticmethod
    def _connect(att: t.VolumeAttachment, vol: t.Volume, connector: Mapping[str, Any], now: datetime) -> None:
        mode = connector.get("mode") or ("ro" if vol.read_only else "rw")
        if mode not in ("rw", "ro"):
            raise BadRequest(f"Invalid input received: connector mode must be rw or ro, not {mode!r}.")
        if mode == "rw" and vol.read_only:
            raise BadRequest(f"Invalid attaching mode 'rw' for volume {vol.id}: it is read-only.")
        host = connector.get("host")
        att.connector, att.mode, att.host = dict(connector), mode, str(host or "")[:255]
        att.device = str(connector["mountpoint"])[:64] if connector.get("mountpoint") else None
        att.status, att.updated_at = rows.ATTACHING, now
        vol.status, vol.updated_at = states.ATTACHING, now

    def _own(self, s: Session, ctx: AuthContext, attachment_id: str) -> tuple[t.VolumeAttachment, t.Volume]:
        att, vol = self._row(s, ctx, attachment_id)
        if att.origin != rows.CINDER:
            raise BadRequest(f"Invalid volume: attachment {attachment_id} is Nova's (server {att.instance_id}): "
                             f"detach it through Nova's os-volume_attachments.")
        return att, vol

    def update(self, ctx: AuthContext, attachment_id: str, connector: Mapping[str, Any]) -> Record:
        policy.require_write(ctx, "volume:attachment_update")
        with self._db.begin() as s:
            att, vol = self._own(s, ctx, attachment_id)
            if att.status not in (rows.RESERVED, rows.ATTACHING):
                raise BadRequest(f"Invalid volume: attachment {attachment_id} is {att.status}.")
            self._connect(att, vol, connector, utcnow())
            s.flush()
            return self._record(att, vol)

    def complete(self, ctx: AuthContext, attachment_id: str) -> None:
        """Cinder's ``os-complete`` (3.44): the consumer has connected the volume; the record is
        ``attached`` (listed on the volume) and the volume ``in-use``."""
        policy.require_write(ctx, "volume:attachment_complete")
        with self._db.begin() as s:
            att, vol = self._own(s, ctx, attachment_id)
            # Only an attachment on its way, of a volume on its way or in use: a volume an admin set
            # to error or maintenance stays there, and a detached record stays detached.
            if att.status not in (rows.RESERVED, rows.ATTACHING, rows.ATTACHED):
                raise BadRequest("Invalid volume: attachment {id} is {status}.", id=attachment_id,
                                 status=att.status)
            if vol.status not in (states.RESERVED, states.ATTACHING, states.IN_USE):
                raise BadRequest("Invalid volume: volume {id} is {status}.", id=vol.id, status=vol.status)
            now = utcnow()
            att.status, att.updated_at = rows.ATTACHED, now
            att.attached_at = att.attached_at or now
            vol.status, vol.status_reason, vol.updated_at = states.IN_USE, None, now

    def delete(self, ctx: AuthContext, attachment_id: str) -> None:
        policy.require_write(ctx, "volume:attachment_delete")
        with self._db.begin() as s:
            att, vol = self._own(s, ctx, attachment_id)
            s.delete(att)
            s.flush()
            others = s.scalar(select(t.VolumeAttachment.status).where(t.VolumeAttachment.volume_id == vol.id)
                              .limit(1))
            now = utcnow()
            if others is None:
                vol.status = states.AVAILABLE
            elif vol.status in (states.RESERVED, states.ATTACHING):
                vol.status = states.IN_USE if others == rows.ATTACHED else states.ATTACHING
            vol.updated_at = now
