"""Neutron v2.0 routes: routers (gateway, interfaces) and floating IPs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from yunstack.api.deps import Ctx, Svc
from yunstack.api.network import schemas as s
from yunstack.api.network import views as v
from yunstack.api.network.routes import V2, created, listing, one
from yunstack.network.errors import InvalidInput
from yunstack.network.routers import GatewayRequest

router = APIRouter(prefix="/networking", tags=["network"])
Json = dict[str, Any]


def _gateway(info: s.GatewayInfo | None) -> GatewayRequest | None:
    if info is None:
        return None
    if info.network_id is None:
        if info.model_fields_set:
            raise InvalidInput(error_message="external_gateway_info needs network_id (or {} to clear it).")
        return None  # {}: no gateway
    fixed = None if info.external_fixed_ips is None else tuple(f.model_dump() for f in info.external_fixed_ips)
    return GatewayRequest(network_id=info.network_id, enable_snat=info.enable_snat, external_fixed_ips=fixed)


@router.post(V2 + "/routers", status_code=201)
def create_router(body: s.RouterCreateBody, ctx: Ctx, svc: Svc) -> JSONResponse:
    r = body.router
    made = svc.network.create_router(ctx, name=r.name or "", admin_state_up=r.admin_state_up,
                                     description=r.description or "", gateway=_gateway(r.external_gateway_info),
                                     project_id=r.owner)
    return created("router", v.router(made))


@router.get(V2 + "/routers")
def list_routers(request: Request, ctx: Ctx, svc: Svc) -> Json:
    return listing("routers", [v.router(r) for r in svc.network.list_routers(ctx)], request, svc)


@router.get(V2 + "/routers/{router_id}")
def show_router(router_id: str, request: Request, ctx: Ctx, svc: Svc) -> Json:
    return one("router", v.router(svc.network.get_router(ctx, router_id)), request)


@router.put(V2 + "/routers/{router_id}")
def update_router(router_id: str, body: s.RouterUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    r = body.router
    info = r.external_gateway_info
    clear = "external_gateway_info" in r.model_fields_set and (info is None or info.network_id is None)
    # "routes": null clears them, as Neutron (Tempest's cleanup sends it); no "routes" keeps them.
    routes = [(x.destination, x.nexthop) for x in r.routes or ()] if "routes" in r.model_fields_set else None
    return {"router": v.router(svc.network.update_router(
        ctx, router_id, name=r.name, admin_state_up=r.admin_state_up, description=r.description,
        gateway=_gateway(r.external_gateway_info), clear_gateway=clear, routes=routes))}


@router.put(V2 + "/routers/{router_id}/add_extraroutes")
def add_extraroutes(router_id: str, body: s.ExtraRoutesBody, ctx: Ctx, svc: Svc) -> Json:
    routes = [(x.destination, x.nexthop) for x in body.router.routes]
    return {"router": v.router(svc.network.update_extra_routes(ctx, router_id, routes, add=True))}


@router.put(V2 + "/routers/{router_id}/remove_extraroutes")
def remove_extraroutes(router_id: str, body: s.ExtraRoutesBody, ctx: Ctx, svc: Svc) -> Json:
    routes = [(x.destination, x.nexthop) for x in body.router.routes]
    return {"router": v.router(svc.network.update_extra_routes(ctx, router_id, routes, add=False))}


@router.delete(V2 + "/routers/{router_id}", status_code=204)
def delete_router(router_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.delete_router(ctx, router_id)
    return Response(status_code=204)


@router.put(V2 + "/routers/{router_id}/add_router_interface")
def add_router_interface(router_id: str, body: s.InterfaceBody, ctx: Ctx, svc: Svc) -> Json:
    return v.interface_info(svc.network.add_router_interface(ctx, router_id, subnet_id=body.subnet_id,
                                                             port_id=body.port_id))


@router.put(V2 + "/routers/{router_id}/remove_router_interface")
def remove_router_interface(router_id: str, body: s.InterfaceBody, ctx: Ctx, svc: Svc) -> Json:
    return v.interface_info(svc.network.remove_router_interface(ctx, router_id, subnet_id=body.subnet_id,
                                                                port_id=body.port_id))


@router.post(V2 + "/floatingips", status_code=201)
def create_floatingip(body: s.FloatingIpCreateBody, ctx: Ctx, svc: Svc) -> JSONResponse:
    f = body.floatingip
    made = svc.network.create_floatingip(
        ctx, floating_network_id=f.floating_network_id, port_id=f.port_id, fixed_ip_address=f.fixed_ip_address,
        floating_ip_address=f.floating_ip_address, subnet_id=f.subnet_id, description=f.description or "",
        project_id=f.owner)
    return created("floatingip", v.floatingip(made))


@router.get(V2 + "/floatingips")
def list_floatingips(request: Request, ctx: Ctx, svc: Svc) -> Json:
    return listing("floatingips", [v.floatingip(f) for f in svc.network.list_floatingips(ctx)], request, svc)


@router.get(V2 + "/floatingips/{fip_id}")
def show_floatingip(fip_id: str, request: Request, ctx: Ctx, svc: Svc) -> Json:
    return one("floatingip", v.floatingip(svc.network.get_floatingip(ctx, fip_id)), request)


@router.put(V2 + "/floatingips/{fip_id}")
def update_floatingip(fip_id: str, body: s.FloatingIpUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    f = body.floatingip
    detach = "port_id" in f.model_fields_set and f.port_id is None
    return {"floatingip": v.floatingip(svc.network.update_floatingip(
        ctx, fip_id, port_id=f.port_id, disassociate=detach, fixed_ip_address=f.fixed_ip_address,
        description=f.description))}


@router.delete(V2 + "/floatingips/{fip_id}", status_code=204)
def delete_floatingip(fip_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.delete_floatingip(ctx, fip_id)
    return Response(status_code=204)
