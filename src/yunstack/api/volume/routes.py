"""Cinder v3: the version documents, volumes, their metadata and their actions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse

from yunstack.api.deps import Ctx, Svc
from yunstack.api.middleware import request_id
from yunstack.api.volume import filters, views
from yunstack.api.volume import microversion as mv
from yunstack.api.volume.microversion import at_least, next_href, version_of
from yunstack.api.volume.query import list_query
from yunstack.api.volume.schemas import (
    action_of,
    args_of,
    bool_of,
    metadata_of,
    object_of,
    optional_text,
    size_of,
    volume_create_of,
)
from yunstack.errors import BadRequest, Forbidden, NotFound
from yunstack.volume.service import VolumeNotFound

router = APIRouter(prefix="/volume", tags=["volume"])
V3 = "/v3"


@router.get("")
@router.get("/", include_in_schema=False)
def versions(svc: Svc) -> JSONResponse:
    # Cinder answers the unversioned root with 300 Multiple Choices (Tempest asserts it).
    return JSONResponse({"versions": [views.version(svc.config.server.base_url)]}, status_code=300)


@router.get(V3)
@router.get(V3 + "/", include_in_schema=False)
def version(svc: Svc) -> dict[str, Any]:
    return {"versions": [views.version(svc.config.server.base_url)]}


# -- volumes ------------------------------------------------------------------------------------

@router.post(V3 + "/volumes", status_code=202)
def create_volume(svc: Svc, ctx: Ctx, request: Request, body: Any = Body(None)) -> dict[str, Any]:
    req = volume_create_of(body, version_of(request))
    v = svc.volume.create(ctx, req, request_id.get())
    return {"volume": views.volume(v, svc.config.server.base_url, ctx, extended=False, version=version_of(request))}


def _list(svc: Svc, ctx: Ctx, request: Request, *, detail: bool) -> dict[str, Any]:
    query = list_query(request.query_params, snapshots=False, version=version_of(request))
    served = filters.served(request.query_params, "volume", ctx, version_of(request))
    items = svc.volume.list_volumes(ctx, query) if served else []
    count = None
    if filters.with_count(request.query_params, version_of(request)):  # 3.45
        count = svc.volume.count_volumes(ctx, query) if served else 0
    base = svc.config.server.base_url
    next_url = None
    if items and query.limit is not None:
        next_url = next_href(request, base, items[-1].id)
    return views.volume_list(items, base, ctx, detail=detail, limit=query.limit, next_url=next_url,
                             version=version_of(request), count=count)


@router.get(V3 + "/volumes")
def list_volumes(svc: Svc, ctx: Ctx, request: Request) -> dict[str, Any]:
    return _list(svc, ctx, request, detail=False)


@router.get(V3 + "/volumes/detail")
def list_volumes_detail(svc: Svc, ctx: Ctx, request: Request) -> dict[str, Any]:
    return _list(svc, ctx, request, detail=True)


@router.get(V3 + "/volumes/summary")
def volume_summary(svc: Svc, ctx: Ctx, request: Request) -> dict[str, Any]:
    if not at_least(request, mv.VOLUME_SUMMARY):  # before 3.12 "summary" is a volume id
        raise VolumeNotFound(id="summary")
    count, size, metadata = svc.volume.summary(
        ctx, all_projects=bool_of(request.query_params.get("all_tenants", "false"), "all_tenants"))
    # 3.36: every key of the volumes' metadata with its distinct values.
    return views.volume_summary_totals(count, size, metadata if at_least(request, mv.VOLUME_SUMMARY_METADATA)
                                       else None)


@router.get(V3 + "/volumes/", include_in_schema=False)
@router.put(V3 + "/volumes/", include_in_schema=False)
@router.delete(V3 + "/volumes/", include_in_schema=False)
def no_volume_id() -> None:
    # An empty id names no volume (Cinder: 404), rather than being redirected to the list.
    raise VolumeNotFound(id="")


@router.get(V3 + "/volumes/{volume_id}")
def show_volume(svc: Svc, ctx: Ctx, volume_id: str, request: Request) -> dict[str, Any]:
    return {"volume": views.volume(svc.volume.get(ctx, volume_id), svc.config.server.base_url, ctx,
                                   version=version_of(request))}


@router.put(V3 + "/volumes/{volume_id}")
def update_volume(svc: Svc, ctx: Ctx, volume_id: str, request: Request, body: Any = Body(None)) -> dict[str, Any]:
    fields = object_of(body, "volume")
    allowed = {"name", "description", "metadata", "display_name", "display_description"}
    unknown = set(fields) - allowed
    if unknown or not fields:
        raise BadRequest(f"Invalid input for field/attribute volume: unexpected or missing keys "
                         f"{sorted(unknown) or ['name', 'description', 'metadata']}.")
    named = {"name": fields.get("name", fields.get("display_name")),
             "description": fields.get("description", fields.get("display_description"))}
    given = frozenset(k for k, alias in (("name", "display_name"), ("description", "display_description"))
                      if k in fields or alias in fields)
    meta = metadata_of(fields["metadata"]) if "metadata" in fields else None
    v = svc.volume.update(ctx, volume_id, name=optional_text(named["name"], "name"),
                          description=optional_text(named["description"], "description"), metadata=meta,
                          fields=given)
    return {"volume": views.volume(v, svc.config.server.base_url, ctx, extended=False, version=version_of(request))}


@router.delete(V3 + "/volumes/{volume_id}", status_code=202)
def delete_volume(svc: Svc, ctx: Ctx, volume_id: str, request: Request) -> Response:
    params = request.query_params
    # Cinder reads ?force only from 3.23.
    force = at_least(request, mv.VOLUME_DELETE_FORCE) and bool_of(params.get("force", "false"), "force")
    svc.volume.delete(ctx, volume_id, cascade=bool_of(params.get("cascade", "false"), "cascade"), force=force,
                      request_id=request_id.get())
    return Response(status_code=202)


# -- metadata -----------------------------------------------------------------------------------

def _etag(metadata: dict[str, str]) -> tuple[bytes, str]:
    """Cinder's 3.15 ETag: the MD5 of the body ``{"metadata": ...}`` as ``jsonutils.dumps`` writes it."""
    data = json.dumps({"metadata": metadata}).encode()
    return data, hashlib.md5(data, usedforsecurity=False).hexdigest()


def _if_match_fails(svc: Svc, ctx: Ctx, volume_id: str, request: Request) -> bool:
    """From 3.15 a metadata write with ``If-Match`` not naming the current ETag is refused (412)."""
    raw = request.headers.get("if-match")
    if not at_least(request, mv.ETAGS) or raw is None or raw.strip() == "*":
        return False
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in raw.split(",")}
    return _etag(svc.volume.metadata(ctx, volume_id))[1] not in tags


@router.get(V3 + "/volumes/{volume_id}/metadata", response_model=None)
def show_metadata(svc: Svc, ctx: Ctx, volume_id: str, request: Request) -> dict[str, Any] | Response:
    meta = svc.volume.metadata(ctx, volume_id)
    if not at_least(request, mv.ETAGS):
        return {"metadata": meta}
    data, tag = _etag(meta)
    return Response(data, media_type="application/json", headers={"ETag": tag})


@router.post(V3 + "/volumes/{volume_id}/metadata")
def merge_metadata(svc: Svc, ctx: Ctx, volume_id: str, body: Any = Body(None)) -> dict[str, Any]:
    meta = metadata_of(object_of(body, "metadata"))
    return {"metadata": svc.volume.set_metadata(ctx, volume_id, meta, replace=False)}


@router.put(V3 + "/volumes/{volume_id}/metadata", response_model=None)
def replace_metadata(svc: Svc, ctx: Ctx, volume_id: str, request: Request,
                     body: Any = Body(None)) -> dict[str, Any] | Response:
    if _if_match_fails(svc, ctx, volume_id, request):
        return Response(status_code=412)
    meta = metadata_of(object_of(body, "metadata"))
    return {"metadata": svc.volume.set_metadata(ctx, volume_id, meta, replace=True)}


@router.get(V3 + "/volumes/{volume_id}/metadata/{key}")
def show_metadata_item(svc: Svc, ctx: Ctx, volume_id: str, key: str) -> dict[str, Any]:
    meta = svc.volume.metadata(ctx, volume_id)
    if key not in meta:
        raise NotFound(f"Volume {volume_id} has no metadata with key {key}.")
    return {"meta": {key: meta[key]}}


@router.put(V3 + "/volumes/{volume_id}/metadata/{key}", response_model=None)
def set_metadata_item(svc: Svc, ctx: Ctx, volume_id: str, key: str, request: Request,
                      body: Any = Body(None)) -> dict[str, Any] | Response:
    if _if_match_fails(svc, ctx, volume_id, request):
        return Response(status_code=412)
    meta = metadata_of(object_of(body, "meta"))
    if list(meta) != [key]:
        raise BadRequest("Request body and URI mismatch: the body must hold exactly the key of the URI.")
    svc.volume.set_metadata(ctx, volume_id, meta, replace=False)
    return {"meta": meta}


@router.delete(V3 + "/volumes/{volume_id}/metadata/{key}")
def delete_metadata_item(svc: Svc, ctx: Ctx, volume_id: str, key: str) -> Response:
    svc.volume.delete_metadata(ctx, volume_id, key)
    return Response(status_code=200)


# -- actions ------------------------------------------------------------------------------------

@router.post(V3 + "/volumes/{volume_id}/action")
def volume_action(svc: Svc, ctx: Ctx, volume_id: str, request: Request, body: Any = Body(None)) -> Response:
    name, args = action_of(body)
    vol = svc.volume
    if name == "os-set_bootable":
        vol.set_bootable(ctx, volume_id, bool_of(args_of(args, name).get("bootable"), "bootable"))
        return Response(status_code=200)
    if name == "os-update_readonly_flag":
        vol.set_read_only(ctx, volume_id, bool_of(args_of(args, name).get("readonly"), "readonly"))
        return Response(status_code=202)
    if name == "os-extend":
        # An in-use volume grows from 3.42 (Cinder's extend_attached_volume); before, only an available one.
        vol.extend(ctx, volume_id, size_of(args_of(args, name).get("new_size"), "new_size"), request_id.get(),
                   in_use=at_least(request, mv.VOLUME_EXTEND_INUSE))
        return Response(status_code=202)
    if name == "os-reset_status":
        status = args_of(args, name).get("status")
        if not isinstance(status, str):
            raise BadRequest("Invalid input received: os-reset_status needs a status.")
        vol.reset_status(ctx, volume_id, status)
        return Response(status_code=202)
    if name == "os-volume_upload_image":
        a = args_of(args, name)
        image_name = a.get("image_name")
        if not isinstance(image_name, str) or not image_name.strip():
            raise BadRequest("Invalid input received: os-volume_upload_image needs an image_name.")
        # Cinder takes visibility and protected from 3.1; before, the image is private and unprotected.
        params = at_least(request, mv.UPLOAD_IMAGE_PARAMS)
        visibility = str(a.get("visibility") or "private") if params else "private"
        if visibility == "public" and not ctx.is_admin:  # volume_extension:volume_actions:upload_public
            raise Forbidden("Policy doesn't allow volume_extension:volume_actions:upload_public to be performed.")
        up = vol.upload_to_image(
            ctx, volume_id, image_name=image_name, disk_format=str(a.get("disk_format") or "raw"),
            container_format=str(a.get("container_format") or "bare"), visibility=visibility,
            protected=params and bool_of(a.get("protected", False), "protected"),
            force=bool_of(a.get("force", False), "force"), request_id=request_id.get())
        return JSONResponse({"os-volume_upload_image": views.upload(up)}, status_code=202)
    if name == "revert":
        if not at_least(request, mv.VOLUME_REVERT):  # Cinder: no such method before 3.40
            raise NotFound("The resource could not be found.")
        revert = args_of(args, name)
        if set(revert) - {"snapshot_id"}:
            raise BadRequest(f"Invalid input for field/attribute revert: unexpected keys {sorted(set(revert))}.")
        snapshot_id = revert.get("snapshot_id")
        vol.revert_to_snapshot(ctx, volume_id, snapshot_id if isinstance(snapshot_id, str) else None,
                               request_id.get())
        return Response(status_code=202)
    if name == "os-force_delete":
        vol.delete(ctx, volume_id, force=True, request_id=request_id.get())
        return Response(status_code=202)
    raise BadRequest(f"There is no such action: {name}")
