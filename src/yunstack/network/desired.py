"""The desired network state of one host: what the control plane wants the dataplane to look like.

The network service computes it from the database (``NetworkService.host_state(host)``); the
agent's network reconciler hands it to the dataplane driver, which makes the host match it
(idempotently) and removes anything of ours that is not in it.  Because the whole state is
re-applied, a restart of either side never leaves a stray bridge, tap, namespace, rule or dnsmasq.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class AllocationPool:
    start: str
    end: str


@dataclass(frozen=True, kw_only=True)
class SubnetState:
    id: str
    network_id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None
    enable_dhcp: bool
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[tuple[str, str], ...] = ()  # (destination cidr, nexthop)
    allocation_pools: tuple[AllocationPool, ...] = ()
    dhcp_ip: str | None = None  # the DHCP port's address on this subnet, when DHCP is on
    ipv6_ra_mode: str | None = None  # "slaac" | "dhcpv6-stateful" | "dhcpv6-stateless" | None
    ipv6_address_mode: str | None = None  # likewise; None: the guest is on its own (Neutron's meaning)


@dataclass(frozen=True, kw_only=True)
class NetworkState:
    id: str
    name: str
    mtu: int
    external: bool
    subnets: tuple[SubnetState, ...]
    segmentation_id: int  # VXLAN VNI between hosts; unique per network
    dhcp_mac: str | None = None
    # The VXLAN tunnel of this network on this host; None: no other host shares the network (or
    # this host has no tunnel address), so the bridge needs no VXLAN device.
    tunnel: TunnelState | None = None


@dataclass(frozen=True, kw_only=True)
class FdbEntry:
    """One unicast forwarding entry of a VXLAN device: frames for ``mac`` go to the VTEP ``dst``.

    ``mac`` all zeros is the default entry: broadcast, unknown unicast and multicast (BUM) frames
    are copied to every such ``dst`` (head-end replication), so no multicast group is needed.
    """

    mac: str
    dst: str


FLOOD_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True, kw_only=True)
class TunnelState:
    """What the VXLAN device of one network on one host carries (computed by the control plane).

    ``peers`` are the tunnel addresses of the other hosts with this network (one flood entry
    each); ``fdb`` holds those flood entries plus one entry per port MAC on another host.
    """

    vni: int
    peers: tuple[str, ...]
    fdb: tuple[FdbEntry, ...]


@dataclass(frozen=True, kw_only=True)
class FixedIp:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True, kw_only=True)
class SecurityGroupRule:
    id: str
    direction: str  # "ingress" | "egress"
    ethertype: str  # "IPv4" | "IPv6"
    protocol: str | None  # "tcp" | "udp" | "icmp" | "ipv6-icmp" | a number | None for any
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class SecurityGroupState:
    id: str
    rules: tuple[SecurityGroupRule, ...]
    member_ips: tuple[str, ...] = ()  # fixed IPs of ports in this group (for remote_group_id rules)


@dataclass(frozen=True, kw_only=True)
class PortState:
    """A VM port bound to this host; the tap is plugged into the network's bridge."""

    id: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[FixedIp, ...]
    device_id: str
    device_owner: str
    hostname: str
    tap: str  # interface name on the host, derived from the id (<= 15 characters)
    port_security_enabled: bool = True
    security_group_ids: tuple[str, ...] = ()
    allowed_address_pairs: tuple[tuple[str, str | None], ...] = ()  # (ip or cidr, mac)


@dataclass(frozen=True, kw_only=True)
class RouterInterface:
    port_id: str
    subnet_id: str
    network_id: str
    ip_address: str
    prefixlen: int
    mac_address: str


@dataclass(frozen=True, kw_only=True)
class FloatingIpState:
    id: str
    floating_ip_address: str
    fixed_ip_address: str
    port_id: str


@dataclass(frozen=True, kw_only=True)
class RouterState:
    id: str
    gateway_network_id: str | None
    gateway_ip: str | None
    gateway_prefixlen: int | None
    gateway_mac: str | None
    enable_snat: bool
    interfaces: tuple[RouterInterface, ...]
    floating_ips: tuple[FloatingIpState, ...] = ()
    # Extra routes (destination CIDR, nexthop) the router namespace carries.
    routes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class MetadataTarget:
    """Which instance owns an address on a network: the metadata proxy answers it with its own data."""

    network_id: str
    ip_address: str
    instance_id: str


@dataclass(frozen=True, kw_only=True)
class HostNetworkState:
    """Everything one host's dataplane realises.

    ``network_host``: this host serves DHCP, routers, floating IPs and the metadata proxy (the
    control host unless configured otherwise; in the all-in-one cloud the only host).  A compute
    host only gets bridges, VXLAN devices, taps and the security groups of its own ports.
    ``tunnel_ip`` is this host's VXLAN endpoint (empty: none; the host only has local bridges).
    ``dhcp_ports`` (network host only): the VM ports on other hosts, which its DHCP and DNS serve
    across the tunnels; nothing of them (tap, security group) is realised here.
    """

    host: str
    network_host: bool = True
    tunnel_ip: str = ""
    networks: tuple[NetworkState, ...] = ()
    ports: tuple[PortState, ...] = ()
    dhcp_ports: tuple[PortState, ...] = ()
    security_groups: tuple[SecurityGroupState, ...] = ()
    routers: tuple[RouterState, ...] = ()
    metadata: tuple[MetadataTarget, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)


def tap_name(port_id: str) -> str:
    """The host interface name of a port: ``ystap`` + the first 10 hex digits of its id."""
    return "ystap" + port_id.replace("-", "")[:10]


def bridge_name(network_id: str) -> str:
    return "ysbr" + network_id.replace("-", "")[:11]
