"""Nova flavors, flavor extra specs and flavor access."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request, Response

from yunstack.api.compute import schemas_misc as s
from yunstack.api.compute import views_misc as v
from yunstack.api.compute.microversion import Version
from yunstack.api.deps import Ctx, Svc
from yunstack.api.schemas import INT32_MAX
from yunstack.errors import BadRequest

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]


def _is_public(raw: str | None) -> bool | None:
    """Nova's is_public filter: absent means True; the literal string 'None' (OSC) means all."""
    if raw is None:
        return True
    if raw.lower() in ("none", "null"):
        return None
    if raw.lower() in ("true", "t", "1", "yes", "y", "on"):
        return True
    if raw.lower() in ("false", "f", "0", "no", "n", "off"):
        return False
    raise BadRequest("Invalid is_public filter [{value}]", value=raw)


def _min(name: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20 or int(raw) > INT32_MAX:  # flavors' sizes are 32-bit
        raise BadRequest("Invalid {name} filter [{value}]", name=name, value=raw)
    return int(raw)


def _list(request: Request, ctx: Ctx, svc: Svc, detail: bool, version: Version) -> Json:
    q = request.query_params
    limit, marker = v.paging(q.get("limit"), q.get("marker"))
    found = svc.flavors.list(ctx, is_public=_is_public(q.get("is_public")), min_ram=_min("minRam", q.get("minRam")),
                             min_disk=_min("minDisk", q.get("minDisk")),
                             sort_key=q.get("sort_key", "flavorid"), sort_dir=q.get("sort_dir", "asc"),
                             limit=limit, marker=marker)
    base = svc.config.server.base_url
    body: Json = {"flavors": [v.flavor(base, f, version) if detail else v.flavor_brief(base, f) for f in found]}
    links = v.next_links(request, base, [f.id for f in found], limit)
    if links:
        body["flavors_links"] = links
    return body


@router.get("/flavors")
def list_flavors(request: Request, ctx: Ctx, svc: Svc, version: Version) -> Json:
    return _list(request, ctx, svc, False, version)


@router.get("/flavors/detail")
def list_flavors_detail(request: Request, ctx: Ctx, svc: Svc, version: Version) -> Json:
    return _list(request, ctx, svc, True, version)


@router.post("/flavors")
def create_flavor(body: s.FlavorCreateBody, ctx: Ctx, svc: Svc, version: Version) -> Json:
    f = body.flavor
    made = svc.flavors.create(ctx, name=f.name, ram=f.ram, vcpus=f.vcpus, disk=f.disk,
                              flavor_id=None if f.id is None else str(f.id), ephemeral=f.ephemeral,
                              swap=f.swap, rxtx_factor=f.rxtx_factor, is_public=f.is_public)
    return {"flavor": v.flavor(svc.config.server.base_url, made, version)}


@router.get("/flavors/{flavor_id}")
def show_flavor(flavor_id: str, ctx: Ctx, svc: Svc, version: Version) -> Json:
    return {"flavor": v.flavor(svc.config.server.base_url, svc.flavors.get(ctx, flavor_id), version)}


@router.delete("/flavors/{flavor_id}", status_code=202)
def delete_flavor(flavor_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.flavors.delete(ctx, flavor_id)
    return Response(status_code=202)


# -- extra specs --------------------------------------------------------------------------------

@router.get("/flavors/{flavor_id}/os-extra_specs")
def list_extra_specs(flavor_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"extra_specs": svc.flavors.extra_specs(ctx, flavor_id)}


@router.post("/flavors/{flavor_id}/os-extra_specs")
def create_extra_specs(flavor_id: str, body: s.ExtraSpecsBody, ctx: Ctx, svc: Svc) -> Json:
    return {"extra_specs": svc.flavors.set_extra_specs(ctx, flavor_id, body.extra_specs)}


@router.get("/flavors/{flavor_id}/os-extra_specs/{key}")
def show_extra_spec(flavor_id: str, key: str, ctx: Ctx, svc: Svc) -> Json:
    return {key: svc.flavors.extra_spec(ctx, flavor_id, key)}


@router.put("/flavors/{flavor_id}/os-extra_specs/{key}")
def update_extra_spec(flavor_id: str, key: str, ctx: Ctx, svc: Svc,
                      body: dict[str, s.SpecValue] = Body(...)) -> Json:
    if len(body) != 1:
        raise BadRequest("Request body contains too many items" if body else "Request body is empty")
    if key not in body:
        raise BadRequest("Request body and URI mismatch")
    return svc.flavors.set_extra_specs(ctx, flavor_id, body)


@router.delete("/flavors/{flavor_id}/os-extra_specs/{key}")
def delete_extra_spec(flavor_id: str, key: str, ctx: Ctx, svc: Svc) -> Response:
    svc.flavors.delete_extra_spec(ctx, flavor_id, key)
    return Response(status_code=200)


# -- access to private flavors ------------------------------------------------------------------

@router.get("/flavors/{flavor_id}/os-flavor-access")
def list_flavor_access(flavor_id: str, ctx: Ctx, svc: Svc) -> Json:
    return v.flavor_access(flavor_id, svc.flavors.list_access(ctx, flavor_id))


@router.post("/flavors/{flavor_id}/action")
def flavor_action(flavor_id: str, body: s.FlavorActionBody, ctx: Ctx, svc: Svc) -> Json:
    if (body.addTenantAccess is None) == (body.removeTenantAccess is None):
        raise BadRequest("Exactly one of addTenantAccess and removeTenantAccess is required.")
    if body.addTenantAccess is not None:
        projects = svc.flavors.add_access(ctx, flavor_id, body.addTenantAccess.tenant)
    else:
        assert body.removeTenantAccess is not None
        projects = svc.flavors.remove_access(ctx, flavor_id, body.removeTenantAccess.tenant)
    return v.flavor_access(flavor_id, projects)
