"""Cinder v3: snapshots, volume types, availability zones, limits, quotas and extensions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request, Response

from yunstack.api.deps import Ctx, Svc
from yunstack.api.middleware import request_id
from yunstack.api.volume import filters, views
from yunstack.api.volume import microversion as mv
from yunstack.api.volume.microversion import at_least, next_href, version_of
from yunstack.api.volume.query import list_query
from yunstack.api.volume.schemas import action_of, args_of, bool_of, metadata_of, object_of, optional_text
from yunstack.errors import BadRequest, NotFound
from yunstack.volume.service import VolumeNotFound

router = APIRouter(prefix="/volume/v3", tags=["volume"])


# -- snapshots ----------------------------------------------------------------------------------

@router.post("/snapshots", status_code=202)
def create_snapshot(svc: Svc, ctx: Ctx, request: Request, body: Any = Body(None)) -> dict[str, Any]:
    s = object_of(body, "snapshot")
    volume_id = s.get("volume_id")
    if not isinstance(volume_id, str) or not volume_id:
        raise VolumeNotFound(id=volume_id)  # Cinder looks the volume up first: no id finds none
    snap = svc.volume.create_snapshot(
        ctx, volume_id, name=optional_text(s.get("name", s.get("display_name")), "name"),
        description=optional_text(s.get("description", s.get("display_description")), "description"),
        metadata=metadata_of(s["metadata"]) if s.get("metadata") is not None else None,
        force=bool_of(s.get("force", False), "force"), request_id=request_id.get())
    return {"snapshot": views.snapshot(snap, detail=False, version=version_of(request))}


def _snapshots(svc: Svc, ctx: Ctx, request: Request, *, detail: bool) -> dict[str, Any]:
    version = version_of(request)
    query = list_query(request.query_params, snapshots=True, version=version)
    served = filters.served(request.query_params, "snapshot", ctx, version)
    items = svc.volume.list_snapshots(ctx, query) if served else []
    count = None
    if filters.with_count(request.query_params, version):  # 3.45
        count = svc.volume.count_snapshots(ctx, query) if served else 0
    body: dict[str, Any] = {"snapshots": [views.snapshot(s, detail=detail, version=version, summary=not detail)
                                          for s in items]}
    if views.next_page(items, query.limit, count):
        body["snapshots_links"] = [{"rel": "next", "href": next_href(request, svc.config.server.base_url,
                                                                     items[-1].id)}]
    if count is not None:
        body["count"] = count
    return body


@router.get("/snapshots")
def list_snapshots(svc: Svc, ctx: Ctx, request: Request) -> dict[str, Any]:
    return _snapshots(svc, ctx, request, detail=False)


@router.get("/snapshots/detail")
def list_snapshots_detail(svc: Svc, ctx: Ctx, request: Request) -> dict[str, Any]:
    return _snapshots(svc, ctx, request, detail=True)


@router.get("/snapshots/{snapshot_id}")
def show_snapshot(svc: Svc, ctx: Ctx, snapshot_id: str, request: Request) -> dict[str, Any]:
    return {"snapshot": views.snapshot(svc.volume.get_snapshot(ctx, snapshot_id), detail=True,
                                       version=version_of(request))}


@router.put("/snapshots/{snapshot_id}")
def update_snapshot(svc: Svc, ctx: Ctx, snapshot_id: str, request: Request, body: Any = Body(None)) -> dict[str, Any]:
    s = object_of(body, "snapshot")
    unknown = set(s) - {"name", "description", "display_name", "display_description"}
    if unknown or not s:
        raise BadRequest(f"Invalid input received: a snapshot update takes name and description, not "
                         f"{sorted(unknown)}.")
    fields = frozenset(k for k, alias in (("name", "display_name"), ("description", "display_description"))
                       if k in s or alias in s)
    snap = svc.volume.update_snapshot(
        ctx, snapshot_id, name=optional_text(s.get("name", s.get("display_name")), "name"),
        description=optional_text(s.get("description", s.get("display_description")), "description"),
        fields=fields)
    return {"snapshot": views.snapshot(snap, detail=False, version=version_of(request))}


@router.delete("/snapshots/{snapshot_id}", status_code=202)
def delete_snapshot(svc: Svc, ctx: Ctx, snapshot_id: str) -> Response:
    svc.volume.delete_snapshot(ctx, snapshot_id, request_id.get())
    return Response(status_code=202)


@router.post("/snapshots/{snapshot_id}/action")
def snapshot_action(svc: Svc, ctx: Ctx, snapshot_id: str, body: Any = Body(None)) -> Response:
    name, args = action_of(body)
    if name == "os-reset_status":
        status = args_of(args, name).get("status")
        if not isinstance(status, str):
            raise BadRequest("Invalid input received: os-reset_status needs a status.")
        svc.volume.reset_snapshot_status(ctx, snapshot_id, status)
        return Response(status_code=202)
    raise BadRequest(f"There is no such action: {name}")


@router.get("/snapshots/{snapshot_id}/metadata")
def snapshot_metadata(svc: Svc, ctx: Ctx, snapshot_id: str) -> dict[str, Any]:
    return {"metadata": svc.volume.snapshot_metadata(ctx, snapshot_id)}


@router.post("/snapshots/{snapshot_id}/metadata")
def merge_snapshot_metadata(svc: Svc, ctx: Ctx, snapshot_id: str, body: Any = Body(None)) -> dict[str, Any]:
    meta = metadata_of(object_of(body, "metadata"))
    return {"metadata": svc.volume.set_snapshot_metadata(ctx, snapshot_id, meta, replace=False)}


@router.put("/snapshots/{snapshot_id}/metadata")
def replace_snapshot_metadata(svc: Svc, ctx: Ctx, snapshot_id: str, body: Any = Body(None)) -> dict[str, Any]:
    meta = metadata_of(object_of(body, "metadata"))
    return {"metadata": svc.volume.set_snapshot_metadata(ctx, snapshot_id, meta, replace=True)}


@router.get("/snapshots/{snapshot_id}/metadata/{key}")
def show_snapshot_metadata_item(svc: Svc, ctx: Ctx, snapshot_id: str, key: str) -> dict[str, Any]:
    meta = svc.volume.snapshot_metadata(ctx, snapshot_id)
    if key not in meta:
        raise NotFound(f"Snapshot {snapshot_id} has no metadata with key {key}.")
    return {"meta": {key: meta[key]}}


@router.put("/snapshots/{snapshot_id}/metadata/{key}")
def set_snapshot_metadata_item(svc: Svc, ctx: Ctx, snapshot_id: str, key: str,
                               body: Any = Body(None)) -> dict[str, Any]:
    meta = metadata_of(object_of(body, "meta"))
    if list(meta) != [key]:
        raise BadRequest("Request body and URI mismatch: the body must hold exactly the key of the URI.")
    svc.volume.set_snapshot_metadata(ctx, snapshot_id, meta, replace=False)
    return {"meta": meta}


@router.delete("/snapshots/{snapshot_id}/metadata/{key}")
def delete_snapshot_metadata_item(svc: Svc, ctx: Ctx, snapshot_id: str, key: str) -> Response:
    svc.volume.delete_snapshot_metadata(ctx, snapshot_id, key)
    return Response(status_code=200)


# -- volume types -------------------------------------------------------------------------------

@router.get("/types")
def list_types(svc: Svc, ctx: Ctx, request: Request) -> dict[str, Any]:
    raw = request.query_params.get("is_public")
    is_public = None if raw is None or raw.lower() == "none" else bool_of(raw, "is_public")
    return {"volume_types": [views.volume_type(vt) for vt in svc.volume.types.list_types(ctx, is_public=is_public)]}


@router.post("/types")
def create_type(svc: Svc, ctx: Ctx, body: Any = Body(None)) -> dict[str, Any]:
    b = object_of(body, "volume_type")
    name = b.get("name")
    if not isinstance(name, str):
        raise BadRequest("Invalid input received: a volume type needs a name.")
    specs = b.get("extra_specs") or {}
    if not isinstance(specs, dict):
        raise BadRequest("Invalid input received: extra_specs must be an object of strings.")
    is_public = bool_of(b.get("os-volume-type-access:is_public", b.get("is_public", True)), "is_public")
    vt = svc.volume.types.create(ctx, name, description=optional_text(b.get("description"), "description"),
                                 is_public=is_public, extra_specs=specs)
    return {"volume_type": views.volume_type(vt)}


@router.get("/types/{type_id}")
def show_type(svc: Svc, ctx: Ctx, type_id: str) -> dict[str, Any]:
    return {"volume_type": views.volume_type(svc.volume.types.get(ctx, type_id))}


@router.put("/types/{type_id}")
def update_type(svc: Svc, ctx: Ctx, type_id: str, body: Any = Body(None)) -> dict[str, Any]:
    b = object_of(body, "volume_type")
    if not {"name", "description", "is_public"} & set(b):
        raise BadRequest("Invalid input received: give a name, a description or is_public to change.")
    vt = svc.volume.types.update(
        ctx, type_id, name=optional_text(b.get("name"), "name"),
        description=optional_text(b.get("description"), "description"),
        is_public=None if b.get("is_public") is None else bool_of(b["is_public"], "is_public"))
    return {"volume_type": views.volume_type(vt)}


@router.delete("/types/{type_id}", status_code=202)
def delete_type(svc: Svc, ctx: Ctx, type_id: str) -> Response:
    svc.volume.types.delete(ctx, type_id)
    return Response(status_code=202)


@router.get("/types/{type_id}/extra_specs")
def list_specs(svc: Svc, ctx: Ctx, type_id: str) -> dict[str, Any]:
    return {"extra_specs": svc.volume.types.specs(ctx, type_id)}


@router.post("/types/{type_id}/extra_specs")
def add_specs(svc: Svc, ctx: Ctx, type_id: str, body: Any = Body(None)) -> dict[str, Any]:
    return {"extra_specs": svc.volume.types.set_specs(ctx, type_id, object_of(body, "extra_specs"))}


@router.get("/types/{type_id}/extra_specs/{key}")
def show_spec(svc: Svc, ctx: Ctx, type_id: str, key: str) -> dict[str, Any]:
    specs = svc.volume.types.specs(ctx, type_id)
    if key not in specs:
        raise NotFound(f"Volume Type {type_id} has no extra specs with key {key}.")
    return {key: specs[key]}


@router.put("/types/{type_id}/extra_specs/{key}")
def set_spec(svc: Svc, ctx: Ctx, type_id: str, key: str, body: Any = Body(None)) -> dict[str, Any]:
    if not isinstance(body, dict) or list(body) != [key]:
        raise BadRequest("Request body and URI mismatch: the body must hold exactly the key of the URI.")
    return svc.volume.types.set_specs(ctx, type_id, body)


@router.delete("/types/{type_id}/extra_specs/{key}", status_code=202)
def delete_spec(svc: Svc, ctx: Ctx, type_id: str, key: str) -> Response:
    svc.volume.types.delete_spec(ctx, type_id, key)
    return Response(status_code=202)


# -- zones, limits, quotas, extensions ----------------------------------------------------------

@router.get("/os-availability-zone")
def availability_zones(svc: Svc, ctx: Ctx) -> dict[str, Any]:
    return {"availabilityZoneInfo": [{"zoneName": z, "zoneState": {"available": True}}
                                     for z in svc.volume.availability_zones(ctx)]}


@router.get("/limits")
def limits(svc: Svc, ctx: Ctx, request: Request) -> dict[str, Any]:
    # 3.39: an admin may name the project (project_id, or the older tenant_id); ignored otherwise.
    p = request.query_params
    project = p.get("project_id", p.get("tenant_id")) if at_least(request, mv.LIMITS_ADMIN_FILTER) else None
    return {"limits": {"rate": [], "absolute": svc.volume.limits(ctx, project_id=project)}}


@router.get("/resource_filters")
def resource_filters(request: Request) -> dict[str, Any]:
    if not at_least(request, mv.RESOURCE_FILTER_CONFIG):  # 3.33
        raise NotFound("The resource could not be found.")
    return {"resource_filters": filters.listing(request.query_params.get("resource"))}


@router.get("/os-quota-sets/{project_id}")
def show_quotas(svc: Svc, ctx: Ctx, project_id: str, request: Request) -> dict[str, Any]:
    if bool_of(request.query_params.get("usage", "false"), "usage"):
        return views.quota_usage(project_id, svc.volume.quota_usage(ctx, project_id))
    return views.quota_set(project_id, svc.volume.quota_set(ctx, project_id))


@router.get("/os-quota-sets/{project_id}/defaults")
def default_quotas(svc: Svc, ctx: Ctx, project_id: str) -> dict[str, Any]:
    return views.quota_set(project_id, svc.volume.quota_defaults(ctx))


@router.put("/os-quota-sets/{project_id}")
def update_quotas(svc: Svc, ctx: Ctx, project_id: str, body: Any = Body(None)) -> dict[str, Any]:
    values = object_of(body, "quota_set")
    checked: dict[str, int] = {}
    for key, value in values.items():
        if key in ("id", "tenant_id"):
            continue
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).lstrip("-").isdigit():
            raise BadRequest(f"Invalid input received: the quota of {key} must be an integer, not {value!r}.")
        checked[key] = int(value)
    return views.quota_set(None, svc.volume.update_quotas(ctx, project_id, checked))


@router.delete("/os-quota-sets/{project_id}")
def reset_quotas(svc: Svc, ctx: Ctx, project_id: str) -> Response:
    svc.volume.reset_quotas(ctx, project_id)
    return Response(status_code=200)


EXTENSIONS = (
    ("os-availability-zone", "AvailabilityZones", "Describe Availability Zones."),
    ("os-extended-snapshot-attributes", "ExtendedSnapshotAttributes", "Extended SnapshotAttributes support."),
    ("os-quota-sets", "Quotas", "Quota management support."),
    ("os-types-extra-specs", "TypesExtraSpecs", "Type extra specs support."),
    ("os-types-manage", "TypesManage", "Types manage support."),
    ("os-vol-host-attr", "VolumeHostAttribute", "Expose host as an attribute of a volume."),
    ("os-vol-mig-status-attr", "VolumeMigStatusAttribute", "Expose migration_status as an attribute of a volume."),
    ("os-vol-tenant-attr", "VolumeTenantAttribute", "Expose the internal project_id as an attribute of a volume."),
    ("os-vol-image-meta", "VolumeImageMetadata", "Show image metadata associated with the volume."),
    ("os-volume-actions", "VolumeActions", "Enable volume actions."),
    ("os-admin-actions", "AdminActions", "Enable admin actions."),
)


@router.get("/extensions")
def extensions(svc: Svc, ctx: Ctx) -> dict[str, Any]:
    return {"extensions": [{"alias": alias, "name": name, "description": text, "links": [],
                            "namespace": f"https://docs.openstack.org/volume/ext/{alias}/api/v1",
                            "updated": "2013-01-01T00:00:00+00:00"} for alias, name, text in EXTENSIONS]}
