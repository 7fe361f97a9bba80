"""The networks page: networks with their subnets (create a network with a subnet, delete) and
routers (create with an external gateway, add or remove a subnet interface, delete)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from yunstack.client.networks import (
    add_interface,
    create_network,
    create_router,
    delete_network,
    delete_router,
    list_networks,
    list_routers,
    remove_interface,
)
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import Form, _dashboard, change, show

PAGE = "/project/networks"


def _load(session: Session) -> dict[str, Any]:
    networks = list_networks(session.client)
    subnets = {s.id: (n, s) for n in networks for s in n.subnets}
    return {"networks": networks, "routers": list_routers(session.client), "subnets": subnets,
            "own_subnets": [(n, s) for n, s in subnets.values() if not n.external]}


async def page(request: Request) -> Response:
    return await show(request, "networks.html", "networks", _load,
                      {"networks": [], "routers": [], "subnets": {}, "own_subnets": []})


async def create(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        name = form.get("name", "").strip()
        if not name:
            raise ValueError("A network needs a name.")
        cidr = form.get("cidr", "").strip()
        create_network(session.client, name, cidr=cidr, gateway_ip=form.get("gateway_ip", "").strip(),
                       enable_dhcp=form.get("enable_dhcp") == "on")
        return f"Created the network {name}" + (f" with the subnet {cidr}." if cidr else ".")

    return await change(request, PAGE, act)


async def delete(request: Request) -> Response:
    network_id = request.path_params["network_id"]

    def act(session: Session, form: Form) -> str:
        delete_network(session.client, network_id)
        return "Deleted the network."

    return await change(request, PAGE, act)


async def create_r(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        name = form.get("name", "").strip()
        if not name:
            raise ValueError("A router needs a name.")
        create_router(session.client, name, form.get("external_network_id", ""))
        return f"Created the router {name}."

    return await change(request, PAGE, act)


async def router_change(request: Request) -> Response:
    router_id, verb = request.path_params["router_id"], request.path_params["verb"]
    if verb not in ("add", "remove", "delete"):
        return _dashboard(request).error(404, f"There is no action {verb!r}.")

    def act(session: Session, form: Form) -> str:
        if verb == "delete":
            delete_router(session.client, router_id)
            return "Deleted the router."
        if not form.get("subnet_id"):
            raise ValueError("Choose a subnet.")
        if verb == "add":
            add_interface(session.client, router_id, form["subnet_id"])
            return "Added the subnet to the router."
        remove_interface(session.client, router_id, form["subnet_id"])
        return "Removed the subnet from the router."

    return await change(request, PAGE, act)
