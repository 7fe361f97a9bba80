"""Cinder v3's bodies at the requested microversion, exactly (Tempest's response schemas hold every key we send)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from yunstack.api.volume import microversion as mv
from yunstack.api.volume.microversion import MAX, MIN
from yunstack.identity.context import AuthContext
from yunstack.volume.models import QuotaUsage, Snapshot, Volume, VolumeType
from yunstack.volume.service import Upload


def when(value: datetime | None) -> str | None:
    """Cinder's time format: naive UTC with microseconds."""
    return None if value is None else value.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _links(base: str, kind: str, resource_id: str, project_id: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"{base}/volume/v3/{project_id}/{kind}/{resource_id}"},
            {"rel": "bookmark", "href": f"{base}/volume/{project_id}/{kind}/{resource_id}"}]


def volume_summary(v: Volume, base: str) -> dict[str, Any]:
    return {"id": v.id, "name": v.name, "links": _links(base, "volumes", v.id, v.project_id)}


def volume(v: Volume, base: str, ctx: AuthContext, *, extended: bool = True,
           version: tuple[int, int] = MIN) -> dict[str, Any]:
    """A volume; ``extended``: with the attributes Cinder's extensions add to show and list (not to
    the bodies a create or an update returns)."""
    body: dict[str, Any] = {
        "id": v.id, "name": v.name, "description": v.description, "status": v.status, "size": v.size,
        "availability_zone": v.availability_zone, "created_at": when(v.created_at), "updated_at": when(v.updated_at),
        "volume_type": v.volume_type.name, "snapshot_id": v.snapshot_id, "source_volid": v.source_volid,
        # Cinder shows the read-only flag, once set, among the metadata ("True"/"False").
        "metadata": dict(v.metadata) if v.read_only is None else {**v.metadata, "readonly": str(v.read_only)},
        "links": _links(base, "volumes", v.id, v.project_id), "user_id": v.user_id,
        "bootable": "true" if v.bootable else "false", "encrypted": False, "replication_status": None,
        "consistencygroup_id": None, "multiattach": v.multiattach, "migration_status": None,
        "attachments": [{"id": a.volume_id, "attachment_id": a.id, "volume_id": a.volume_id, "server_id": a.server_id,
                         "host_name": a.host_name, "device": a.device, "attached_at": when(a.attached_at)}
                        for a in v.attachments],
    }
    if version >= mv.GROUP_VOLUME:  # no groups here: never in one
        body["group_id"] = None
    if version >= mv.VOLUME_DETAIL_PROVIDER_ID and ctx.is_admin:  # no backend here has a provider id
        body["provider_id"] = None
    if version >= mv.SHARED_TARGETS_AND_SERVICE_FIELDS:
        # Each volume is its own file or RBD image, never a target shared with others (os-brick takes
        # no lock), served by the volume service of its storage host and backend.
        body["shared_targets"] = False
        body["service_uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"yunstack:cinder-volume:{v.host}@{v.backend}"))
    if not extended:
        return body
    body["os-vol-tenant-attr:tenant_id"] = v.project_id
    if v.image_metadata:
        body["volume_image_metadata"] = dict(v.image_metadata)
    if ctx.is_admin:  # Cinder's volume_extension:volume_host_attribute and mig_status_attribute: admin only
        body["os-vol-host-attr:host"] = f"{v.host}@{v.backend}#{v.backend}"
        body["os-vol-mig-status-attr:migstat"] = None
        body["os-vol-mig-status-attr:name_id"] = None
    return body


def next_page(items: Sequence[Any], limit: int | None, count: int | None) -> bool:
    """Whether a page gets a next link: Cinder's rule, a full page, or (3.45) a limit within the count."""
    return bool(items) and limit is not None and limit <= (count or len(items))


def volume_list(items: Sequence[Volume], base: str, ctx: AuthContext, *, detail: bool, limit: int | None,
                next_url: str | None, version: tuple[int, int] = MIN, count: int | None = None) -> dict[str, Any]:
    """A page of volumes; ``count`` (3.45's ``with_count``): how many match, whatever the page."""
    key = "volumes"
    body: dict[str, Any] = {key: [volume(v, base, ctx, version=version) if detail else volume_summary(v, base)
                                  for v in items]}
    if next_url is not None and next_page(items, limit, count):
        body[f"{key}_links"] = [{"rel": "next", "href": next_url}]
    if count is not None:
        body["count"] = count
    return body


def snapshot(s: Snapshot, *, detail: bool, version: tuple[int, int] = MIN, summary: bool = False) -> dict[str, Any]:
    """A snapshot; ``detail``: with the extended attributes (show, list detail); ``summary``: an
    item of the plain list, which Cinder never gives the 3.14 key."""
    body: dict[str, Any] = {
        "id": s.id, "name": s.name, "description": s.description, "status": s.status, "size": s.size,
        "volume_id": s.volume_id, "metadata": dict(s.metadata), "created_at": when(s.created_at),
        "updated_at": when(s.updated_at),
    }
    if version >= mv.GROUP_SNAPSHOTS and not summary:  # no group snapshots here
        body["group_snapshot_id"] = None
    if version >= mv.SNAPSHOT_LIST_USER_ID and not summary:
        body["user_id"] = s.user_id
    if detail:
        body["os-extended-snapshot-attributes:progress"] = s.progress
        body["os-extended-snapshot-attributes:project_id"] = s.project_id
    return body


def volume_type(vt: VolumeType) -> dict[str, Any]:
    return {"id": vt.id, "name": vt.name, "description": vt.description, "is_public": vt.is_public,
            "os-volume-type-access:is_public": vt.is_public, "extra_specs": dict(vt.extra_specs),
            "qos_specs_id": None}


def quota_set(project_id: str | None, limits: Mapping[str, int]) -> dict[str, Any]:
    body: dict[str, Any] = dict(limits)
    if project_id is not None:
        body["id"] = project_id
    return {"quota_set": body}


def quota_usage(project_id: str, usage: Mapping[str, QuotaUsage]) -> dict[str, Any]:
    body: dict[str, Any] = {r: {"limit": u.limit, "in_use": u.in_use, "reserved": u.reserved,
                                "allocated": u.allocated} for r, u in usage.items()}
    body["id"] = project_id
    return {"quota_set": body}


def volume_summary_totals(count: int, size: int, metadata: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """``GET /volumes/summary`` (3.12); ``metadata`` from 3.36."""
    body: dict[str, Any] = {"total_count": count, "total_size": size}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    return {"volume-summary": body}


def version(base: str) -> dict[str, Any]:
    return {"id": "v3.0", "status": "CURRENT", "version": f"{MAX[0]}.{MAX[1]}", "min_version": f"{MIN[0]}.{MIN[1]}",
            "updated": "2016-02-08T12:20:21Z",
            "links": [{"rel": "self", "href": f"{base}/volume/v3/"},
                      {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.volume+json;version=3"}]}


def upload(u: Upload) -> dict[str, Any]:
    """Cinder's answer to os-volume_upload_image."""
    v = u.volume
    return {"id": v.id, "updated_at": when(v.updated_at), "status": v.status, "display_description": v.description,
            "size": v.size, "volume_type": volume_type(v.volume_type), "image_id": u.image_id,
            "container_format": u.container_format, "disk_format": u.disk_format, "image_name": u.image_name,
            "visibility": u.visibility, "protected": u.protected}
