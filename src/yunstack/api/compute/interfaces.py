"""Nova's os-interface (a server's ports) and a server's os-security-groups."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from yunstack.api.deps import Ctx, Svc
from yunstack.api.middleware import request_id
from yunstack.api.schemas import Strict
from yunstack.errors import BadRequest
from yunstack.network import models as m

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]
INTERFACES = "/servers/{server_id}/os-interface"


class FixedIpRequest(Strict):
    ip_address: str
    subnet_id: str | None = None


class InterfaceAttachment(Strict):
    net_id: str | None = None
    port_id: str | None = None
    fixed_ips: list[FixedIpRequest] | None = None
    tag: str | None = None


class InterfaceAttachmentBody(Strict):
    interfaceAttachment: InterfaceAttachment


def attachment(port: m.Port) -> Json:
    """Nova's ``interfaceAttachment`` view of a port."""
    return {"port_state": port.status, "port_id": port.id, "net_id": port.network_id,
            "mac_addr": port.mac_address,
            "fixed_ips": [{"subnet_id": f.subnet_id, "ip_address": f.ip_address} for f in port.fixed_ips]}


def security_group(g: m.SecurityGroup) -> Json:
    """Nova's (proxy API) view of a security group and its rules."""
    return {"id": g.id, "name": g.name, "description": g.description, "tenant_id": g.project_id,
            "rules": [{"id": r.id, "parent_group_id": g.id, "ip_protocol": r.protocol,
                       "from_port": r.port_range_min, "to_port": r.port_range_max,
                       "ip_range": {"cidr": r.remote_ip_prefix} if r.remote_ip_prefix else {},
                       "group": {"id": r.remote_group_id} if r.remote_group_id else {}}
                      for r in g.rules if r.direction == "ingress"]}


@router.get(INTERFACES)
def list_interfaces(server_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"interfaceAttachments": [attachment(p) for p in svc.compute.list_interfaces(ctx, server_id)]}


@router.post(INTERFACES)
def attach_interface(server_id: str, body: InterfaceAttachmentBody, ctx: Ctx, svc: Svc) -> Json:
    a = body.interfaceAttachment
    fixed = a.fixed_ips or []
    if len(fixed) > 1:
        raise BadRequest("Only one fixed IP can be requested per interface.")
    if fixed and not a.net_id:
        raise BadRequest("A fixed IP needs net_id.")
    port = svc.compute.attach_interface(ctx, server_id, request_id.get(), net_id=a.net_id, port_id=a.port_id,
                                        fixed_ip=fixed[0].ip_address if fixed else None)
    return {"interfaceAttachment": attachment(port)}


@router.get(INTERFACES + "/{port_id}")
def show_interface(server_id: str, port_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"interfaceAttachment": attachment(svc.compute.get_interface(ctx, server_id, port_id))}


@router.delete(INTERFACES + "/{port_id}", status_code=202)
def detach_interface(server_id: str, port_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.compute.detach_interface(ctx, server_id, port_id, request_id.get())
    return Response(status_code=202)


@router.get("/servers/{server_id}/os-security-groups")
def server_security_groups(server_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"security_groups": [security_group(g) for g in svc.compute.server_security_groups(ctx, server_id)]}
