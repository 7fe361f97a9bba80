"""Which host gets what, and where each MAC lives: the pure part of a host's desired state.

Roles (as in Neutron with a network node and ML2/linuxbridge with l2population):

- the *network host* (the control host unless ``[network] network_host`` names another) serves
  DHCP, routers, floating IPs and the metadata proxy of every network, so it has every network;
- a *compute host* has only the networks of the VM ports bound to it: their bridges, taps, VXLAN
  devices and security groups.

Between hosts each network is a VXLAN segment (VNI = the network's segmentation id).  No
multicast and no learning: the control plane tells each host, for each of its networks, the
tunnel addresses of the other hosts with that network (one all-zeros flood entry each: head-end
replication of broadcast, unknown unicast and multicast) and the VTEP of every MAC on another
host (ports bound there; DHCP and router ports live on the network host).

Everything here is a function of plain data, so the role split and the forwarding entries are
unit-tested without a database (``NetworkService.host_state`` feeds them from its queries).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from yunstack.network.desired import FLOOD_MAC, FdbEntry, TunnelState

# Ports that sit on the network host whatever their binding says: DHCP servers and routers.
NETWORK_HOST_OWNERS = frozenset({"network:dhcp", "network:router_interface", "network:router_gateway"})
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8


@dataclass(frozen=True, kw_only=True)
class PortPlace:
    """Where one port's MAC is: its network, MAC, and the host it is on."""

    network_id: str
    mac_address: str
    host: str


def tenant_mtu(underlay_mtu: int) -> int:
    """The MTU of a VXLAN tenant network over an IPv4 underlay of ``underlay_mtu``."""
    return underlay_mtu - VXLAN_OVERHEAD


def port_host(device_owner: str, binding_host: str, network_host: str) -> str | None:
    """The host a port's MAC is on: compute's binding host, the network host for DHCP and routers.

    None for a port that is on no host (unbound, a floating IP's placeholder).
    """
    if device_owner in NETWORK_HOST_OWNERS:
        return network_host
    if device_owner.startswith("compute:") and binding_host:
        return binding_host
    return None


def is_network_host(host: str, network_host: str) -> bool:
    return host == network_host


def networks_of_host(host: str, network_host: str, all_networks: Iterable[str],
                     places: Iterable[PortPlace]) -> list[str]:
    """The ids of the networks ``host`` realises, in ``all_networks``' order.

    The network host has every network (its DHCP and routers serve them all); a compute host has
    the networks of the ports on it.
    """
    if is_network_host(host, network_host):
        return list(all_networks)
    mine = {p.network_id for p in places if p.host == host}
    return [n for n in all_networks if n in mine]


def hosts_by_network(network_host: str, all_networks: Iterable[str],
                     places: Iterable[PortPlace]) -> dict[str, set[str]]:
    """network id -> every host that realises it (the network host has them all)."""
    out: dict[str, set[str]] = defaultdict(set)
    for n in all_networks:
        out[n].add(network_host)
    for p in places:
        out[p.network_id].add(p.host)
    return dict(out)


def tunnel(host: str, network_id: str, vni: int, hosts: Collection[str], tunnels: Mapping[str, str],
           places: Iterable[PortPlace]) -> TunnelState | None:
    """The VXLAN device of ``network_id`` on ``host``, or None when none is needed.

    ``hosts`` realise the network (``hosts_by_network``); ``tunnels`` maps a host to its tunnel
    address (hosts that reported none are left out: nothing can reach them).  A host without a
    tunnel address, or whose network no other tunnelled host shares, gets no device: the
    single-host cloud looks exactly as before VXLAN.
    """
    local = tunnels.get(host, "")
    if not local:
        return None
    peers = sorted({tunnels[h] for h in hosts if h != host and tunnels.get(h) and tunnels[h] != local},
                   key=_ip_key)
    if not peers:
        return None
    fdb = {FdbEntry(mac=FLOOD_MAC, dst=peer) for peer in peers}
    for p in places:
        dst = tunnels.get(p.host, "")
        if p.network_id == network_id and p.host != host and dst and dst != local:
            fdb.add(FdbEntry(mac=p.mac_address.lower(), dst=dst))
    return TunnelState(vni=vni, peers=tuple(peers),
                       fdb=tuple(sorted(fdb, key=lambda e: (e.mac != FLOOD_MAC, e.mac, _ip_key(e.dst)))))


def _ip_key(ip: str) -> tuple[int, int, str]:
    """Numeric order for addresses (10.0.0.9 before 10.0.0.10); anything else after, by text."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (7, 0, ip)
    return (addr.version, int(addr), "")
