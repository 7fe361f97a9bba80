"""Networks, subnets, routers, ports, floating IPs and security groups (Neutron v2.0) as the dashboard shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yunstack.client.http import YunClient

V2 = "/v2.0"


@dataclass(frozen=True, kw_only=True)
class Subnet:
    id: str
    name: str
    network_id: str
    cidr: str
    gateway_ip: str
    enable_dhcp: bool


@dataclass(frozen=True, kw_only=True)
class Network:
    id: str
    name: str
    status: str
    shared: bool
    external: bool
    project_id: str
    subnets: tuple[Subnet, ...]


@dataclass(frozen=True, kw_only=True)
class Router:
    id: str
    name: str
    status: str
    external_network_id: str
    subnet_ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SecurityGroupRule:
    id: str
    direction: str
    ethertype: str
    protocol: str
    port_range: str
    remote: str


@dataclass(frozen=True, kw_only=True)
class SecurityGroup:
    id: str
    name: str
    description: str
    rules: tuple[SecurityGroupRule, ...]


def list_networks(client: YunClient) -> list[Network]:
    """The networks the token's project sees (its own, shared and external), each with its subnets."""
    nets = client.get("network", f"{V2}/networks")["networks"]
    subnets: dict[str, list[Subnet]] = {}
    for s in client.get("network", f"{V2}/subnets")["subnets"]:
        subnets.setdefault(str(s["network_id"]), []).append(
            Subnet(id=str(s["id"]), name=str(s.get("name") or ""), network_id=str(s["network_id"]),
                   cidr=str(s["cidr"]), gateway_ip=str(s.get("gateway_ip") or ""),
                   enable_dhcp=bool(s.get("enable_dhcp"))))
    return sorted((Network(id=str(n["id"]), name=str(n.get("name") or ""), status=str(n.get("status", "")),
                           shared=bool(n.get("shared")), external=bool(n.get("router:external")),
                           project_id=str(n.get("project_id") or n.get("tenant_id") or ""),
                           subnets=tuple(subnets.get(str(n["id"]), ()))) for n in nets),
                  key=lambda n: (n.external, n.name))


def create_network(client: YunClient, name: str, *, cidr: str = "", gateway_ip: str = "",
                   enable_dhcp: bool = True) -> str:
    """A network and, when ``cidr`` is given, its IPv4 subnet (``gateway_ip`` empty: the first
    address).  Should the subnet be refused, the network is deleted again; its id."""
    net = client.post("network", f"{V2}/networks", json={"network": {"name": name}})["network"]
    if cidr:
        subnet: dict[str, object] = {"network_id": net["id"], "name": f"{name}-subnet", "ip_version": 4,
                                     "cidr": cidr, "enable_dhcp": enable_dhcp}
        if gateway_ip:
            subnet["gateway_ip"] = gateway_ip
        try:
            client.post("network", f"{V2}/subnets", json={"subnet": subnet})
        except BaseException:
            client.delete("network", f"{V2}/networks/{net['id']}")
            raise
    return str(net["id"])


def delete_network(client: YunClient, network_id: str) -> None:
    client.delete("network", f"{V2}/networks/{network_id}")


def list_routers(client: YunClient) -> list[Router]:
    routers = client.get("network", f"{V2}/routers")["routers"]
    ports = client.get("network", f"{V2}/ports", params={"device_owner": "network:router_interface"})["ports"]
    subnets: dict[str, list[str]] = {}
    for p in ports:
        subnets.setdefault(str(p.get("device_id")), []).extend(str(ip["subnet_id"]) for ip in p.get("fixed_ips", []))
    return [Router(id=str(r["id"]), name=str(r.get("name") or ""), status=str(r.get("status", "")),
                   external_network_id=str((r.get("external_gateway_info") or {}).get("network_id") or ""),
                   subnet_ids=tuple(subnets.get(str(r["id"]), ()))) for r in routers]


def create_router(client: YunClient, name: str, external_network_id: str = "") -> str:
    router: dict[str, object] = {"name": name}
    if external_network_id:
        router["external_gateway_info"] = {"network_id": external_network_id}
    return str(client.post("network", f"{V2}/routers", json={"router": router})["router"]["id"])


def add_interface(client: YunClient, router_id: str, subnet_id: str) -> None:
    client.put("network", f"{V2}/routers/{router_id}/add_router_interface", json={"subnet_id": subnet_id})


def remove_interface(client: YunClient, router_id: str, subnet_id: str) -> None:
    client.put("network", f"{V2}/routers/{router_id}/remove_router_interface", json={"subnet_id": subnet_id})


def delete_router(client: YunClient, router_id: str) -> None:
    client.delete("network", f"{V2}/routers/{router_id}")


def list_security_groups(client: YunClient) -> list[SecurityGroup]:
    groups = client.get("network", f"{V2}/security-groups")["security_groups"]
    out = []
    for g in groups:
        rules = []
        for r in g.get("security_group_rules") or []:
            low, high = r.get("port_range_min"), r.get("port_range_max")
            ports = "any" if low is None else str(low) if low == high else f"{low}-{high}"
            remote = str(r.get("remote_ip_prefix") or (f"group {r['remote_group_id'][:8]}"
                                                        if r.get("remote_group_id") else "any"))
            rules.append(SecurityGroupRule(id=str(r["id"]), direction=str(r["direction"]),
                                           ethertype=str(r.get("ethertype", "")),
                                           protocol=str(r.get("protocol") or "any"), port_range=ports, remote=remote))
        out.append(SecurityGroup(id=str(g["id"]), name=str(g["name"]), description=str(g.get("description") or ""),
                                 rules=tuple(rules)))
    return sorted(out, key=lambda g: g.name)


def create_security_group(client: YunClient, name: str, description: str = "") -> str:
    body = {"security_group": {"name": name, "description": description}}
    return str(client.post("network", f"{V2}/security-groups", json=body)["security_group"]["id"])


def delete_security_group(client: YunClient, group_id: str) -> None:
    client.delete("network", f"{V2}/security-groups/{group_id}")


def add_rule(client: YunClient, group_id: str, *, direction: str = "ingress", protocol: str = "",
             port_min: int | None = None, port_max: int | None = None, remote_ip_prefix: str = "",
             ethertype: str = "IPv4") -> str:
    """One rule; an empty ``protocol`` is any, ports only with tcp or udp."""
    rule: dict[str, object] = {"security_group_id": group_id, "direction": direction, "ethertype": ethertype}
    if protocol:
        rule["protocol"] = protocol
    if port_min is not None:
        rule["port_range_min"] = port_min
        rule["port_range_max"] = port_max if port_max is not None else port_min
    if remote_ip_prefix:
        rule["remote_ip_prefix"] = remote_ip_prefix
    return str(client.post("network", f"{V2}/security-group-rules",
                           json={"security_group_rule": rule})["security_group_rule"]["id"])


def delete_rule(client: YunClient, rule_id: str) -> None:
    client.delete("network", f"{V2}/security-group-rules/{rule_id}")


@dataclass(frozen=True, kw_only=True)
class Port:
    """A port of the project: on which network, whose (``device_id``: a server's id for ``compute:*``)."""

    id: str
    name: str
    network_id: str
    device_id: str
    device_owner: str
    fixed_ips: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class FloatingIp:
    id: str
    address: str
    network_id: str
    port_id: str
    fixed_ip: str
    router_id: str
    status: str


def _port(p: dict[str, Any]) -> Port:
    return Port(id=str(p["id"]), name=str(p.get("name") or ""), network_id=str(p["network_id"]),
                device_id=str(p.get("device_id") or ""), device_owner=str(p.get("device_owner") or ""),
                fixed_ips=tuple(str(ip["ip_address"]) for ip in p.get("fixed_ips") or []))


def _floating(f: dict[str, Any]) -> FloatingIp:
    return FloatingIp(id=str(f["id"]), address=str(f.get("floating_ip_address") or ""),
                      network_id=str(f.get("floating_network_id") or ""), port_id=str(f.get("port_id") or ""),
                      fixed_ip=str(f.get("fixed_ip_address") or ""), router_id=str(f.get("router_id") or ""),
                      status=str(f.get("status") or ""))


def list_server_ports(client: YunClient, server_id: str = "") -> list[Port]:
    """The ports of the project's servers (``compute:*``), or of one server."""
    params = {"device_id": server_id} if server_id else {}
    ports = client.get("network", f"{V2}/ports", params=params)["ports"]
    return [_port(p) for p in ports if str(p.get("device_owner") or "").startswith("compute:")]


def list_floating_ips(client: YunClient) -> list[FloatingIp]:
    """The project's floating IPs, by address."""
    found = client.get("network", f"{V2}/floatingips")["floatingips"]
    return sorted((_floating(f) for f in found), key=lambda f: f.address)


def allocate_floating_ip(client: YunClient, network_id: str) -> FloatingIp:
    """A floating IP from the external network ``network_id``'s pool, associated with nothing."""
    body = {"floatingip": {"floating_network_id": network_id}}
    return _floating(client.post("network", f"{V2}/floatingips", json=body)["floatingip"])


def associate_floating_ip(client: YunClient, floating_ip_id: str, port_id: str) -> FloatingIp:
    """Point the floating IP at ``port_id`` (its first fixed address); the API needs a router between
    the port's subnet and the floating IP's network."""
    body = {"floatingip": {"port_id": port_id}}
    return _floating(client.put("network", f"{V2}/floatingips/{floating_ip_id}", json=body)["floatingip"])


def disassociate_floating_ip(client: YunClient, floating_ip_id: str) -> FloatingIp:
    body = {"floatingip": {"port_id": None}}
    return _floating(client.put("network", f"{V2}/floatingips/{floating_ip_id}", json=body)["floatingip"])


def release_floating_ip(client: YunClient, floating_ip_id: str) -> None:
    client.delete("network", f"{V2}/floatingips/{floating_ip_id}")
