"""The floating IPs page: allocate one from an external network, associate it with a server's port,
disassociate it, release it.  (A server's page offers the association too: ``instances.py``.)"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from yunstack.client import ApiError, YunClient
from yunstack.client.networks import (
    FloatingIp,
    allocate_floating_ip,
    associate_floating_ip,
    disassociate_floating_ip,
    list_floating_ips,
    list_networks,
    list_server_ports,
    release_floating_ip,
)
from yunstack.client.servers import list_servers
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import Form, _dashboard, change, show

PAGE = "/project/floating-ips"


def associate(client: YunClient, floating_ip_id: str, port_id: str) -> FloatingIp:
    """Associate; Neutron answers 404 also when no router joins the port's subnet to the floating IP's
    network: that one is said as a message on the page, not as a 404 page (which is for an id that is
    not the project's)."""
    try:
        return associate_floating_ip(client, floating_ip_id, port_id)
    except ApiError as exc:
        if exc.status == 404 and any(f.id == floating_ip_id for f in list_floating_ips(client)):
            raise ValueError(exc.message) from exc
        raise


def _load(session: Session) -> dict[str, Any]:
    client = session.client
    ports = list_server_ports(client)
    servers = {s.id: s.name for s in list_servers(client)} if ports else {}
    return {"floating_ips": list_floating_ips(client), "networks": {n.id: n for n in list_networks(client)},
            "ports": {p.id: p for p in ports}, "servers": servers}


async def page(request: Request) -> Response:
    return await show(request, "floating_ips.html", "floating-ips", _load,
                      {"floating_ips": [], "networks": {}, "ports": {}, "servers": {}})


async def allocate(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        if not form.get("network_id"):
            raise ValueError("Choose an external network.")
        made = allocate_floating_ip(session.client, form["network_id"])
        return f"Allocated the floating IP {made.address}."

    return await change(request, PAGE, act)


async def floating_change(request: Request) -> Response:
    fip_id, verb = request.path_params["floating_ip_id"], request.path_params["verb"]
    if verb not in ("associate", "disassociate", "release"):
        return _dashboard(request).error(404, f"There is no action {verb!r}.")

    def act(session: Session, form: Form) -> str:
        if verb == "release":
            release_floating_ip(session.client, fip_id)
            return "Released the floating IP."
        if verb == "disassociate":
            done = disassociate_floating_ip(session.client, fip_id)
            return f"Disassociated the floating IP {done.address}."
        if not form.get("port_id"):
            raise ValueError("Choose a server's port.")
        done = associate(session.client, fip_id, form["port_id"])
        return f"Associated the floating IP {done.address} with {done.fixed_ip}."

    return await change(request, PAGE, act)
