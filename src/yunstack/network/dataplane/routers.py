"""Routers as network namespaces with NAT: ``ys-TT-r-<router>``.

Inside the namespace, one veth end per router interface (``ysqr<port>``, with the interface's
MAC and address, the subnet's gateway) whose host end (``ysTTr<port>``) is plugged into the
internal network's bridge, and one gateway veth (``ysqg<router>``) whose host end (``ysTTg<router>``)
is plugged into the external network's bridge, holding the gateway address and every floating
address (/32).  The namespace forwards (``net.ipv4.ip_forward=1``, in the namespace only) and its
``nat`` table, rewritten as a whole, holds:

- floating IPs: ``PREROUTING/OUTPUT -d FIP -j DNAT --to FIXED`` and
  ``POSTROUTING -s FIXED -o ysqg.. -j SNAT --to FIP``;
- with ``enable_snat``: ``POSTROUTING -s <internal subnet> -o ysqg.. -j SNAT --to <gateway ip>``.

The router's extra routes are ``proto static`` routes in the namespace (``sync_routes``).

The default route of the namespace points at the external subnet's gateway, which is the host's
own address on the host-only external bridge: the host does not forward (its ip_forward and
routes are never changed), so nothing leaves this machine.
"""

from __future__ import annotations

import ipaddress

from yunstack.network.dataplane import _cmd
from yunstack.network.dataplane.naming import router_gateway_ifname
from yunstack.network.desired import HostNetworkState, RouterState, SubnetState


def gateway_subnet(router: RouterState, state: HostNetworkState) -> SubnetState | None:
    """The external subnet that holds the router's gateway address."""
    if not (router.gateway_network_id and router.gateway_ip):
        return None
    ip = ipaddress.ip_address(router.gateway_ip)
    for net in state.networks:
        if net.id != router.gateway_network_id:
            continue
        for subnet in net.subnets:
            if subnet.ip_version == 4 and ip in ipaddress.ip_network(subnet.cidr, strict=False):
                return subnet
    return None


def internal_cidrs(router: RouterState) -> list[str]:
    return sorted({str(ipaddress.ip_interface(f"{i.ip_address}/{i.prefixlen}").network)
                   for i in router.interfaces if _v4(i.ip_address)})


def metadata_networks(router: RouterState) -> dict[str, str]:
    """CIDR -> network id of every internal subnet (what the router's metadata proxy serves)."""
    return {str(ipaddress.ip_interface(f"{i.ip_address}/{i.prefixlen}").network): i.network_id
            for i in router.interfaces if _v4(i.ip_address)}


def gateway_addresses(router: RouterState) -> set[str]:
    if not (router.gateway_ip and router.gateway_prefixlen):
        return set()
    found = {f"{router.gateway_ip}/{router.gateway_prefixlen}"}
    found |= {f"{f.floating_ip_address}/32" for f in router.floating_ips}
    return found


def render_nat(router: RouterState) -> str:
    """``iptables-restore`` text for the namespace's whole ``nat`` table."""
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]"]
    if router.gateway_ip:
        gw = router_gateway_ifname(router.id)
        for fip in sorted(router.floating_ips, key=lambda f: f.floating_ip_address):
            lines.append(f"-A PREROUTING -d {fip.floating_ip_address}/32 -j DNAT "
                         f"--to-destination {fip.fixed_ip_address}")
            lines.append(f"-A OUTPUT -d {fip.floating_ip_address}/32 -j DNAT "
                         f"--to-destination {fip.fixed_ip_address}")
            lines.append(f"-A POSTROUTING -s {fip.fixed_ip_address}/32 -o {gw} -j SNAT "
                         f"--to-source {fip.floating_ip_address}")
        if router.enable_snat:
            for cidr in internal_cidrs(router):
                lines.append(f"-A POSTROUTING -s {cidr} -o {gw} -j SNAT --to-source {router.gateway_ip}")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def connected_routes(router: RouterState) -> list[tuple[str, str]]:
    """The router's extra routes whose nexthop is on one of its connected subnets here (the API
    already insists on that; a route to an interface this host has not plumbed yet waits)."""
    nets = [ipaddress.ip_interface(f"{i.ip_address}/{i.prefixlen}").network for i in router.interfaces]
    if router.gateway_ip and router.gateway_prefixlen:
        nets.append(ipaddress.ip_interface(f"{router.gateway_ip}/{router.gateway_prefixlen}").network)
    out = []
    for destination, nexthop in router.routes:
        hop = ipaddress.ip_address(nexthop)
        if any(hop.version == n.version and hop in n for n in nets):
            out.append((str(ipaddress.ip_network(destination)), str(hop)))
    return sorted(set(out))


def sync_routes(router: RouterState, netns: str) -> bool:
    """Make the namespace's ``proto static`` routes exactly the router's extra routes.

    Only routes we add carry ``proto static``: connected routes are ``kernel`` and the default
    route ``boot``, so they are never touched.  Returns whether anything changed.
    """
    wanted = set(connected_routes(router))
    have: set[tuple[str, str]] = set()
    for family in ("-4", "-6"):
        for entry in _cmd.ip_json(family, "route", "show", "proto", "static", netns=netns):
            dst, via = entry.get("dst"), entry.get("gateway")
            if isinstance(dst, str) and isinstance(via, str) and dst != "default":
                have.add((str(ipaddress.ip_network(dst)), via))
    for destination, nexthop in sorted(have - wanted):
        _cmd.run(["ip", "route", "del", destination, "via", nexthop, "proto", "static"], netns=netns, check=False)
    for destination, nexthop in sorted(wanted - have):
        _cmd.run(["ip", "route", "replace", destination, "via", nexthop, "proto", "static"], netns=netns)
    return have != wanted


def _v4(address: str) -> bool:
    return ipaddress.ip_address(address).version == 4
