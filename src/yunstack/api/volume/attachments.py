"""Cinder's attachments API (3.27): records of who is attached, in Cinder's shapes.

A record plugs nothing (``volume/records.py``); Nova's os-volume_attachments is the path that
hot-plugs, and its attachments show here too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request, Response

from yunstack.api.deps import Ctx, Svc
from yunstack.api.volume import filters
from yunstack.api.volume import microversion as mv
from yunstack.api.volume.microversion import at_least, next_href
from yunstack.api.volume.query import int_param
from yunstack.api.volume.schemas import action_of, bool_of, object_of
from yunstack.api.volume.views import when
from yunstack.errors import BadRequest, NotFound
from yunstack.volume.records import Record, RecordQuery

router = APIRouter(prefix="/volume/v3/attachments", tags=["volume"])


def _available(request: Request) -> None:
    # Before 3.27 Cinder has no such resource.
    if not at_least(request, mv.NEW_ATTACH):
        raise NotFound("The resource could not be found.")


def _summary(r: Record) -> dict[str, Any]:
    return {"id": r.id, "status": r.status, "instance": r.instance, "volume_id": r.volume_id}


def _detail(r: Record) -> dict[str, Any]:
    # Cinder writes a missing time as "" here (views/attachments.py), not null.
    return {**_summary(r), "attached_at": when(r.attached_at) or "", "detached_at": "", "attach_mode": r.attach_mode,
            "connection_info": r.connection_info}


def _connector(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest("Invalid input received: connector must be an object.")
    return value


def _list(svc: Svc, ctx: Ctx, request: Request, *, detail: bool) -> dict[str, Any]:
    _available(request)
    p = request.query_params
    if not filters.served(p, "attachment", ctx, mv.version_of(request)):
        return {"attachments": []}
    sort = p.get("sort_dir", "desc").lower()
    if "sort" in p:
        sort = p["sort"].partition(":")[2].strip().lower() or "desc"
    query = RecordQuery(volume_id=p.get("volume_id"), instance_id=p.get("instance_id"),
                        status=p.get("status", p.get("attach_status")),
                        all_projects=bool_of(p.get("all_tenants", "false"), "all_tenants"),
                        limit=int_param(p, "limit", 0), marker=p.get("marker"), offset=int_param(p, "offset", 0) or 0,
                        sort_dir=sort)
    items = svc.volume.records.list(ctx, query)
    body: dict[str, Any] = {"attachments": [_detail(r) if detail else _summary(r) for r in items]}
    if items and query.limit is not None and len(items) >= query.limit:
        body["attachments_links"] = [{"rel": "next", "href": next_href(request, svc.config.server.base_url,
                                                                       items[-1].id)}]
    return body


@router.get("")
def list_attachments(svc: Svc, ctx: Ctx, request: Request) -> dict[str, Any]:
    return _list(svc, ctx, request, detail=False)


@router.get("/detail")
def list_attachments_detail(svc: Svc, ctx: Ctx, request: Request) -> dict[str, Any]:
    return _list(svc, ctx, request, detail=True)


@router.post("")
def create_attachment(svc: Svc, ctx: Ctx, request: Request, body: Any = Body(None)) -> dict[str, Any]:
    _available(request)
    a = object_of(body, "attachment")
    unknown = set(a) - {"volume_uuid", "instance_uuid", "connector"}
    if unknown:
        raise BadRequest(f"Invalid input received: unexpected key(s) {sorted(unknown)} in attachment.")
    instance = a.get("instance_uuid")
    if not instance or not isinstance(instance, str):
        raise BadRequest("Must specify 'instance_uuid' to create attachment.")
    volume = a.get("volume_uuid")
    if not volume or not isinstance(volume, str):
        raise BadRequest("Must specify 'volume_uuid' to create attachment.")
    record = svc.volume.records.create(ctx, volume, instance, _connector(a.get("connector")))
    return {"attachment": _detail(record)}


@router.get("/{attachment_id}")
def show_attachment(svc: Svc, ctx: Ctx, attachment_id: str, request: Request) -> dict[str, Any]:
    _available(request)
    return {"attachment": _detail(svc.volume.records.get(ctx, attachment_id))}


@router.put("/{attachment_id}")
def update_attachment(svc: Svc, ctx: Ctx, attachment_id: str, request: Request,
                      body: Any = Body(None)) -> dict[str, Any]:
    _available(request)
    a = object_of(body, "attachment")
    connector = _connector(a.get("connector"))
    if not connector or set(a) - {"connector"}:
        raise BadRequest("Must specify 'connector' to update attachment.")
    return {"attachment": _detail(svc.volume.records.update(ctx, attachment_id, connector))}


@router.post("/{attachment_id}/action", status_code=204)
def attachment_action(svc: Svc, ctx: Ctx, attachment_id: str, request: Request, body: Any = Body(None)) -> Response:
    _available(request)
    name, _ = action_of(body)
    if name != "os-complete":
        raise BadRequest(f"There is no such action: {name}")
    if not at_least(request, mv.NEW_ATTACH_COMPLETION):  # Cinder: no such method before 3.44
        raise NotFound("The resource could not be found.")
    svc.volume.records.complete(ctx, attachment_id)
    return Response(status_code=204)


@router.delete("/{attachment_id}")
def delete_attachment(svc: Svc, ctx: Ctx, attachment_id: str, request: Request) -> Response:
    _available(request)
    svc.volume.records.delete(ctx, attachment_id)
    # Cinder answers with the attachments that shared the connection: none here.
    return Response('{"attachments": []}', media_type="application/json")
