"""Network entities as the network service hands them out: frozen data with no session behind."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from yunstack.config import NetworkConfig as NetworkConfig  # re-exported: [network] lives in config.py


@dataclass(frozen=True, kw_only=True)
class Standard:
    """The attributes every Neutron resource carries (standard-attr-*)."""

    id: str
    project_id: str
    description: str
    tags: tuple[str, ...]
    revision_number: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class Network(Standard):
    name: str
    admin_state_up: bool
    shared: bool
    external: bool
    port_security_enabled: bool
    mtu: int
    segmentation_id: int
    status: str
    subnets: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Pool:
    start: str
    end: str


@dataclass(frozen=True, kw_only=True)
class HostRoute:
    destination: str
    nexthop: str


@dataclass(frozen=True, kw_only=True)
class SubnetPool(Standard):
    name: str
    ip_version: int
    prefixes: tuple[str, ...]
    default_prefixlen: int
    min_prefixlen: int
    max_prefixlen: int
    shared: bool
    is_default: bool


@dataclass(frozen=True, kw_only=True)
class Subnet(Standard):
    name: str
    network_id: str
    cidr: str
    ip_version: int
    gateway_ip: str | None
    enable_dhcp: bool
    dns_nameservers: tuple[str, ...]
    host_routes: tuple[HostRoute, ...]
    allocation_pools: tuple[Pool, ...]
    ipv6_ra_mode: str | None
    ipv6_address_mode: str | None
    subnetpool_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class FixedIp:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True, kw_only=True)
class AddressPair:
    ip_address: str
    mac_address: str


@dataclass(frozen=True, kw_only=True)
class Port(Standard):
    name: str
    network_id: str
    mac_address: str
    admin_state_up: bool
    status: str
    device_id: str
    device_owner: str
    binding_host: str
    port_security_enabled: bool
    fixed_ips: tuple[FixedIp, ...]
    allowed_address_pairs: tuple[AddressPair, ...]
    security_groups: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class AddressOwner:
    """The server whose compute-bound port holds an address (what the metadata service asks)."""

    instance_id: str
    project_id: str
    host: str


@dataclass(frozen=True, kw_only=True)
class SecurityGroupRule:
    id: str
    project_id: str
    security_group_id: str
    direction: str
    ethertype: str
    protocol: str | None
    port_range_min: int | None
    port_range_max: int | None
    remote_ip_prefix: str | None
    remote_group_id: str | None
    description: str
    revision_number: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class SecurityGroup(Standard):
    name: str
    rules: tuple[SecurityGroupRule, ...]


@dataclass(frozen=True, kw_only=True)
class GatewayInfo:
    network_id: str
    enable_snat: bool
    external_fixed_ips: tuple[FixedIp, ...]


@dataclass(frozen=True, kw_only=True)
class Router(Standard):
    name: str
    admin_state_up: bool
    status: str
    gateway: GatewayInfo | None
    routes: tuple[HostRoute, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RouterInterfaceInfo:
    """What add/remove_router_interface answer."""

    id: str
    project_id: str
    port_id: str
    subnet_id: str
    subnet_ids: tuple[str, ...]
    network_id: str


@dataclass(frozen=True, kw_only=True)
class FloatingIp(Standard):
    floating_ip_address: str
    floating_network_id: str
    router_id: str | None
    port_id: str | None
    fixed_ip_address: str | None
    status: str


@dataclass(frozen=True, kw_only=True)
class QuotaUsage:
    limit: int
    used: int
    reserved: int = 0
