"""The networks page: networks with their subnets (create a network with a subnet, delete) and
routers (create with an external gateway, add or remove a subnet interface, delete); and the
network topology page, a picture of them with the servers on them (``topology.py`` draws it)."""

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
    list_server_ports,
    remove_interface,
)
from yunstack.client.servers import list_servers
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.topology import TopologyDevice, TopologyNetwork, topology_svg
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


def _topology(session: Session) -> dict[str, Any]:
    networks = list_networks(session.client)
    on: dict[str, set[str]] = {}  # server id -> the networks of its ports
    for port in list_server_ports(session.client):
        on.setdefault(port.device_id, set()).add(port.network_id)
    of_subnet = {s.id: n.id for n in networks for s in n.subnets}
    routers = [TopologyDevice(id=r.id, name=r.name, kind="router",
                              network_ids=tuple(dict.fromkeys(of_subnet[s] for s in r.subnet_ids if s in of_subnet)),
                              gateway_network_id=r.external_network_id)
               for r in sorted(list_routers(session.client), key=lambda r: r.name)]
    servers = [TopologyDevice(id=s.id, name=s.name, kind="server", network_ids=tuple(sorted(on.get(s.id, ()))))
               for s in sorted(list_servers(session.client), key=lambda s: s.name)]
    picture = topology_svg([TopologyNetwork(id=n.id, name=n.name, external=n.external,
                                            cidrs=tuple(s.cidr for s in n.subnets)) for n in networks],
                           routers + servers)
    return {"picture": picture, "counts": (len(networks), len(routers), len(servers))}


async def topology(request: Request) -> Response:
    return await show(request, "topology.html", "networks", _topology, {"picture": None, "counts": (0, 0, 0)})


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
