"""Nova server routes: CRUD, actions, metadata, instance actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from yunstack.api.compute import server_actions
from yunstack.api.compute import server_schemas as sch
from yunstack.api.compute import server_views as views
from yunstack.api.compute.block_devices import boot_source
from yunstack.api.compute.consoles import LEGACY as LEGACY_CONSOLES
from yunstack.api.compute.consoles import console_action
from yunstack.api.compute.microversion import Version
from yunstack.api.compute.server_groups import group_hint
from yunstack.api.compute.server_update import access_addresses, updated
from yunstack.api.deps import Ctx, Svc
from yunstack.api.middleware import request_id
from yunstack.api.schemas import INT32_MAX, bounded_int
from yunstack.compute import operations
from yunstack.compute.service import ServerCreate, ServerFilters
from yunstack.errors import BadRequest, NotFound

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]
SERVER = "/servers/{server_id}"


def _base(svc: Svc) -> str:
    return svc.config.server.base_url


def _truthy(value: bool | str | None) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1", "yes"))


def _filters(request: Request, ctx: Ctx) -> ServerFilters:
    q = request.query_params
    known = {"name", "status", "host", "image", "flavor", "reservation_id", "changes-since", "all_tenants",
             "project_id", "tenant_id", "ip", "limit", "marker", "sort_key", "sort_dir", "deleted", "tags",
             "ip6", "availability_zone", "user_id", "locked", "description", "key_name"}
    limit = q.get("limit")
    if limit is not None and not (limit.isascii() and limit.isdigit()):
        raise BadRequest("limit must be a non-negative integer.")
    if limit is not None and len(limit) > 10:
        limit = str(INT32_MAX)  # no page is longer; and int() refuses strings of over 4,300 digits
    changes = q.get("changes-since")
    since = None
    if changes:
        try:
            since = datetime.fromisoformat(changes.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadRequest("Invalid changes-since value.") from exc
    _ = known
    return ServerFilters(
        name=q.get("name"), status=q.get("status"), host=q.get("host"), image=q.get("image"),
        flavor=q.get("flavor"), reservation_id=q.get("reservation_id"), changes_since=since,
        all_tenants=q.get("all_tenants") not in (None, "0", "false", "False"),
        project_id=q.get("project_id") or q.get("tenant_id"), limit=int(limit) if limit else None,
        ip=q.get("ip") or None, ip6=q.get("ip6") or None,
        marker=q.get("marker"), sort_key=q.get("sort_key", "created_at"),
        sort_dir="asc" if q.get("sort_dir") == "asc" else "desc",
        tags=tuple(x for x in (q.get("tags") or "").split(",") if x),
    )


def _detail(svc: Svc, ctx: Ctx, v: Version, server: Any) -> Json:
    return views.detail(_base(svc), server, v, ctx)


def _links_next(request: Request, items: list[Any], limit: int | None) -> list[Json]:
    if limit is None or len(items) < limit or not items:
        return []
    params = dict(request.query_params)
    params["marker"] = items[-1].id
    query = "&".join(f"{k}={val}" for k, val in params.items())
    return [{"rel": "next", "href": f"{str(request.url).split('?')[0]}?{query}"}]


@router.get("/servers")
def list_servers(request: Request, ctx: Ctx, svc: Svc) -> Json:
    f = _filters(request, ctx)
    items = svc.compute.list_servers(ctx, f)
    body: Json = {"servers": [views.summary(_base(svc), s) for s in items]}
    links = _links_next(request, items, f.limit)
    if links:
        body["servers_links"] = links
    return body


@router.get("/servers/detail")
def list_servers_detail(request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    f = _filters(request, ctx)
    items = svc.compute.list_servers(ctx, f)
    body: Json = {"servers": [_detail(svc, ctx, v, s) for s in items]}
    links = _links_next(request, items, f.limit)
    if links:
        body["servers_links"] = links
    return body


@router.post("/servers", status_code=202)
def create_server(body: sch.ServerCreateBody, ctx: Ctx, svc: Svc, v: Version) -> JSONResponse:
    s = body.server
    if s.personality and v.at_least("2.57"):
        raise BadRequest("personality is not supported from microversion 2.57.")
    if s.personality:
        raise BadRequest("File injection (personality) is not supported; use user_data.")
    if s.networks is None and v.at_least("2.37"):
        raise BadRequest("Invalid input for field/attribute server: 'networks' is a required property")
    networks: Any = s.networks
    if isinstance(networks, list):
        networks = [n.model_dump(exclude_none=True) for n in networks]
    min_count = int(s.min_count)
    ipv4, ipv6 = access_addresses(s.accessIPv4, s.accessIPv6)
    image_id, devices = boot_source(s)
    req = ServerCreate(
        name=s.name, image_id=image_id, block_devices=devices, flavor_ref=str(s.flavorRef), key_name=s.key_name,
        user_data=s.user_data, metadata=s.metadata, config_drive=_truthy(s.config_drive), min_count=min_count,
        max_count=int(s.max_count) if s.max_count is not None else min_count, networks=networks,
        security_groups=[g.name for g in s.security_groups], availability_zone=s.availability_zone,
        description=s.description, access_ipv4=ipv4 or "", access_ipv6=ipv6 or "",
        tags=s.tags, admin_pass=s.adminPass, return_reservation_id=_truthy(s.return_reservation_id),
        group_id=group_hint(body.scheduler_hints or body.os_scheduler_hints),
    )
    servers = svc.compute.create(ctx, req, request_id.get())
    if req.return_reservation_id:
        return JSONResponse({"reservation_id": servers[0].reservation_id}, status_code=202)
    first = servers[0]
    return JSONResponse({"server": views.created(_base(svc), first)}, status_code=202,
                        headers={"Location": f"{_base(svc)}/compute/v2.1/servers/{first.id}"})


@router.get(SERVER)
def show_server(server_id: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    return {"server": _detail(svc, ctx, v, svc.compute.get(ctx, server_id))}


@router.put(SERVER)
def update_server(server_id: str, body: sch.ServerUpdateBody, ctx: Ctx, svc: Svc, v: Version) -> Json:
    u = body.server
    if u.description is not None and not v.at_least("2.19"):
        raise BadRequest("description needs microversion 2.19 or later.")
    fields = u.model_fields_set
    ipv4, ipv6 = access_addresses(u.accessIPv4, u.accessIPv6)
    server = svc.compute.update(ctx, server_id, name=u.name, description=u.description,
                                access_ipv4=ipv4, access_ipv6=ipv6,
                                clear_description="description" in fields and u.description is None)
    return {"server": updated(_base(svc), server, v, ctx)}


@router.delete(SERVER, status_code=204)
def delete_server(server_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.compute.delete(ctx, server_id, request_id.get())
    return Response(status_code=204)


@router.post(SERVER + "/action")
async def server_action(server_id: str, request: Request, ctx: Ctx, svc: Svc, v: Version) -> Response:
    from starlette.concurrency import run_in_threadpool

    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest("Malformed request body: not JSON.") from exc
    if not isinstance(body, dict) or len(body) != 1:
        raise BadRequest("An action body must be an object with exactly one action.")
    name, args = next(iter(body.items()))
    return await run_in_threadpool(_do_action, svc, ctx, v, server_id, name, args)


def _do_action(svc: Svc, ctx: Ctx, v: Version, server_id: str, name: str, args: Any) -> Response:
    rid = request_id.get()
    if name in server_actions.HANDLERS:  # lock, unlock, rebuild, rescue, shelve, unshelve: their own handlers
        return server_actions.HANDLERS[name](svc, ctx, v, server_id, args, rid)
    decl = operations.by_verb(name)  # every other verb that starts a host operation
    if decl is not None:
        return server_actions.start(svc, ctx, v, server_id, decl, args, rid)
    if name in LEGACY_CONSOLES:
        return console_action(svc, ctx, v, server_id, name, args)
    if name == "os-getConsoleOutput":
        if not isinstance(args, dict) or set(args) - {"length"}:
            raise BadRequest("os-getConsoleOutput takes only 'length'.")
        length = args.get("length")
        if length is not None:
            try:
                length = bounded_int(length, low=-1)
            except ValueError as exc:
                raise BadRequest("length must be an integer from -1 to {high}.", high=INT32_MAX) from exc
            length = None if length == -1 else length
        output = svc.compute.console_output(ctx, server_id, length)
        return JSONResponse({"output": output})
    if name in ("addSecurityGroup", "removeSecurityGroup"):
        if not isinstance(args, dict) or set(args) != {"name"} or not isinstance(args["name"], str) \
                or not args["name"]:
            raise BadRequest("{name} needs a security group 'name'.", name=name)
        if name == "addSecurityGroup":
            svc.compute.add_security_group(ctx, server_id, args["name"])
        else:
            svc.compute.remove_security_group(ctx, server_id, args["name"])
        return Response(status_code=202)
    raise BadRequest("There is no such action: {name}", name=name)


# The /action verbs that start no host operation (``test_operations`` checks the rest are registered).
NOT_OPERATIONS = frozenset({"lock", "unlock", "os-getConsoleOutput", "addSecurityGroup", "removeSecurityGroup",
                            *LEGACY_CONSOLES})
# The /action verbs that queue another operation's host step under an action of their own:
# evacuate queues ``rebuild`` on the new host (``compute.evacuate``).
REUSES_OPERATIONS = frozenset({"evacuate"})


# -- metadata ------------------------------------------------------------------------------------

@router.get(SERVER + "/metadata")
def get_metadata(server_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"metadata": svc.compute.get(ctx, server_id).metadata}


@router.put(SERVER + "/metadata")
def replace_metadata(server_id: str, body: sch.MetadataBody, ctx: Ctx, svc: Svc) -> Json:
    return {"metadata": svc.compute.set_metadata(ctx, server_id, body.metadata, replace=True)}


@router.post(SERVER + "/metadata")
def update_metadata(server_id: str, body: sch.MetadataBody, ctx: Ctx, svc: Svc) -> Json:
    return {"metadata": svc.compute.set_metadata(ctx, server_id, body.metadata, replace=False)}


@router.get(SERVER + "/metadata/{key}")
def get_meta_item(server_id: str, key: str, ctx: Ctx, svc: Svc) -> Json:
    meta = svc.compute.get(ctx, server_id).metadata
    if key not in meta:
        raise NotFound("Metadata item was not found")
    return {"meta": {key: meta[key]}}


@router.put(SERVER + "/metadata/{key}")
def set_meta_item(server_id: str, key: str, body: sch.MetaItemBody, ctx: Ctx, svc: Svc) -> Json:
    if list(body.meta) != [key]:
        raise BadRequest("Request body and URI mismatch")
    svc.compute.set_metadata(ctx, server_id, body.meta, replace=False)
    return {"meta": body.meta}


@router.delete(SERVER + "/metadata/{key}", status_code=204)
def delete_meta_item(server_id: str, key: str, ctx: Ctx, svc: Svc) -> Response:
    svc.compute.delete_metadata(ctx, server_id, key)
    return Response(status_code=204)


@router.get(SERVER + "/ips")
def server_ips(server_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"addresses": svc.compute.get(ctx, server_id).addresses}


# -- instance actions ----------------------------------------------------------------------------

@router.get(SERVER + "/os-instance-actions")
def list_actions(server_id: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    return {"instanceActions": [views.action(a, v, with_events=False, admin=ctx.is_admin)
                                for a in svc.compute.actions(ctx, server_id)]}


@router.get(SERVER + "/os-instance-actions/{req_id}")
def show_action(server_id: str, req_id: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    a = svc.compute.get_action(ctx, server_id, req_id)
    return {"instanceAction": views.action(a, v, with_events=True, admin=ctx.is_admin)}
