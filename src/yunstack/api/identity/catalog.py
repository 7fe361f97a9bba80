"""Keystone v3 catalog routes: ``/v3/services`` and ``/v3/endpoints`` (admin-managed), ``/v3/regions``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from yunstack.api.deps import Ctx, Svc
from yunstack.api.identity import schemas as s
from yunstack.api.identity import views as v

# No prefix: ``resources.router`` (prefix /identity/v3) includes this one.
router = APIRouter()
Json = dict[str, Any]


def _links(request: Request) -> Json:
    return {"self": str(request.url), "next": None, "previous": None}


# -- services ------------------------------------------------------------------------------------

@router.get("/services")
def list_services(ctx: Ctx, svc: Svc, request: Request, type: str | None = None,
                  name: str | None = None) -> Json:
    rows = svc.identity.catalog.list_services(ctx, type=type, name=name)
    base = svc.config.server.base_url
    return {"services": [v.service(base, x) for x in rows], "links": _links(request)}


@router.post("/services", status_code=201)
def create_service(body: s.ServiceCreateBody, ctx: Ctx, svc: Svc) -> Json:
    b = body.service
    made = svc.identity.catalog.create_service(ctx, type=b.type, name=b.name or "",
                                               description=b.description or "", enabled=b.enabled)
    return {"service": v.service(svc.config.server.base_url, made)}


@router.get("/services/{service_id}")
def show_service(service_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"service": v.service(svc.config.server.base_url,
                                 svc.identity.catalog.get_service(ctx, service_id))}


@router.patch("/services/{service_id}")
def update_service(service_id: str, body: s.ServiceUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    b = body.service
    made = svc.identity.catalog.update_service(ctx, service_id, type=b.type, name=b.name,
                                               description=b.description, enabled=b.enabled)
    return {"service": v.service(svc.config.server.base_url, made)}


@router.delete("/services/{service_id}", status_code=204)
def delete_service(service_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.catalog.delete_service(ctx, service_id)
    return Response(status_code=204)


# -- endpoints -----------------------------------------------------------------------------------

@router.get("/endpoints")
def list_endpoints(ctx: Ctx, svc: Svc, request: Request, interface: str | None = None,
                   service_id: str | None = None, region_id: str | None = None) -> Json:
    rows = svc.identity.catalog.list_endpoints(ctx, interface=interface, service_id=service_id,
                                               region_id=region_id)
    base = svc.config.server.base_url
    return {"endpoints": [v.endpoint(base, x) for x in rows], "links": _links(request)}


@router.post("/endpoints", status_code=201)
def create_endpoint(body: s.EndpointCreateBody, ctx: Ctx, svc: Svc) -> Json:
    b = body.endpoint
    made = svc.identity.catalog.create_endpoint(ctx, service_id=b.service_id, interface=b.interface,
                                                url=b.url, region=b.region_id or b.region,
                                                enabled=b.enabled)
    return {"endpoint": v.endpoint(svc.config.server.base_url, made)}


@router.get("/endpoints/{endpoint_id}")
def show_endpoint(endpoint_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"endpoint": v.endpoint(svc.config.server.base_url,
                                   svc.identity.catalog.get_endpoint(ctx, endpoint_id))}


@router.patch("/endpoints/{endpoint_id}")
def update_endpoint(endpoint_id: str, body: s.EndpointUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    b = body.endpoint
    made = svc.identity.catalog.update_endpoint(ctx, endpoint_id, service_id=b.service_id,
                                                interface=b.interface, url=b.url,
                                                region=b.region_id or b.region, enabled=b.enabled)
    return {"endpoint": v.endpoint(svc.config.server.base_url, made)}


@router.delete("/endpoints/{endpoint_id}", status_code=204)
def delete_endpoint(endpoint_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.catalog.delete_endpoint(ctx, endpoint_id)
    return Response(status_code=204)


# -- regions (read-only: the regions that endpoints name) ----------------------------------------

@router.get("/regions")
def list_regions(ctx: Ctx, svc: Svc, request: Request) -> Json:
    base = svc.config.server.base_url
    return {"regions": [v.region(base, r) for r in svc.identity.catalog.list_regions(ctx)],
            "links": _links(request)}


@router.get("/regions/{region_id}")
def show_region(region_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"region": v.region(svc.config.server.base_url, svc.identity.catalog.get_region(ctx, region_id))}
