"""What every part of the network service shares: rows to entities, visibility, IPAM, MACs, DHCP ports.

IPAM: an address is taken by inserting an ``ip_allocation`` row inside a SAVEPOINT.  The
UNIQUE (subnet_id, ip_address) constraint refuses a second holder, whichever process inserted
first; the loser rolls back only its savepoint and tries the next candidate.  On PostgreSQL a
concurrent insert of the same address waits for the first transaction and then fails, so two
transactions never both commit one address.  On SQLite the port row is always written (and the
database's single write lock taken) before any savepoint, because pysqlite starts a transaction
only at the first write and a SAVEPOINT issued outside one would commit on release.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import network as t
from yunstack.identity.context import AuthContext
from yunstack.network import ipam
from yunstack.network import models as m
from yunstack.network.errors import (
    InvalidInput,
    IpAddressAlreadyAllocated,
    IpAddressGenerationFailure,
    MacAddressInUse,
    NetworkNotFound,
    PolicyNotAuthorized,
    PortNotFound,
    SubnetNotFound,
)
from yunstack.network.quotas import NetworkQuotas
from yunstack.types import new_uuid, utcnow

DHCP = "network:dhcp"
ROUTER_INTERFACE = "network:router_interface"
ROUTER_GATEWAY = "network:router_gateway"
FLOATINGIP = "network:floatingip"
COMPUTE = "compute:nova"
# Ports the network itself owns: they never keep a network "in use" and go with it.
SERVICE_OWNERS = (DHCP,)
MAC_PREFIX = "fa:16:3e"


def _no_servers(server_id: str) -> str | None:
    return None


class Base:
    """State shared by the service's parts (mixins of ``NetworkService``).

    ``server_project`` answers which project owns a server id (None: no such server).  The
    composition root hands in the compute service's answer; the network service needs it to keep
    a port's ``device_id`` from naming another project's server (the metadata service and a
    server's ``addresses`` trust that binding).
    """

    def __init__(self, db: sessionmaker[Session], config: m.NetworkConfig, quotas: NetworkQuotas, *,
                 control_host: str) -> None:
        self._db = db
        self.config = config
        self.quotas = quotas
        self.control_host = control_host
        # DHCP, routers, floating IPs and metadata run here (the control host unless configured).
        self.network_host = config.network_host or control_host
        self.server_project: Callable[[str], str | None] = _no_servers


# -- policy ------------------------------------------------------------------------------------

def require_write(ctx: AuthContext, action: str) -> None:
    if not ctx.can_write:
        raise PolicyNotAuthorized(action=action)


def require_admin(ctx: AuthContext, action: str) -> None:
    if not ctx.is_admin:
        raise PolicyNotAuthorized(action=action)


def owner(ctx: AuthContext, requested: str | None) -> str:
    """The project a new resource belongs to: the caller's, or (admins only) the one asked for."""
    mine = ctx.project_id or ""
    if requested and requested != mine:
        if not ctx.is_admin:
            raise InvalidInput(error_message="Specifying 'project_id' or 'tenant_id' other than the "
                               "authenticated project in request requires admin privileges")
        return requested
    return mine


def owns(ctx: AuthContext, project_id: str) -> bool:
    return ctx.is_admin or project_id == ctx.project_id


def network_visible(ctx: AuthContext, row: t.Network) -> bool:
    return owns(ctx, row.project_id) or row.shared or row.external


def touch(row: Any) -> None:
    row.revision_number = (row.revision_number or 0) + 1
    row.updated_at = utcnow()


def stamp() -> dict[str, Any]:
    now = utcnow()
    return {"id": new_uuid(), "created_at": now, "updated_at": now, "revision_number": 0}


# -- rows --------------------------------------------------------------------------------------

def network_row(s: Session, ctx: AuthContext, network_id: str) -> t.Network:
    row = s.get(t.Network, network_id)
    if row is None or not network_visible(ctx, row):
        raise NetworkNotFound(id=network_id)
    return row


def subnet_visible(ctx: AuthContext, row: t.Subnet, net: t.Network) -> bool:
    """A subnet is seen by its project, the network's project and, on a shared network, everyone.

    An external network is visible to all (to pick it for gateways and floating IPs), but its
    subnets are not, unless it is also shared: Neutron keeps them to the owner and admins.
    """
    return owns(ctx, row.project_id) or owns(ctx, net.project_id) or net.shared


def subnet_row(s: Session, ctx: AuthContext, subnet_id: str) -> t.Subnet:
    row = s.get(t.Subnet, subnet_id)
    if row is None:
        raise SubnetNotFound(id=subnet_id)
    net = s.get(t.Network, row.network_id)
    if net is None or not subnet_visible(ctx, row, net):
        raise SubnetNotFound(id=subnet_id)
    return row


def port_row(s: Session, ctx: AuthContext, port_id: str) -> t.Port:
    row = s.get(t.Port, port_id)
    if row is None or not owns(ctx, row.project_id):
        raise PortNotFound(id=port_id)
    return row


# -- entities ----------------------------------------------------------------------------------

def _std(row: Any) -> dict[str, Any]:
    return {"id": row.id, "project_id": row.project_id, "description": row.description or "",
            "tags": tuple(row.tags or ()), "revision_number": row.revision_number,
            "created_at": row.created_at, "updated_at": row.updated_at}


def networks_of(s: Session, rows: Sequence[t.Network]) -> list[m.Network]:
    subnets: dict[str, list[str]] = defaultdict(list)
    ids = [r.id for r in rows]
    if ids:
        for sid, nid in s.execute(select(t.Subnet.id, t.Subnet.network_id)
                                  .where(t.Subnet.network_id.in_(ids)).order_by(t.Subnet.created_at)):
            subnets[nid].append(sid)
    return [m.Network(**_std(r), name=r.name, admin_state_up=r.admin_state_up, shared=r.shared,
                      external=r.external, port_security_enabled=r.port_security_enabled, mtu=r.mtu,
                      segmentation_id=r.segmentation_id, status=r.status, subnets=tuple(subnets[r.id]))
            for r in rows]


def subnet_of(r: t.Subnet) -> m.Subnet:
    return m.Subnet(**_std(r), name=r.name, network_id=r.network_id, cidr=r.cidr, ip_version=r.ip_version,
                    gateway_ip=r.gateway_ip, enable_dhcp=r.enable_dhcp, dns_nameservers=tuple(r.dns_nameservers),
                    host_routes=tuple(m.HostRoute(**h) for h in r.host_routes),
                    allocation_pools=tuple(m.Pool(**p) for p in r.allocation_pools),
                    ipv6_ra_mode=r.ipv6_ra_mode, ipv6_address_mode=r.ipv6_address_mode,
                    subnetpool_id=r.subnetpool_id)


def fixed_ips_of(s: Session, port_ids: Iterable[str]) -> dict[str, list[m.FixedIp]]:
    out: dict[str, list[m.FixedIp]] = defaultdict(list)
    ids = list(port_ids)
    if ids:
        for a in s.scalars(select(t.IpAllocation).where(t.IpAllocation.port_id.in_(ids))
                           .order_by(t.IpAllocation.id)):
            out[a.port_id].append(m.FixedIp(subnet_id=a.subnet_id, ip_address=a.ip_address))
    return out


def groups_of(s: Session, port_ids: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    ids = list(port_ids)
    if ids:
        for pid, gid in s.execute(select(t.PortSecurityGroup.port_id, t.PortSecurityGroup.security_group_id)
                                  .where(t.PortSecurityGroup.port_id.in_(ids))):
            out[pid].append(gid)
    return out


def ports_of(s: Session, rows: Sequence[t.Port]) -> list[m.Port]:
    ids = [r.id for r in rows]
    ips, groups = fixed_ips_of(s, ids), groups_of(s, ids)
    return [m.Port(**_std(r), name=r.name, network_id=r.network_id, mac_address=r.mac_address,
                   admin_state_up=r.admin_state_up, status=r.status, device_id=r.device_id,
                   device_owner=r.device_owner, binding_host=r.binding_host,
                   port_security_enabled=r.port_security_enabled, fixed_ips=tuple(ips[r.id]),
                   allowed_address_pairs=tuple(m.AddressPair(**p) for p in r.allowed_address_pairs),
                   security_groups=tuple(sorted(groups[r.id])))
            for r in rows]


def port_status(device_owner: str, device_id: str, binding_host: str) -> str:
    if device_owner.startswith("network:"):
        return "ACTIVE" if device_owner != FLOATINGIP else "N/A"
    return "ACTIVE" if device_id and binding_host else "DOWN"


# -- MACs and addresses ------------------------------------------------------------------------

def normalize_mac(mac: str, field: str = "mac_address") -> str:
    """``mac`` as six lower-case hex pairs; 400 naming ``field`` for anything else.

    Every MAC we store ends up in iptables/nft rules and dnsmasq host files on the hosts: one bad
    value would break the firewall update of every project on the host, so nothing unchecked
    gets through (multicast and all-zero addresses are refused too, as Neutron does).
    """
    parts = mac.lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise InvalidInput(error_message=f"{field} '{mac}' is not a valid MAC address")
    value = ":".join(parts)
    if int(parts[0], 16) & 1 or value == "00:00:00:00:00:00":
        raise InvalidInput(error_message=f"{field} '{mac}' is not a valid unicast MAC address")
    return value


def check_mac(s: Session, network_id: str, mac: str) -> str:
    value = normalize_mac(mac)
    if s.scalar(select(t.Port.id).where(t.Port.network_id == network_id, t.Port.mac_address == value)):
        raise MacAddressInUse(net_id=network_id, mac=value)
    return value


def new_mac(s: Session, network_id: str) -> str:
    """A random fa:16:3e MAC not yet used on the network (the constraint catches the rest)."""
    while True:
        mac = MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))
        if not s.scalar(select(t.Port.id).where(t.Port.network_id == network_id, t.Port.mac_address == mac)):
            return mac


def _insert(s: Session, port: t.Port, subnet: t.Subnet, ip: str) -> bool:
    try:
        with s.begin_nested():
            s.add(t.IpAllocation(port_id=port.id, subnet_id=subnet.id, network_id=subnet.network_id,
                                 ip_address=ip))
            s.flush()
    except IntegrityError:
        return False
    return True


def used_addresses(s: Session, subnet_id: str) -> set[str]:
    return set(s.scalars(select(t.IpAllocation.ip_address).where(t.IpAllocation.subnet_id == subnet_id)))


def allocate(s: Session, port: t.Port, subnet: t.Subnet, ip: str | None = None) -> str | None:
    """Give ``port`` an address on ``subnet``: ``ip`` if asked (409 if taken), else the first free one
    in the pools (None when none is left).  The port row must already be flushed (see above)."""
    if ip is not None:
        net = ipaddress.ip_network(subnet.cidr)
        addr = ipam.address(ip)
        if addr.version != net.version or addr not in net or (
                net.version == 4 and addr in (net.network_address, net.broadcast_address)):
            raise InvalidInput(error_message=f"IP address {ip} is not a valid IP for the specified subnet.")
        if not _insert(s, port, subnet, str(addr)):
            raise IpAddressAlreadyAllocated(ip=str(addr), subnet_id=subnet.id)
        return str(addr)
    if auto_address(subnet) and not port.device_owner.startswith("network:"):
        # The guest makes its own address from the RA and its MAC, so IPAM records that one (as
        # Neutron does); any other would be one the port's anti-spoofing rules let nobody use.
        own = ipam.eui64(subnet.cidr, port.mac_address)
        return own if _insert(s, port, subnet, own) else None
    pools = [(p["start"], p["end"]) for p in subnet.allocation_pools]
    for candidate in ipam.candidates(pools, used_addresses(s, subnet.id)):
        if _insert(s, port, subnet, candidate):
            return candidate
    return None


def auto_address(subnet: t.Subnet) -> bool:
    """Whether a guest on ``subnet`` makes its own address (SLAAC; a /64 is what EUI-64 needs)."""
    return (subnet.ip_version == 6 and subnet.ipv6_address_mode in ("slaac", "dhcpv6-stateless")
            and ipam.prefixlen(subnet.cidr) == 64)


def assign_fixed_ips(s: Session, port: t.Port, requested: Sequence[dict[str, str | None]] | None) -> None:
    """Allocate the port's addresses: those asked for, or one per IP version from the network."""
    subnets = list(s.scalars(select(t.Subnet).where(t.Subnet.network_id == port.network_id)
                             .order_by(t.Subnet.created_at)))
    if requested is None:
        for version in (4, 6):
            family = [sn for sn in subnets if sn.ip_version == version]
            if family and not any(allocate(s, port, sn) for sn in family):
                raise IpAddressGenerationFailure(net_id=port.network_id)
        return
    by_id = {sn.id: sn for sn in subnets}
    for item in requested:
        subnet_id, ip = item.get("subnet_id"), item.get("ip_address")
        if subnet_id is not None and subnet_id not in by_id:
            raise InvalidInput(error_message=f"Failed to create port on network {port.network_id}, because "
                               f"fixed_ips included invalid subnet {subnet_id}")
        if subnet_id is None:
            if ip is None:
                raise InvalidInput(error_message="Exactly one of subnet_id or ip_address must be given")
            found = [sn for sn in subnets if ipam.contains(sn.cidr, ip)] if _is_ip(ip) else []
            if not found:
                raise InvalidInput(error_message=f"IP address {ip} is not a valid IP for the specified subnet.")
            subnet_id = found[0].id
        if allocate(s, port, by_id[subnet_id], ip) is None:
            raise IpAddressGenerationFailure(net_id=port.network_id)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def new_port(s: Session, *, network: t.Network, project_id: str, device_owner: str = "", device_id: str = "",
             binding_host: str = "", name: str = "", mac: str | None = None,
             fixed_ips: Sequence[dict[str, str | None]] | None = None, port_security: bool | None = None,
             address_pairs: Sequence[dict[str, str]] = (), group_ids: Sequence[str] = (),
             auto_delete: bool = False, hostname: str = "", description: str = "",
             admin_state_up: bool = True) -> t.Port:
    """Insert a port with its addresses and groups (all inside the caller's transaction)."""
    secure = network.port_security_enabled if port_security is None else port_security
    row = t.Port(**stamp(), network_id=network.id, name=name, project_id=project_id,
                 mac_address=check_mac(s, network.id, mac) if mac else new_mac(s, network.id),
                 admin_state_up=admin_state_up, status=port_status(device_owner, device_id, binding_host),
                 device_id=device_id, device_owner=device_owner, binding_host=binding_host,
                 port_security_enabled=secure, allowed_address_pairs=list(address_pairs), hostname=hostname,
                 auto_delete=auto_delete, description=description, tags=[])
    s.add(row)
    s.flush()
    assign_fixed_ips(s, row, fixed_ips)
    for gid in dict.fromkeys(group_ids):
        s.add(t.PortSecurityGroup(port_id=row.id, security_group_id=gid))
    s.flush()
    return row


# -- DHCP ports --------------------------------------------------------------------------------

def sync_dhcp(s: Session, network: t.Network) -> None:
    """One network:dhcp port per network, with an address on each DHCP-enabled subnet (none if none)."""
    dhcp_subnets = list(s.scalars(select(t.Subnet).where(t.Subnet.network_id == network.id,
                                                         t.Subnet.enable_dhcp.is_(True))
                                  .order_by(t.Subnet.created_at)))
    port = s.scalar(select(t.Port).where(t.Port.network_id == network.id, t.Port.device_owner == DHCP))
    if not dhcp_subnets:
        if port is not None:
            s.delete(port)
            s.flush()
        return
    if port is None:
        port = new_port(s, network=network, project_id=network.project_id, device_owner=DHCP,
                        device_id=f"dhcp-{network.id}", fixed_ips=[])
    held = {a.subnet_id: a for a in s.scalars(select(t.IpAllocation).where(t.IpAllocation.port_id == port.id))}
    wanted = {sn.id for sn in dhcp_subnets}
    for subnet_id, alloc in held.items():
        if subnet_id not in wanted:
            s.delete(alloc)
    for sn in dhcp_subnets:
        if sn.id not in held and allocate(s, port, sn) is None:
            raise IpAddressGenerationFailure(net_id=network.id)
    touch(port)
    s.flush()
