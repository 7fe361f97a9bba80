"""Cinder's volumes and snapshots: policy, the status machine, quotas, and the storage host's work.

Every change to a volume's bytes is a step of the volume's storage host (``volume.operations``):
the API call checks and records the intent (``creating``, ``deleting``, ``extending``) and queues
the step in one transaction, then returns; the host's report sets the end status.  Who may do
what follows Cinder's default policy: members of the project create and change, readers only
read, admins act on every project and alone reset statuses; another project's volume is 404.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Select, and_, asc, desc, false, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.config import Config
from yunstack.db.tables import tasks as tt
from yunstack.db.tables import volume as t
from yunstack.errors import BadRequest, Forbidden, NotFound, YunError
from yunstack.identity import policy
from yunstack.identity.context import AuthContext, system_context
from yunstack.protocol import (
    Outcome,
    VolumeCreateArgs,
    VolumeDeleteArgs,
    VolumeExtendArgs,
    VolumeSnapshotArgs,
    VolumeSnapshotDeleteArgs,
    VolumeUploadArgs,
)
from yunstack.tasks.model import REGISTRY, TaskState
from yunstack.tasks.service import TaskService
from yunstack.types import new_uuid, utcnow
from yunstack.volume import novaimage, operations, revert, states
from yunstack.volume.attachments import ATTACHING, RELEASED, RESERVED
from yunstack.volume.backend import LIVE_SNAPSHOTS
from yunstack.volume.models import Attachment, QuotaUsage, Snapshot, Volume
from yunstack.volume.quotas import DEFAULTS, PER_TYPE, VolumeQuotas
from yunstack.volume.records import AttachmentRecords
from yunstack.volume.types import VolumeTypes, as_type

log = logging.getLogger(__name__)
GIB = 1 << 30
MAX_METADATA_ITEMS = 128
MAX_LIMIT = 1000  # Cinder's osapi_max_limit: the most one page returns
VOLUME_SORT_KEYS = {"id": t.Volume.id, "name": t.Volume.name, "display_name": t.Volume.name,
                    "status": t.Volume.status, "size": t.Volume.size, "created_at": t.Volume.created_at,
                    "updated_at": t.Volume.updated_at, "availability_zone": t.Volume.availability_zone,
                    "bootable": t.Volume.bootable, "project_id": t.Volume.project_id}
SNAPSHOT_SORT_KEYS = {"id": t.Snapshot.id, "name": t.Snapshot.name, "display_name": t.Snapshot.name,
                      "status": t.Snapshot.status, "size": t.Snapshot.size, "created_at": t.Snapshot.created_at,
                      "updated_at": t.Snapshot.updated_at, "volume_id": t.Snapshot.volume_id}


class VolumeNotFound(NotFound):
    message = "Volume {id} could not be found."


class SnapshotNotFound(NotFound):
    message = "Snapshot {id} could not be found."


class InvalidVolume(BadRequest):
    message = "Invalid volume: {reason}"


class InvalidSnapshot(BadRequest):
    message = "Invalid snapshot: {reason}"


UPLOAD_FORMATS = frozenset({"raw", "qcow2"})


@dataclass(frozen=True, kw_only=True)
class Upload:
    """An upload to an image as Cinder answers it."""

    volume: Volume
    image_id: str
    image_name: str
    disk_format: str
    container_format: str
    visibility: str
    protected: bool


@dataclass(frozen=True, kw_only=True)
class VolumeCreate:
    """A create request, checked for shape by the API (``api/volume/schemas.py``)."""

    size: int | None = None
    name: str | None = None
    description: str | None = None
    volume_type: str | None = None
    availability_zone: str | None = None
    metadata: Mapping[str, str] | None = None
    image_id: str | None = None
    snapshot_id: str | None = None
    source_volid: str | None = None
    multiattach: bool = False
    nova_image: bool = False  # 3.46: an image of a volume-backed server gives its boot volume's snapshot


@dataclass(frozen=True, kw_only=True)
class ForServer:
    """A volume made for a server's block device mapping: held for that server from its creation on."""

    instance_id: str
    host: str  # the server's compute host
    device: str  # the name the guest will give it
    boot_index: int | None  # 0: the server's root disk
    delete_on_termination: bool


@dataclass(frozen=True, kw_only=True)
class ListQuery:
    """A list call's filters, sort and page (``None``: not filtered)."""

    name: str | None = None
    name_like: str | None = None  # 3.31's name~: names containing it (SQL LIKE, any case)
    status: str | None = None
    metadata: str | None = None  # Cinder's form: a Python dict literal, "{'k': 'v'}"
    availability_zone: str | None = None
    bootable: bool | None = None
    glance_metadata: str | None = None  # volumes (3.4): the image properties a volume shows, as metadata
    group_id: str | None = None  # volumes (3.10): no volume is in a group here, so it matches none
    volume_id: str | None = None  # snapshots only
    all_projects: bool = False
    project_id: str | None = None
    sort: Sequence[tuple[str, str]] = ()
    limit: int | None = None
    marker: str | None = None
    offset: int = 0


def _metadata_filter(raw: str | None) -> dict[str, str] | None:
    if raw is None:
        return None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise BadRequest(f"Invalid input received: metadata filter {raw!r} is not a dictionary.") from None
    if not isinstance(value, dict):
        raise BadRequest(f"Invalid input received: metadata filter {raw!r} is not a dictionary.")
    return {str(k): str(v) for k, v in value.items()}


def check_metadata(meta: Mapping[str, object]) -> dict[str, str]:
    """Cinder's rules: string keys of 1 to 255 characters, string values of at most 255."""
    if len(meta) > MAX_METADATA_ITEMS:
        raise BadRequest(f"Invalid input received: at most {MAX_METADATA_ITEMS} metadata items are allowed.")
    out = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            raise BadRequest("Invalid input received: metadata keys must be 1 to 255 characters.")
        if not isinstance(value, str) or len(value) > 255:
            raise BadRequest(f"Invalid input received: the metadata value of {key} must be a string of at most "
                             f"255 characters.")
        out[key] = value
    return out


def _attachments(s: Session, volume_ids: list[str]) -> dict[str, tuple[Attachment, ...]]:
    """The attachments Cinder shows on each volume: those the guest has (not one still being made)."""
    found: dict[str, list[Attachment]] = {v: [] for v in volume_ids}
    if volume_ids:
        for a in s.scalars(select(t.VolumeAttachment).where(t.VolumeAttachment.volume_id.in_(volume_ids),
                                                            t.VolumeAttachment.status.not_in(
                                                                (ATTACHING, RESERVED, RELEASED)))
                           .order_by(t.VolumeAttachment.created_at)):
            found[a.volume_id].append(Attachment(id=a.id, volume_id=a.volume_id, server_id=a.instance_id,
                                                 host_name=a.host, device=a.device, attached_at=a.attached_at))
    return {v: tuple(atts) for v, atts in found.items()}


def as_volume(row: t.Volume, vtype: t.VolumeType, attachments: tuple[Attachment, ...] = ()) -> Volume:
    return Volume(id=row.id, project_id=row.project_id, user_id=row.user_id, name=row.name,
                  description=row.description, size=row.size, status=row.status, status_reason=row.status_reason,
                  availability_zone=row.availability_zone, volume_type=as_type(vtype), host=row.host,
                  backend=row.backend, bootable=row.bootable, read_only=row.read_only, multiattach=row.multiattach,
                  snapshot_id=row.snapshot_id, source_volid=row.source_volid,
                  metadata={str(k): str(v) for k, v in (row.meta or {}).items()},
                  image_metadata=dict(row.image_metadata or {}), created_at=row.created_at,
                  updated_at=row.updated_at, launched_at=row.launched_at, attachments=attachments)


def as_snapshot(row: t.Snapshot) -> Snapshot:
    return Snapshot(id=row.id, volume_id=row.volume_id, project_id=row.project_id, user_id=row.user_id,
                    name=row.name, description=row.description, size=row.size, status=row.status,
                    status_reason=row.status_reason, progress=row.progress,
                    metadata={str(k): str(v) for k, v in (row.meta or {}).items()}, created_at=row.created_at,
                    updated_at=row.updated_at)


def _sorted(q: Select[Any], keys: Mapping[str, Any], sort: Sequence[tuple[str, str]], id_column: Any) -> Select[Any]:
    order = []
    for key, direction in sort or (("created_at", "desc"),):
        column = keys.get(key)
        if column is None:
            raise BadRequest(f"Invalid input received: Invalid sort key {key}")
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid input received: Invalid sort direction {direction}")
        order.append((column, direction))
    if not any(c is id_column for c, _ in order):
        order.append((id_column, order[-1][1]))  # a total order, so a marker names one place
    return q.order_by(*[asc(c) if d == "asc" else desc(c) for c, d in order])


def _after(q: Select[Any], row: Any, keys: Mapping[str, Any], sort: Sequence[tuple[str, str]],
           id_column: Any) -> Select[Any]:
    """The rows after ``row`` in the order of ``sort`` (keyset paging: stable under inserts)."""
    order = [(keys[k], d) for k, d in (sort or (("created_at", "desc"),))]
    if not any(c is id_column for c, _ in order):
        order.append((id_column, order[-1][1]))
    clauses = []
    for i, (column, direction) in enumerate(order):
        value = getattr(row, column.key)
        equal = [c == getattr(row, c.key) for c, _ in order[:i]]
        beyond = column > value if direction == "asc" else column < value
        clauses.append(and_(*equal, beyond))
    return q.where(or_(*clauses))


def _volume_filters(project: str | None, query: ListQuery) -> Select[Any]:
    """The volumes a list's column filters match (metadata is matched per row: ``_volume_matches``)."""
    q = select(t.Volume)
    if project is not None:
        q = q.where(t.Volume.project_id == project)
    if query.name is not None:
        q = q.where(t.Volume.name == query.name)
    if query.name_like is not None:
        q = q.where(t.Volume.name.ilike(f"%{query.name_like}%"))
    if query.status is not None:
        q = q.where(t.Volume.status == query.status)
    if query.availability_zone is not None:
        q = q.where(t.Volume.availability_zone == query.availability_zone)
    if query.bootable is not None:
        q = q.where(t.Volume.bootable.is_(query.bootable))
    if query.group_id is not None:
        q = q.where(false())
    return q


def _volume_matches(row: t.Volume, wanted: Mapping[str, str] | None, image: Mapping[str, str] | None) -> bool:
    meta, shown = row.meta or {}, row.image_metadata or {}
    return (all(meta.get(k) == v for k, v in (wanted or {}).items())
            and all(k in shown and str(shown.get(k)) == v for k, v in (image or {}).items()))


def _snapshot_filters(project: str | None, query: ListQuery) -> Select[Any]:
    q = select(t.Snapshot)
    if project is not None:
        q = q.where(t.Snapshot.project_id == project)
    if query.name is not None:
        q = q.where(t.Snapshot.name == query.name)
    if query.name_like is not None:
        q = q.where(t.Snapshot.name.ilike(f"%{query.name_like}%"))
    if query.status is not None:
        q = q.where(t.Snapshot.status == query.status)
    if query.volume_id is not None:
        q = q.where(t.Snapshot.volume_id == query.volume_id)
    return q


class VolumeService:
    def __init__(self, db: sessionmaker[Session], config: Config, *, images: Any,
                 wake: Callable[[str], None] = lambda host: None, tasks: TaskService | None = None) -> None:
        self._db = db
        self._config = config
        self._images = images
        self._wake = wake  # tells a storage host's long-poll that a step is queued for it
        self.tasks = tasks or TaskService(db)
        self.types = VolumeTypes(db, config.volume.default_volume_type)
        # Grows an in-use volume through its server's host (the compute service's, set by the
        # composition root; None: in-use volumes are not extended).
        self.extend_attached: Callable[[AuthContext, str, int, str | None], None] | None = None
        # Told when a volume a server's block device mapping waited for is made, or failed (server id,
        # volume id, the error): the compute service's, set by the composition root.
        self.boot_volume_done: Callable[[str, str, str | None], None] | None = None
        # Whether none of these servers' guests can have a volume open (the compute service's).
        self.guests_stopped: Callable[[Sequence[str]], bool] | None = None
        # Told when a volume is exported for an attach across hosts (server id, volume id, request id),
        # or could not be (server id, volume id, why): the compute service's.
        self.volume_exported: Callable[[str, str, str], None] | None = None
        self.volume_export_failed: Callable[[str, str, str], None] | None = None
        self.quotas = VolumeQuotas()
        self.records = AttachmentRecords(db, config)  # Cinder's attachments API

    @property
    def zone(self) -> str:
        return self._config.volume.availability_zone

    def ensure_defaults(self) -> None:
        self.types.ensure_default()

    # -- reading -------------------------------------------------------------------------------

    def _row(self, s: Session, ctx: AuthContext, volume_id: str) -> t.Volume:
        row = s.get(t.Volume, volume_id)
        if row is None or (not ctx.is_admin and row.project_id != ctx.project_id):
            raise VolumeNotFound(id=volume_id)
        return row

    def _view(self, s: Session, row: t.Volume) -> Volume:
        vtype = s.get(t.VolumeType, row.volume_type_id)
        assert vtype is not None  # a foreign key
        return as_volume(row, vtype, _attachments(s, [row.id])[row.id])

    def get(self, ctx: AuthContext, volume_id: str) -> Volume:
        with self._db() as s:
            return self._view(s, self._row(s, ctx, volume_id))

    def list_volumes(self, ctx: AuthContext, query: ListQuery) -> list[Volume]:
        project = policy.project_filter(ctx, query.project_id, all_projects=query.all_projects)
        with self._db() as s:
            q = _volume_filters(project, query)
            if query.marker is not None:
                marker = s.get(t.Volume, query.marker)
                if marker is None or (project is not None and marker.project_id != project):
                    raise NotFound(f"Marker {query.marker} could not be found.")
                q = _after(q, marker, VOLUME_SORT_KEYS, query.sort, t.Volume.id)
            q = _sorted(q, VOLUME_SORT_KEYS, query.sort, t.Volume.id)
            wanted = _metadata_filter(query.metadata)
            image = _metadata_filter(query.glance_metadata)
            limit = min(query.limit if query.limit is not None else MAX_LIMIT, MAX_LIMIT)
            if wanted is None and image is None:
                rows = list(s.scalars(q.offset(query.offset).limit(limit)))
            else:  # metadata is JSON: matched here, then paged (a project's volumes are few)
                rows = [r for r in s.scalars(q) if _volume_matches(r, wanted, image)]
                rows = rows[query.offset:query.offset + limit]
            types = {r.id: r for r in s.scalars(select(t.VolumeType))}
            attached = _attachments(s, [r.id for r in rows])
            return [as_volume(r, types[r.volume_type_id], attached[r.id]) for r in rows]

    def count_volumes(self, ctx: AuthContext, query: ListQuery) -> int:
        """How many volumes the list's filters match, whatever the page (Cinder's ``with_count``, 3.45)."""
        project = policy.project_filter(ctx, query.project_id, all_projects=query.all_projects)
        with self._db() as s:
            q = _volume_filters(project, query)
            wanted, image = _metadata_filter(query.metadata), _metadata_filter(query.glance_metadata)
            if wanted is None and image is None:
                return int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)
            return sum(1 for r in s.scalars(q) if _volume_matches(r, wanted, image))

    def summary(self, ctx: AuthContext, *, all_projects: bool = False) -> tuple[int, int, dict[str, list[str]]]:
        """How many volumes the project has, their GiB, and each metadata key with its distinct values
        (``GET /volumes/summary``)."""
        project = policy.project_filter(ctx, None, all_projects=all_projects)
        with self._db() as s:
            q = select(func.count(t.Volume.id), func.coalesce(func.sum(t.Volume.size), 0))
            if project is not None:
                q = q.where(t.Volume.project_id == project)
            count, size = s.execute(q).one()
            metas = select(t.Volume.meta)
            if project is not None:
                metas = metas.where(t.Volume.project_id == project)
            metadata: dict[str, list[str]] = {}
            for meta in s.scalars(metas):
                for key, value in sorted((meta or {}).items()):
                    if value not in metadata.setdefault(key, []):
                        metadata[key].append(value)
            return int(count), int(size), metadata

    # -- create --------------------------------------------------------------------------------

    def create(self, ctx: AuthContext, req: VolumeCreate, request_id: str | None = None, *,
               for_server: ForServer | None = None) -> Volume:
        """Queue the volume's creation on the storage host; ``for_server`` holds it for a booting server
        (a ``reserved`` attachment in the same transaction: the server's spawn waits for it)."""
        policy.require_write(ctx, "volume:create")
        project = policy.require_scoped(ctx, "volume:create")
        sources = [x for x in (req.image_id, req.snapshot_id, req.source_volid) if x]
        if len(sources) > 1:
            raise BadRequest("Invalid input received: only one of imageRef, snapshot_id and source_volid may "
                             "be given.")
        if req.availability_zone is not None and req.availability_zone != self.zone:
            raise BadRequest(f"Invalid input received: Availability zone '{req.availability_zone}' is invalid.")
        meta = check_metadata(req.metadata or {})
        image_meta: dict[str, Any] = {}
        image_gib = 0
        bootable = False
        if req.image_id:
            image = self._images.get(ctx, req.image_id)  # NotFound for one the caller cannot see
            recorded = novaimage.boot_snapshot(image.properties)
            if recorded is not None:
                with self._db() as s:  # Cinder looks it up at every version
                    snap = s.get(t.Snapshot, recorded)
                    if snap is None or (not ctx.is_admin and snap.project_id != project):
                        raise novaimage.NovaImageSnapshotNotFound(id=recorded)
                if req.nova_image:
                    return self.create(ctx, replace(req, image_id=None, snapshot_id=recorded, nova_image=False),
                                       request_id, for_server=for_server)
            if image.status != "active":
                raise BadRequest(f"Invalid input received: Image {image.id} is not active.")
            image_bytes = max(image.size or 0, image.virtual_size or 0)
            image_gib = max(math.ceil(image_bytes / GIB), image.min_disk or 0)
            image_meta = {"image_id": image.id, "image_name": image.name or "", "checksum": image.checksum or "",
                          "container_format": image.container_format or "", "disk_format": image.disk_format or "",
                          "min_disk": str(image.min_disk), "min_ram": str(image.min_ram),
                          "size": str(image.size or 0)}
            bootable = True
        with self._db.begin() as s:
            source_size = image_gib
            vtype = None
            if req.snapshot_id:
                snap = s.get(t.Snapshot, req.snapshot_id)
                if snap is None or (not ctx.is_admin and snap.project_id != project):
                    raise SnapshotNotFound(id=req.snapshot_id)
                if snap.status != states.AVAILABLE:
                    raise InvalidSnapshot(reason=f"Originating snapshot status must be available, not {snap.status}.")
                parent = s.get(t.Volume, snap.volume_id)
                source_size = snap.size
                if parent is not None:
                    vtype = s.get(t.VolumeType, parent.volume_type_id)
                    bootable, image_meta = parent.bootable, dict(parent.image_metadata or {})
            if req.source_volid:
                src = s.get(t.Volume, req.source_volid)
                if src is None or (not ctx.is_admin and src.project_id != project):
                    raise VolumeNotFound(id=req.source_volid)
                if src.status not in states.CLONE_SOURCES:
                    raise InvalidVolume(reason=f"the source volume must be available, not {src.status}.")
                source_size = src.size
                vtype = s.get(t.VolumeType, src.volume_type_id)
                bootable, image_meta = src.bootable, dict(src.image_metadata or {})
            size = req.size if req.size is not None else (source_size if sources else None)
            if size is None:
                raise BadRequest("Invalid input received: a volume needs a size (or a snapshot or volume to "
                                 "copy it from).")
            if size < 1:
                raise BadRequest(f"Invalid input received: Volume size '{size}' must be an integer and greater "
                                 f"than 0.")
            if size < source_size:
                what = "image" if req.image_id else "snapshot" if req.snapshot_id else "source volume"
                raise BadRequest(f"Invalid input received: Volume size {size}GB cannot be smaller than the {what} "
                                 f"size {source_size}GB.")
            if req.volume_type is not None:
                vtype = self.types.find(s, ctx, req.volume_type)
            if vtype is None:
                vtype = self.types.default(s)
            self.quotas.check(s, project, {"volumes": 1, "gigabytes": size}, type_id=vtype.id,
                              type_name=vtype.name, size=size)
            now = utcnow()
            row = t.Volume(id=new_uuid(), project_id=project, user_id=ctx.user.id, name=req.name,
                           description=req.description, size=size, status=states.CREATING,
                           availability_zone=self.zone, volume_type_id=vtype.id, host=self._config.storage_host,
                           backend=self._config.volume.backend, bootable=bootable, read_only=None,
                           multiattach=req.multiattach, snapshot_id=req.snapshot_id or None,
                           source_volid=req.source_volid or None, image_id=req.image_id or None, meta=meta,
                           image_metadata=image_meta, created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            if for_server is not None:
                s.add(t.VolumeAttachment(id=new_uuid(), volume_id=row.id, instance_id=for_server.instance_id,
                                         project_id=project, host=for_server.host, device=for_server.device,
                                         status=RESERVED, mode="rw",
                                         delete_on_termination=for_server.delete_on_termination,
                                         boot_index=for_server.boot_index, created_at=now, updated_at=now))
            operations.queue(s, row, VolumeCreateArgs(size_gib=size, image_id=req.image_id or None,
                                                      snapshot_id=req.snapshot_id or None,
                                                      source_volid=req.source_volid or None), request_id)
            view = as_volume(row, vtype)
        self._wake(view.host)
        return view

    # -- change --------------------------------------------------------------------------------

    def update(self, ctx: AuthContext, volume_id: str, *, name: str | None = None, description: str | None = None,
               metadata: Mapping[str, object] | None = None, fields: frozenset[str] = frozenset()) -> Volume:
        policy.require_write(ctx, "volume:update")
        with self._db.begin() as s:
            row = self._row(s, ctx, volume_id)
            if "name" in fields:
                row.name = name
            if "description" in fields:
                row.description = description
            if metadata is not None:
                row.meta = check_metadata(metadata)
            row.updated_at = utcnow()
            s.flush()
            return self._view(s, row)

    def metadata(self, ctx: AuthContext, volume_id: str) -> dict[str, str]:
        return self.get(ctx, volume_id).metadata

    def set_metadata(self, ctx: AuthContext, volume_id: str, meta: Mapping[str, object], *,
                     replace: bool) -> dict[str, str]:
        """POST merges, PUT replaces (Cinder's create_or_update / update_all)."""
        policy.require_write(ctx, "volume:update_volume_metadata")
        checked = check_metadata(meta)
        with self._db.begin() as s:
            row = self._row(s, ctx, volume_id)
            row.meta = check_metadata(checked if replace else {**(row.meta or {}), **checked})
            row.updated_at = utcnow()
            return dict(row.meta)

    def delete_metadata(self, ctx: AuthContext, volume_id: str, key: str) -> None:
        policy.require_write(ctx, "volume:delete_volume_metadata")
        with self._db.begin() as s:
            row = self._row(s, ctx, volume_id)
            meta = dict(row.meta or {})
            if key not in meta:
                raise NotFound(f"Volume {volume_id} has no metadata with key {key}.")
            del meta[key]
            row.meta = meta
            row.updated_at = utcnow()

    def set_bootable(self, ctx: AuthContext, volume_id: str, bootable: bool) -> None:
        policy.require_write(ctx, "volume_extension:volume_actions:set_bootable")
        with self._db.begin() as s:
            row = self._row(s, ctx, volume_id)
            row.bootable = bootable
            row.updated_at = utcnow()

    def set_read_only(self, ctx: AuthContext, volume_id: str, read_only: bool) -> None:
        policy.require_write(ctx, "volume_extension:volume_actions:update_readonly_flag")
        with self._db.begin() as s:
            row = self._row(s, ctx, volume_id)
            if row.status not in (states.AVAILABLE, states.IN_USE):
                raise InvalidVolume(reason=f"the volume must be available or in-use, not {row.status}.")
            row.read_only = read_only
            row.updated_at = utcnow()

    def reset_status(self, ctx: AuthContext, volume_id: str, status: str) -> None:
        """Admins only: set the status a stuck or failed volume shows (nothing on the host changes)."""
        policy.require_admin(ctx, "volume_extension:volume_admin_actions:reset_status")
        if status not in states.RESETTABLE:
            raise BadRequest(f"Invalid input received: '{status}' is not a volume status.")
        with self._db.begin() as s:
            row = self._row(s, ctx, volume_id)
            row.status = status
            row.status_reason = None
            row.updated_at = utcnow()

    def extend(self, ctx: AuthContext, volume_id: str, new_size: int, request_id: str | None = None, *,
               in_use: bool = True) -> None:
        """Grow an available volume on its storage host, or an in-use one through its server's host
        (``extend_attached``: the guest then sees the new size, as Nova's volume-extended event).
        ``in_use``: whether the caller may grow an in-use one (Cinder: from 3.42)."""
        policy.require_write(ctx, "volume:extend")
        with self._db.begin() as s:
            row = self._row(s, ctx, volume_id)
            attached = row.status == states.IN_USE and in_use
            if row.status not in states.EXTENDABLE and not (attached and self.extend_attached is not None):
                expected = states.IN_USE if attached else states.AVAILABLE
                raise InvalidVolume(reason=f"Volume {row.id} status must be '{{'status': '{expected}'}}' to extend, "
                                           f"currently {row.status}.")
            if new_size <= row.size:
                raise BadRequest(f"Invalid input received: New size for extend must be greater than current "
                                 f"size. (current: {row.size}, extended: {new_size}).")
            vtype = s.get(t.VolumeType, row.volume_type_id)
            assert vtype is not None
            self.quotas.check(s, row.project_id, {"gigabytes": new_size - row.size}, type_id=vtype.id,
                              type_name=vtype.name, size=new_size)
            row.status = states.EXTENDING
            row.updated_at = utcnow()
            if not attached:
                operations.queue(s, row, VolumeExtendArgs(size_gib=new_size), request_id)
            host = row.host
        if not attached:
            self._wake(host)
            return
        assert self.extend_attached is not None
        try:
            self.extend_attached(ctx, volume_id, new_size, request_id)
        except YunError:
            with self._db.begin() as s:  # nothing was queued: the volume is as it was
                again = s.get(t.Volume, volume_id)
                if again is not None and again.status == states.EXTENDING:
                    again.status, again.updated_at = states.IN_USE, utcnow()
            raise

    def revert_to_snapshot(self, ctx: AuthContext, volume_id: str, snapshot_id: str | None,
                           request_id: str | None = None) -> None:
        """Give the volume its latest snapshot's bytes again (Cinder 3.40; ``volume.revert``)."""
        policy.require_write(ctx, "volume:revert_to_snapshot")
        with self._db.begin() as s:
            row = self._row(s, ctx, volume_id)
            revert.start(s, row, snapshot_id, request_id)
            host = row.host
        self._wake(host)

    def delete(self, ctx: AuthContext, volume_id: str, *, cascade: bool = False, force: bool = False,
               request_id: str | None = None) -> None:
        """Refused while attached or with snapshots (unless ``cascade``), as Cinder refuses it."""
        policy.require_write(ctx, "volume:delete")
        if force:
            policy.require_admin(ctx, "volume_extension:volume_admin_actions:force_delete")
        with self._db.begin() as s:
            row = self._row(s, ctx, volume_id)
            if not force and row.status not in states.DELETABLE:
                raise InvalidVolume(reason=f"Volume status must be available or error or error_restoring or "
                                           f"error_extending or error_managing and must not be migrating, "
                                           f"attached, belong to a group, have snapshots or be disassociated from "
                                           f"snapshots after volume transfer (it is {row.status}).")
            snaps = list(s.scalars(select(t.Snapshot).where(t.Snapshot.volume_id == row.id)))
            if snaps and not cascade:
                raise InvalidVolume(reason=f"Volume {row.id} still has {len(snaps)} dependent snapshot(s); delete "
                                           f"them first, or delete with cascade.")
            now = utcnow()
            for snap in snaps:
                if snap.status not in states.SNAPSHOT_DELETABLE and not force:
                    raise InvalidVolume(reason=f"snapshot {snap.id} is {snap.status}.")
                snap.status, snap.updated_at = states.DELETING, now
                operations.queue(s, row, VolumeSnapshotDeleteArgs(snapshot_id=snap.id), request_id)
            row.status = states.DELETING
            row.updated_at = now
            operations.queue(s, row, VolumeDeleteArgs(), request_id)
            host = row.host
        self._wake(host)

    # -- snapshots -----------------------------------------------------------------------------

    def _snap_row(self, s: Session, ctx: AuthContext, snapshot_id: str) -> t.Snapshot:
        row = s.get(t.Snapshot, snapshot_id)
        if row is None or (not ctx.is_admin and row.project_id != ctx.project_id):
            raise SnapshotNotFound(id=snapshot_id)
        return row

    def create_snapshot(self, ctx: AuthContext, volume_id: str, *, name: str | None = None,
                        description: str | None = None, metadata: Mapping[str, object] | None = None,
                        force: bool = False, request_id: str | None = None) -> Snapshot:
        policy.require_write(ctx, "volume:create_snapshot")
        meta = check_metadata(metadata or {})
        with self._db.begin() as s:
            vol = self._row(s, ctx, volume_id)
            if vol.status == states.IN_USE and force and vol.backend in LIVE_SNAPSHOTS:
                pass  # RBD snapshots an image a guest writes to (crash-consistent), as Cinder's rbd driver
            elif vol.status == states.IN_USE and force:
                # Cinder's force: an in-use volume, here only while no guest has it open (the storage
                # host snapshots closed files; a running guest's needs QEMU's help, not built yet).
                held = list(s.scalars(select(t.VolumeAttachment).where(t.VolumeAttachment.volume_id == vol.id)))
                if any(a.connection is not None for a in held):
                    raise InvalidVolume(reason=f"Volume {vol.id} is served to a server on another host (its NBD "
                                               f"export holds it open): detach it first to snapshot it.")
                users = [a.instance_id for a in held]
                if self.guests_stopped is None or not self.guests_stopped(users):
                    raise InvalidVolume(reason=f"Volume {vol.id} is in use by a server that is not stopped: stop it "
                                               f"first (a snapshot of a volume a running guest has open is not "
                                               f"supported yet).")
            elif vol.status not in states.SNAPSHOT_SOURCES:
                raise InvalidVolume(reason=f"Volume {vol.id} status must be available, but current status is: "
                                           f"{vol.status}.")
            vtype = s.get(t.VolumeType, vol.volume_type_id)
            assert vtype is not None
            self.quotas.check(s, vol.project_id, {"snapshots": 1, "gigabytes": vol.size}, type_id=vtype.id,
                              type_name=vtype.name)
            now = utcnow()
            snap = t.Snapshot(id=new_uuid(), volume_id=vol.id, project_id=vol.project_id, user_id=ctx.user.id,
                              name=name, description=description, size=vol.size, status=states.CREATING,
                              progress="0%", meta=meta, created_at=now, updated_at=now)
            s.add(snap)
            s.flush()
            operations.queue(s, vol, VolumeSnapshotArgs(snapshot_id=snap.id), request_id)
            view, host = as_snapshot(snap), vol.host
        self._wake(host)
        return view

    def get_snapshot(self, ctx: AuthContext, snapshot_id: str) -> Snapshot:
        with self._db() as s:
            return as_snapshot(self._snap_row(s, ctx, snapshot_id))

    def list_snapshots(self, ctx: AuthContext, query: ListQuery) -> list[Snapshot]:
        project = policy.project_filter(ctx, query.project_id, all_projects=query.all_projects)
        with self._db() as s:
            q = _snapshot_filters(project, query)
            if query.marker is not None:
                marker = s.get(t.Snapshot, query.marker)
                if marker is None or (project is not None and marker.project_id != project):
                    raise NotFound(f"Marker {query.marker} could not be found.")
                q = _after(q, marker, SNAPSHOT_SORT_KEYS, query.sort, t.Snapshot.id)
            q = _sorted(q, SNAPSHOT_SORT_KEYS, query.sort, t.Snapshot.id)
            wanted = _metadata_filter(query.metadata)
            limit = min(query.limit if query.limit is not None else MAX_LIMIT, MAX_LIMIT)
            if wanted is None:
                rows = list(s.scalars(q.offset(query.offset).limit(limit)))
            else:
                rows = [r for r in s.scalars(q) if all((r.meta or {}).get(k) == v for k, v in wanted.items())]
                rows = rows[query.offset:query.offset + limit]
            return [as_snapshot(r) for r in rows]

    def count_snapshots(self, ctx: AuthContext, query: ListQuery) -> int:
        """How many snapshots the list's filters match, whatever the page (``with_count``, 3.45)."""
        project = policy.project_filter(ctx, query.project_id, all_projects=query.all_projects)
        with self._db() as s:
            q = _snapshot_filters(project, query)
            wanted = _metadata_filter(query.metadata)
            if wanted is None:
                return int(s.scalar(select(func.count()).select_from(q.subquery())) or 0)
            return sum(1 for r in s.scalars(q) if all((r.meta or {}).get(k) == v for k, v in wanted.items()))

    def update_snapshot(self, ctx: AuthContext, snapshot_id: str, *, name: str | None = None,
                        description: str | None = None, fields: frozenset[str] = frozenset()) -> Snapshot:
        policy.require_write(ctx, "volume:update_snapshot")
        with self._db.begin() as s:
            row = self._snap_row(s, ctx, snapshot_id)
            if "name" in fields:
                row.name = name
            if "description" in fields:
                row.description = description
            row.updated_at = utcnow()
            s.flush()
            return as_snapshot(row)

    def snapshot_metadata(self, ctx: AuthContext, snapshot_id: str) -> dict[str, str]:
        return self.get_snapshot(ctx, snapshot_id).metadata

    def set_snapshot_metadata(self, ctx: AuthContext, snapshot_id: str, meta: Mapping[str, object], *,
                              replace: bool) -> dict[str, str]:
        policy.require_write(ctx, "volume:update_snapshot_metadata")
        checked = check_metadata(meta)
        with self._db.begin() as s:
            row = self._snap_row(s, ctx, snapshot_id)
            row.meta = check_metadata(checked if replace else {**(row.meta or {}), **checked})
            row.updated_at = utcnow()
            return dict(row.meta)

    def delete_snapshot_metadata(self, ctx: AuthContext, snapshot_id: str, key: str) -> None:
        policy.require_write(ctx, "volume:delete_snapshot_metadata")
        with self._db.begin() as s:
            row = self._snap_row(s, ctx, snapshot_id)
            meta = dict(row.meta or {})
            if key not in meta:
                raise NotFound(f"Snapshot {snapshot_id} has no metadata with key {key}.")
            del meta[key]
            row.meta = meta
            row.updated_at = utcnow()

    def delete_snapshot(self, ctx: AuthContext, snapshot_id: str, request_id: str | None = None) -> None:
        policy.require_write(ctx, "volume:delete_snapshot")
        with self._db.begin() as s:
            snap = self._snap_row(s, ctx, snapshot_id)
            if snap.status not in states.SNAPSHOT_DELETABLE:
                raise InvalidSnapshot(reason=f"Snapshot status must be available or error, not {snap.status}.")
            vol = s.get(t.Volume, snap.volume_id)
            assert vol is not None  # a foreign key
            snap.status, snap.updated_at = states.DELETING, utcnow()
            operations.queue(s, vol, VolumeSnapshotDeleteArgs(snapshot_id=snap.id), request_id)
            host = vol.host
        self._wake(host)

    def reset_snapshot_status(self, ctx: AuthContext, snapshot_id: str, status: str) -> None:
        policy.require_admin(ctx, "volume_extension:snapshot_admin_actions:reset_status")
        if status not in states.SNAPSHOT_STATUSES:
            raise BadRequest(f"Invalid input received: '{status}' is not a snapshot status.")
        with self._db.begin() as s:
            row = self._snap_row(s, ctx, snapshot_id)
            row.status, row.status_reason, row.updated_at = status, None, utcnow()

    # -- quotas, limits, zones -----------------------------------------------------------------

    def _type_names(self, s: Session) -> list[tuple[str, str]]:
        return [(r.id, r.name) for r in s.scalars(select(t.VolumeType).order_by(t.VolumeType.name))]

    def _may_read_quota(self, ctx: AuthContext, project_id: str) -> None:
        if not ctx.is_admin and project_id != ctx.project_id:
            raise Forbidden(action="volume_extension:quotas:show")

    def quota_set(self, ctx: AuthContext, project_id: str) -> dict[str, int]:
        self._may_read_quota(ctx, project_id)
        with self._db() as s:
            return self.quotas.limits(s, project_id, [n for _, n in self._type_names(s)])

    def quota_usage(self, ctx: AuthContext, project_id: str) -> dict[str, QuotaUsage]:
        self._may_read_quota(ctx, project_id)
        with self._db() as s:
            types = self._type_names(s)
            limits = self.quotas.limits(s, project_id, [n for _, n in types])
            used = self.quotas.usage(s, project_id, types)
        return {r: QuotaUsage(limit=limit, in_use=used.get(r, 0)) for r, limit in limits.items()}

    def quota_defaults(self, ctx: AuthContext) -> dict[str, int]:
        with self._db() as s:
            names = [n for _, n in self._type_names(s)]
        out = dict(DEFAULTS)
        for name in names:
            out.update({f"{r}_{name}": -1 for r in PER_TYPE})
        return out

    def update_quotas(self, ctx: AuthContext, project_id: str, values: Mapping[str, int]) -> dict[str, int]:
        policy.require_admin(ctx, "volume_extension:quotas:update")
        with self._db.begin() as s:
            names = [n for _, n in self._type_names(s)]
            self.quotas.set_limits(s, project_id, values, names)
            s.flush()
            return self.quotas.limits(s, project_id, names)

    def reset_quotas(self, ctx: AuthContext, project_id: str) -> None:
        policy.require_admin(ctx, "volume_extension:quotas:delete")
        with self._db.begin() as s:
            self.quotas.reset(s, project_id)

    def limits(self, ctx: AuthContext, *, project_id: str | None = None) -> dict[str, int]:
        """Cinder's absolute limits of the caller's project, or of ``project_id`` for an admin (a user's
        is ignored, as Cinder ignores it)."""
        project = project_id if ctx.is_admin and project_id else policy.require_scoped(ctx, "limits")
        with self._db() as s:
            limits = self.quotas.engine.limits(s, project)
            used = self.quotas.engine.usage(s, project)
        return {"maxTotalVolumes": limits["volumes"], "maxTotalSnapshots": limits["snapshots"],
                "maxTotalVolumeGigabytes": limits["gigabytes"], "maxTotalBackups": limits["backups"],
                "maxTotalBackupGigabytes": limits["backup_gigabytes"], "totalVolumesUsed": used["volumes"],
                "totalGigabytesUsed": used["gigabytes"], "totalSnapshotsUsed": used["snapshots"],
                "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0}

    def availability_zones(self, ctx: AuthContext) -> list[str]:
        return [self.zone]

    # -- the storage host's reports ------------------------------------------------------------

    def owned_by(self, host: str, volume_id: str) -> bool:
        """Whether ``host`` keeps the volume (the agent API lets a host report only on its own)."""
        with self._db() as s:
            row = s.get(t.Volume, volume_id)
            return row is not None and row.host == host

    def uploads_into(self, host: str, volume_id: str, image_id: str) -> bool:
        """Whether ``host`` runs the upload of volume ``volume_id`` into image ``image_id`` right now."""
        with self._db() as s:
            return any(task.resource_id == volume_id and task.step == "volume_upload"
                       and (task.args or {}).get("image_id") == image_id and task.state == TaskState.RUNNING
                       for task in operations.hosts_with_step(s, host))

    def project_of(self, volume_id: str) -> str | None:
        with self._db() as s:
            row = s.get(t.Volume, volume_id)
            return None if row is None else row.project_id

    def image_of_step(self, host: str, image_id: str) -> bool:
        """Whether a volume step queued or running on ``host`` reads image ``image_id``."""
        with self._db() as s:
            return any((task.args or {}).get("image_id") == image_id
                       for task in operations.hosts_with_step(s, host))

    def finish(self, outcome: Outcome, *, swept: bool = False) -> None:
        """Apply a storage host's report; the step's task ends in the same transaction.

        A report of a step that run no longer holds (its lease ran out and it was queued again)
        changes nothing.  ``swept``: the lease sweep already failed the task; its failure is applied.
        """
        now = utcnow()
        with self._db.begin() as s:
            row = s.get(t.Volume, outcome.instance_id)
            if row is None:
                return
            if swept:
                task = s.scalar(select(tt.Task).where(tt.Task.id == outcome.task_id))
            else:
                task = operations.running(s, row.id, outcome.task_id)
                if task is None or task.attempt != outcome.attempt or task.step != outcome.op:
                    log.warning("ignored a report of %s of volume %s (task %s, attempt %d): that run no longer "
                                "holds the step", outcome.op, row.id, outcome.task_id or "?", outcome.attempt)
                    return
                if outcome.error is None:
                    self.tasks.complete(task.id, attempt=task.attempt, s=s)
                else:
                    self.tasks.fail(task.id, outcome.error[:1000], attempt=task.attempt, s=s)
            apply = operations.APPLY.get(outcome.op)
            if task is None or apply is None:
                log.error("a host reported an unknown volume step %s for %s", outcome.op, row.id)
                return
            args = REGISTRY.kind(task.kind).step(outcome.op).args.model_validate(task.args)
            applied = apply(s, row, outcome, args, now)
            project = row.project_id
        if applied.abandoned_image is not None:
            # After our commit (the image service writes in its own transaction): no queued image is
            # left behind by an upload that failed.
            with contextlib.suppress(YunError):
                self._images.delete(system_context(project), applied.abandoned_image)
        if applied.booting is not None and self.boot_volume_done is not None:
            self.boot_volume_done(applied.booting, outcome.instance_id, outcome.error)
        if applied.doomed:
            self.delete_with_server((outcome.instance_id,))
        if applied.exported is not None and self.volume_exported is not None:
            self.volume_exported(applied.exported, outcome.instance_id, outcome.request_id)
        if applied.export_failed is not None and self.volume_export_failed is not None:
            self.volume_export_failed(applied.export_failed, outcome.instance_id, outcome.error or "")

    def delete_with_server(self, volume_ids: Sequence[str]) -> None:
        """Delete the volumes a deleted server took with it (``delete_on_termination``); one that cannot
        go now (another server attached it meanwhile) stays, with the reason logged."""
        for volume_id in volume_ids:
            project = self.project_of(volume_id)
            if project is None:
                continue
            try:
                self.delete(system_context(project), volume_id)
            except YunError as exc:
                log.warning("volume %s stays after its server's delete: %s", volume_id, exc.text)

    # -- upload to an image --------------------------------------------------------------------

    def upload_to_image(self, ctx: AuthContext, volume_id: str, *, image_name: str, disk_format: str = "raw",
                        container_format: str = "bare", visibility: str = "private", protected: bool = False,
                        force: bool = False, request_id: str | None = None) -> Upload:
        """Cinder's os-volume_upload_image: a new image (queued at once) that the storage host fills
        with the volume's bytes; the volume shows ``uploading`` meanwhile."""
        policy.require_write(ctx, "volume_extension:volume_actions:upload_image")
        if disk_format not in UPLOAD_FORMATS:
            raise BadRequest(f"Invalid input received: disk_format {disk_format!r}: an upload writes "
                             f"{' or '.join(sorted(UPLOAD_FORMATS))}.")
        with self._db() as s:
            row = self._row(s, ctx, volume_id)
            self._check_uploadable(row, force)
        image = self._images.create(ctx, name=image_name, disk_format=disk_format, container_format=container_format,
                                    visibility=visibility, protected=protected,
                                    properties={"volume_id": volume_id, "image_type": "volume"})
        try:
            with self._db.begin() as s:
                row = self._row(s, ctx, volume_id)
                self._check_uploadable(row, force)  # again, now under our write: it may have changed
                row.status, row.status_reason, row.updated_at = states.UPLOADING, None, utcnow()
                operations.queue(s, row, VolumeUploadArgs(image_id=image.id, disk_format=disk_format),
                                 request_id)
                view, host = self._view(s, row), row.host
        except YunError:
            with contextlib.suppress(YunError):
                self._images.delete(system_context(ctx.project_id or ""), image.id)
            raise
        self._wake(host)
        return Upload(volume=view, image_id=image.id, image_name=image_name, disk_format=disk_format,
                      container_format=container_format, visibility=visibility, protected=protected)

    @staticmethod
    def _check_uploadable(row: t.Volume, force: bool) -> None:
        if row.status == states.AVAILABLE or (row.status == states.IN_USE and force):
            return
        raise InvalidVolume(reason=f"Volume status must be available (or in-use with force) to upload it to an "
                                   f"image, but it is {row.status}.")

