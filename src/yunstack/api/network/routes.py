"""Neutron v2.0 routes: versions, extensions, networks, subnets, ports and tags.

Routers and floating IPs are in ``routes_l3.py``; security groups, rules and quotas in
``routes_sg.py``.  Handlers parse, call the service and render; they never catch.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from yunstack.api.deps import Ctx, Svc
from yunstack.api.network import query as q
from yunstack.api.network import schemas as s
from yunstack.api.network import views as v
from yunstack.errors import NotFound
from yunstack.network.ports import PortRequest

router = APIRouter(prefix="/networking", tags=["network"])
V2 = "/v2.0"
Json = dict[str, Any]


def listing(name: str, items: list[Json], request: Request, svc: Svc) -> Json:
    return q.collection(name, items, request.query_params, svc.config.server.base_url + request.url.path)


def one(key: str, item: Json, request: Request) -> Json:
    return {key: q.only(item, request.query_params)}


def created(key: str, item: Json) -> JSONResponse:
    return JSONResponse({key: item}, status_code=201)


def _routes(items: list[s.Route] | None) -> list[tuple[str, str]] | None:
    return None if items is None else [(r.destination, r.nexthop) for r in items]


def _pools(items: list[s.Pool] | None) -> list[tuple[str, str]] | None:
    return None if items is None else [(p.start, p.end) for p in items]


def _fixed(items: list[s.FixedIp] | None) -> list[dict[str, str | None]] | None:
    return None if items is None else [f.model_dump() for f in items]


def _pairs(items: list[s.AddressPair] | None) -> list[dict[str, str | None]] | None:
    return None if items is None else [p.model_dump() for p in items]


# -- versions and extensions -------------------------------------------------------------------

@router.get("")
@router.get("/", include_in_schema=False)
def versions(svc: Svc) -> Json:
    return v.versions(svc.config.server.base_url)


@router.get(V2)
@router.get(V2 + "/", include_in_schema=False)
def resources(ctx: Ctx, svc: Svc) -> Json:
    return v.resources(svc.config.server.base_url)


@router.get(V2 + "/extensions")
def list_extensions(ctx: Ctx, request: Request, svc: Svc) -> Json:
    return listing("extensions", [v.extension(*e) for e in v.EXTENSIONS], request, svc)


@router.get(V2 + "/extensions/{alias}")
def show_extension(alias: str, ctx: Ctx) -> Json:
    for e in v.EXTENSIONS:
        if e[0] == alias:
            return {"extension": v.extension(*e)}
    raise NotFound("Extension with alias {alias} does not exist", alias=alias)


# -- networks ----------------------------------------------------------------------------------

@router.post(V2 + "/networks", status_code=201)
def create_network(body: s.NetworkCreateBody, ctx: Ctx, svc: Svc) -> JSONResponse:
    n = body.network
    made = svc.network.create_network(ctx, name=n.name or "", admin_state_up=n.admin_state_up, shared=n.shared,
                                      external=n.external, port_security_enabled=n.port_security_enabled,
                                      description=n.description or "", project_id=n.owner,
                                      provider=n.provider)
    return created("network", v.network(made, admin=ctx.is_admin))


@router.get(V2 + "/networks")
def list_networks(request: Request, ctx: Ctx, svc: Svc) -> Json:
    return listing("networks", [v.network(n, admin=ctx.is_admin) for n in svc.network.list_networks(ctx)], request, svc)


@router.get(V2 + "/networks/{network_id}")
def show_network(network_id: str, request: Request, ctx: Ctx, svc: Svc) -> Json:
    return one("network", v.network(svc.network.get_network(ctx, network_id), admin=ctx.is_admin), request)


@router.put(V2 + "/networks/{network_id}")
def update_network(network_id: str, body: s.NetworkUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    n = body.network
    return {"network": v.network(svc.network.update_network(
        ctx, network_id, name=n.name, admin_state_up=n.admin_state_up, shared=n.shared, external=n.external,
        port_security_enabled=n.port_security_enabled, description=n.description), admin=ctx.is_admin)}


@router.delete(V2 + "/networks/{network_id}", status_code=204)
def delete_network(network_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.delete_network(ctx, network_id)
    return Response(status_code=204)


# -- subnets -----------------------------------------------------------------------------------

@router.post(V2 + "/subnets", status_code=201)
def create_subnet(body: s.SubnetCreateBody, ctx: Ctx, svc: Svc) -> JSONResponse:
    b = body.subnet
    made = svc.network.create_subnet(
        ctx, network_id=b.network_id, cidr=b.cidr, ip_version=b.ip_version, name=b.name or "",
        gateway_ip=b.gateway_ip, no_gateway="gateway_ip" in b.model_fields_set and b.gateway_ip is None,
        enable_dhcp=b.enable_dhcp, dns_nameservers=b.dns_nameservers, host_routes=_routes(b.host_routes) or [],
        allocation_pools=_pools(b.allocation_pools), ipv6_ra_mode=b.ipv6_ra_mode,
        ipv6_address_mode=b.ipv6_address_mode, description=b.description or "", project_id=b.owner,
        subnetpool_id=b.subnetpool_id, prefixlen=b.prefixlen)
    return created("subnet", v.subnet(made))


@router.get(V2 + "/subnets")
def list_subnets(request: Request, ctx: Ctx, svc: Svc) -> Json:
    return listing("subnets", [v.subnet(x) for x in svc.network.list_subnets(ctx)], request, svc)


@router.get(V2 + "/subnets/{subnet_id}")
def show_subnet(subnet_id: str, request: Request, ctx: Ctx, svc: Svc) -> Json:
    return one("subnet", v.subnet(svc.network.get_subnet(ctx, subnet_id)), request)


@router.put(V2 + "/subnets/{subnet_id}")
def update_subnet(subnet_id: str, body: s.SubnetUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    b = body.subnet
    return {"subnet": v.subnet(svc.network.update_subnet(
        ctx, subnet_id, name=b.name, description=b.description, gateway_ip=b.gateway_ip,
        no_gateway="gateway_ip" in b.model_fields_set and b.gateway_ip is None, enable_dhcp=b.enable_dhcp,
        dns_nameservers=b.dns_nameservers, host_routes=_routes(b.host_routes),
        allocation_pools=_pools(b.allocation_pools)))}


@router.delete(V2 + "/subnets/{subnet_id}", status_code=204)
def delete_subnet(subnet_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.delete_subnet(ctx, subnet_id)
    return Response(status_code=204)


# -- subnet pools ------------------------------------------------------------------------------

@router.post(V2 + "/subnetpools", status_code=201)
def create_subnetpool(body: s.SubnetPoolCreateBody, ctx: Ctx, svc: Svc) -> JSONResponse:
    b = body.subnetpool
    made = svc.network.create_subnetpool(
        ctx, name=b.name or "", prefixes=b.prefixes, default_prefixlen=b.default_prefixlen,
        min_prefixlen=b.min_prefixlen, max_prefixlen=b.max_prefixlen, shared=b.shared, is_default=b.is_default,
        description=b.description or "", project_id=b.owner)
    return created("subnetpool", v.subnetpool(made))


@router.get(V2 + "/subnetpools")
def list_subnetpools(request: Request, ctx: Ctx, svc: Svc) -> Json:
    return listing("subnetpools", [v.subnetpool(x) for x in svc.network.list_subnetpools(ctx)], request, svc)


@router.get(V2 + "/subnetpools/{pool_id}")
def show_subnetpool(pool_id: str, request: Request, ctx: Ctx, svc: Svc) -> Json:
    return one("subnetpool", v.subnetpool(svc.network.get_subnetpool(ctx, pool_id)), request)


@router.put(V2 + "/subnetpools/{pool_id}")
def update_subnetpool(pool_id: str, body: s.SubnetPoolUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    b = body.subnetpool
    return {"subnetpool": v.subnetpool(svc.network.update_subnetpool(
        ctx, pool_id, name=b.name, description=b.description, prefixes=b.prefixes,
        default_prefixlen=b.default_prefixlen, min_prefixlen=b.min_prefixlen, max_prefixlen=b.max_prefixlen,
        is_default=b.is_default))}


@router.delete(V2 + "/subnetpools/{pool_id}", status_code=204)
def delete_subnetpool(pool_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.delete_subnetpool(ctx, pool_id)
    return Response(status_code=204)


# -- ports -------------------------------------------------------------------------------------

def _port_request(p: s.PortCreate) -> PortRequest:
    return PortRequest(
        network_id=p.network_id, name=p.name or "",
        admin_state_up=True if p.admin_state_up is None else p.admin_state_up,
        mac_address=p.mac_address, fixed_ips=_fixed(p.fixed_ips), device_id=p.device_id or "",
        device_owner=p.device_owner or "", binding_host=p.binding_host_id or "",
        port_security_enabled=p.port_security_enabled, allowed_address_pairs=_pairs(p.allowed_address_pairs) or [],
        security_groups=p.security_groups, description=p.description or "", project_id=p.owner)


@router.post(V2 + "/ports", status_code=201)
def create_port(body: s.PortCreateBody, ctx: Ctx, svc: Svc) -> JSONResponse:
    if body.ports is not None:
        made = svc.network.create_ports(ctx, [_port_request(p) for p in body.ports])
        return JSONResponse({"ports": [v.port(p, admin=ctx.is_admin) for p in made]}, status_code=201)
    assert body.port is not None  # the body model insists on exactly one of the two
    one_port = svc.network.create_ports(ctx, [_port_request(body.port)])[0]
    return created("port", v.port(one_port, admin=ctx.is_admin))


@router.get(V2 + "/ports")
def list_ports(request: Request, ctx: Ctx, svc: Svc) -> Json:
    found = svc.network.list_ports(ctx, device_ids=request.query_params.getlist("device_id"))
    return listing("ports", [v.port(p, admin=ctx.is_admin) for p in found], request, svc)


@router.get(V2 + "/ports/{port_id}")
def show_port(port_id: str, request: Request, ctx: Ctx, svc: Svc) -> Json:
    return one("port", v.port(svc.network.get_port(ctx, port_id), admin=ctx.is_admin), request)


@router.put(V2 + "/ports/{port_id}")
def update_port(port_id: str, body: s.PortUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    p = body.port
    return {"port": v.port(svc.network.update_port(
        ctx, port_id, name=p.name, admin_state_up=p.admin_state_up, device_id=p.device_id,
        device_owner=p.device_owner, binding_host=p.binding_host_id, fixed_ips=_fixed(p.fixed_ips),
        mac_address=p.mac_address, port_security_enabled=p.port_security_enabled,
        allowed_address_pairs=_pairs(p.allowed_address_pairs), security_groups=p.security_groups,
        description=p.description), admin=ctx.is_admin)}


@router.delete(V2 + "/ports/{port_id}", status_code=204)
def delete_port(port_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.delete_port(ctx, port_id)
    return Response(status_code=204)


# -- tags --------------------------------------------------------------------------------------

@router.get(V2 + "/{collection}/{resource_id}/tags")
def list_tags(collection: str, resource_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"tags": svc.network.tags(ctx, collection, resource_id)}


@router.put(V2 + "/{collection}/{resource_id}/tags")
def replace_tags(collection: str, resource_id: str, body: s.Tags, ctx: Ctx, svc: Svc) -> Json:
    return {"tags": svc.network.update_tags(ctx, collection, resource_id, replace=body.tags)}


@router.delete(V2 + "/{collection}/{resource_id}/tags", status_code=204)
def clear_tags(collection: str, resource_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.update_tags(ctx, collection, resource_id, replace=[])
    return Response(status_code=204)


@router.get(V2 + "/{collection}/{resource_id}/tags/{tag}", status_code=204)
def check_tag(collection: str, resource_id: str, tag: str, ctx: Ctx, svc: Svc) -> Response:
    if tag not in svc.network.tags(ctx, collection, resource_id):
        raise NotFound("Tag {tag} could not be found for {resource} {id}.", tag=tag, resource=collection,
                       id=resource_id)
    return Response(status_code=204)


@router.put(V2 + "/{collection}/{resource_id}/tags/{tag}", status_code=201)
def add_tag(collection: str, resource_id: str, tag: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.update_tags(ctx, collection, resource_id, add=tag)
    return Response(status_code=201)


@router.delete(V2 + "/{collection}/{resource_id}/tags/{tag}", status_code=204)
def remove_tag(collection: str, resource_id: str, tag: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.update_tags(ctx, collection, resource_id, remove=tag)
    return Response(status_code=204)
