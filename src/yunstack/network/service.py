"""The network service (Neutron v2.0 use cases): networks and subnets here; the rest in its parts.

``NetworkService`` is assembled from one mixin per concern, each in its own module:
``ports.py`` (ports), ``secgroups.py`` (security groups and rules), ``routers.py`` (routers and
floating IPs), ``subnetpools.py`` (subnet pools) and ``instances.py`` (what the compute service
and the host agent call).  Policy: admins act cloud-wide; members act in their own project;
readers only read.  A network is visible to its project, and to everyone when shared or external
(its subnets only when shared); a resource the caller cannot see is 404, one it can see but may
not change is 403, as in Neutron.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import network as t
from yunstack.errors import Conflict, NotFound
from yunstack.identity.context import AuthContext
from yunstack.network import _common as c
from yunstack.network import ipam
from yunstack.network import models as m
from yunstack.network.changes import NetworkChanges
from yunstack.network.errors import (
    FloatingIPNotFound,
    InvalidInput,
    NetworkInUse,
    NetworkNotFound,
    PolicyNotAuthorized,
    PortNotFound,
    RouterNotFound,
    SecurityGroupNotFound,
    SubnetInUse,
    SubnetNotFound,
    SubnetPoolNotFound,
)
from yunstack.network.instances import InstanceOps
from yunstack.network.ports import PortOps
from yunstack.network.quotas import NetworkQuotas
from yunstack.network.routers import RouterOps
from yunstack.network.secgroups import SecurityGroupOps
from yunstack.network.subnetpools import SubnetPoolOps

IPV6_MODES = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
MAX_SEGMENTATION_ID = 2**24 - 1


def _may_change(ctx: AuthContext, project_id: str, action: str) -> None:
    if not c.owns(ctx, project_id):
        raise PolicyNotAuthorized(action=action)


class NetworkService(PortOps, SecurityGroupOps, RouterOps, SubnetPoolOps, InstanceOps):
    """Neutron v2.0 for the API, plus the calls the compute service and the host agent make."""

    def __init__(self, db: sessionmaker[Session], config: m.NetworkConfig, *, control_host: str,
                 quotas: NetworkQuotas | None = None) -> None:
        super().__init__(db, config, quotas or NetworkQuotas(db), control_host=control_host)
        # Tells the hosts a commit concerns (its ``notify`` is wired to the host hub), so their
        # agents apply a change now rather than at their next period.
        self.changes = NetworkChanges(db, self.network_host)

    # -- networks -------------------------------------------------------------------------------

    def create_network(self, ctx: AuthContext, *, name: str = "", admin_state_up: bool = True,
                       shared: bool = False, external: bool = False, port_security_enabled: bool = True,
                       description: str = "", project_id: str | None = None,
                       provider: dict[str, object] | None = None) -> m.Network:
        """A new network with the next free VXLAN segmentation id; shared/external are admin-only.

        ``provider`` holds the provider:* attributes of the request (admin only, as Neutron):
        ``network_type`` "vxlan" (``local`` for an external network: a bridge on the network host
        alone), no ``physical_network``, and a ``segmentation_id`` (VNI) to take instead of the next.
        """
        c.require_write(ctx, "create_network")
        if shared:
            c.require_admin(ctx, "create_network:shared")
        if external:
            c.require_admin(ctx, "create_network:router:external")
        wanted_vni = self._provider(ctx, external, provider or {})
        project = c.owner(ctx, project_id)
        for _attempt in range(20):
            try:
                with self._db.begin() as s:
                    self.quotas.check(s, project, {"network": 1})
                    top = s.scalar(select(func.max(t.Network.segmentation_id))) or 0
                    vni = wanted_vni or top % MAX_SEGMENTATION_ID + 1
                    row = t.Network(**c.stamp(), name=name, project_id=project, admin_state_up=admin_state_up,
                                    shared=shared, external=external, port_security_enabled=port_security_enabled,
                                    mtu=self.config.tenant_mtu, segmentation_id=vni,
                                    description=description, status="ACTIVE", tags=[])
                    s.add(row)
                    s.flush()
                    return c.networks_of(s, [row])[0]
            except IntegrityError as e:
                if wanted_vni:
                    raise Conflict("Unable to create the network. The tunnel ID {vni} is in use.",
                                   vni=wanted_vni) from e
                continue  # another create took the same segmentation id first
        raise Conflict("Unable to create the network. No tenant network is available for allocation.")

    @staticmethod
    def _provider(ctx: AuthContext, external: bool, provider: dict[str, object]) -> int | None:
        """Check the provider:* attributes of a create; the VNI asked for, if any."""
        if not provider:
            return None
        for attr in provider:
            c.require_admin(ctx, f"create_network:provider:{attr}")
        kind = provider.get("network_type") or ("local" if external else "vxlan")
        if kind != ("local" if external else "vxlan"):
            raise InvalidInput(error_message=f"network_type value '{kind}' not supported")
        if provider.get("physical_network") is not None:
            raise InvalidInput(error_message=f"provider:physical_network specified for {kind} network")
        vni = provider.get("segmentation_id")
        if vni is None:
            return None
        if kind == "local":
            raise InvalidInput(error_message="provider:segmentation_id specified for local network")
        if not isinstance(vni, int) or not 1 <= vni <= MAX_SEGMENTATION_ID:
            raise InvalidInput(error_message=f"{vni} is not a valid VXLAN VNI, 1 to {MAX_SEGMENTATION_ID}")
        return vni

    def list_networks(self, ctx: AuthContext) -> list[m.Network]:
        q = select(t.Network).order_by(t.Network.created_at, t.Network.id)
        if not ctx.is_admin:
            q = q.where(or_(t.Network.project_id == ctx.project_id, t.Network.shared.is_(True),
                            t.Network.external.is_(True)))
        with self._db() as s:
            return c.networks_of(s, list(s.scalars(q)))

    def get_network(self, ctx: AuthContext, network_id: str) -> m.Network:
        with self._db() as s:
            return c.networks_of(s, [c.network_row(s, ctx, network_id)])[0]

    def update_network(self, ctx: AuthContext, network_id: str, *, name: str | None = None,
                       admin_state_up: bool | None = None, shared: bool | None = None,
                       external: bool | None = None, port_security_enabled: bool | None = None,
                       description: str | None = None) -> m.Network:
        c.require_write(ctx, "update_network")
        with self._db.begin() as s:
            row = c.network_row(s, ctx, network_id)
            _may_change(ctx, row.project_id, "update_network")
            if shared is not None and shared != row.shared:
                c.require_admin(ctx, "update_network:shared")
                row.shared = shared
            if external is not None and external != row.external:
                c.require_admin(ctx, "update_network:router:external")
                if not external and s.scalar(select(t.Router.id).where(t.Router.gw_network_id == row.id)):
                    raise NetworkInUse(net_id=row.id)
                row.external = external
            for key, value in (("name", name), ("admin_state_up", admin_state_up),
                               ("port_security_enabled", port_security_enabled), ("description", description)):
                if value is not None:
                    setattr(row, key, value)
            c.touch(row)
            s.flush()
            return c.networks_of(s, [row])[0]

    def delete_network(self, ctx: AuthContext, network_id: str) -> None:
        """409 while any port other than the network's own DHCP port is on it."""
        c.require_write(ctx, "delete_network")
        with self._db.begin() as s:
            row = c.network_row(s, ctx, network_id)
            _may_change(ctx, row.project_id, "delete_network")
            busy = s.scalar(select(t.Port.id).where(t.Port.network_id == row.id,
                                                    t.Port.device_owner.not_in(c.SERVICE_OWNERS)).limit(1))
            if busy is not None or s.scalar(select(t.Router.id).where(t.Router.gw_network_id == row.id)):
                raise NetworkInUse(net_id=row.id)
            for port in s.scalars(select(t.Port).where(t.Port.network_id == row.id)):
                s.delete(port)
            s.flush()
            for subnet in s.scalars(select(t.Subnet).where(t.Subnet.network_id == row.id)):
                s.delete(subnet)
            s.flush()
            s.delete(row)

    # -- subnets --------------------------------------------------------------------------------

    def create_subnet(self, ctx: AuthContext, *, network_id: str, cidr: str | None, ip_version: int = 4,
                      name: str = "", gateway_ip: str | None = None, no_gateway: bool = False,
                      enable_dhcp: bool = True, dns_nameservers: Sequence[str] = (),
                      host_routes: Sequence[tuple[str, str]] = (),
                      allocation_pools: Sequence[tuple[str, str]] | None = None,
                      ipv6_ra_mode: str | None = None, ipv6_address_mode: str | None = None,
                      description: str = "", project_id: str | None = None, subnetpool_id: str | None = None,
                      prefixlen: int | None = None) -> m.Subnet:
        """A subnet; the gateway defaults to the first host (``no_gateway`` for none), the pools to the
        rest.  Bad CIDRs, overlapping or out-of-range pools and overlapping subnets are 400.  With
        ``subnetpool_id`` the CIDR comes from the pool (see ``subnetpools.py``)."""
        c.require_write(ctx, "create_subnet")
        if ip_version not in (4, 6):
            raise InvalidInput(error_message=f"{ip_version} is not in [4, 6]")
        if cidr is None and subnetpool_id is None:
            raise InvalidInput(error_message="A cidr must be specified in the absence of a subnet pool")
        if prefixlen is not None and subnetpool_id is None:
            raise InvalidInput(error_message="prefixlen may only be given with subnetpool_id")
        self._check_v6_modes(ip_version, ipv6_ra_mode, ipv6_address_mode)
        nameservers = ipam.check_nameservers(dns_nameservers)
        with self._db.begin() as s:
            network = c.network_row(s, ctx, network_id)
            _may_change(ctx, network.project_id, "create_subnet")
            project = c.owner(ctx, project_id) if project_id else network.project_id
            self.quotas.check(s, project, {"subnet": 1})
            if subnetpool_id is not None:
                cidr = self._allocate_cidr(s, ctx, subnetpool_id, cidr, prefixlen, ip_version)
            assert cidr is not None
            net = ipam.parse_cidr(cidr, ip_version)
            gateway = None if no_gateway else (ipam.check_gateway(net, gateway_ip) if gateway_ip
                                               else str(ipam.first_host(net)))
            if allocation_pools is None:
                pools = ipam.default_pools(net, gateway)
            else:
                pools = ipam.check_pools(net, allocation_pools, gateway)
            routes = ipam.check_host_routes(net, host_routes)
            for other in s.scalars(select(t.Subnet).where(t.Subnet.network_id == network.id)):
                if ipam.overlaps(other.cidr, str(net)):
                    raise InvalidInput(error_message=f"Requested subnet with cidr: {net} for network: "
                                       f"{network.id} overlaps with another subnet")
            row = t.Subnet(**c.stamp(), network_id=network.id, name=name, project_id=project, cidr=str(net),
                           ip_version=ip_version, gateway_ip=gateway, enable_dhcp=enable_dhcp,
                           dns_nameservers=nameservers, host_routes=routes,
                           allocation_pools=[{"start": a, "end": b} for a, b in pools],
                           ipv6_ra_mode=ipv6_ra_mode, ipv6_address_mode=ipv6_address_mode,
                           description=description, tags=[], subnetpool_id=subnetpool_id)
            s.add(row)
            s.flush()
            if enable_dhcp:
                c.sync_dhcp(s, network)
            c.touch(network)
            return c.subnet_of(row)

    @staticmethod
    def _check_v6_modes(ip_version: int, ra_mode: str | None, address_mode: str | None) -> None:
        for value in (ra_mode, address_mode):
            if value is None:
                continue
            if ip_version != 6:
                raise InvalidInput(error_message="ipv6_ra_mode or ipv6_address_mode cannot be set when "
                                   "enable_dhcp is set to False or ip_version is 4")
            if value not in IPV6_MODES:
                raise InvalidInput(error_message=f"'{value}' is not in {list(IPV6_MODES)}")
        if ra_mode and address_mode and ra_mode != address_mode:
            raise InvalidInput(error_message=f"ipv6_ra_mode set to '{ra_mode}' with ipv6_address_mode set to "
                               f"'{address_mode}' is not valid. If both attributes are set, they must be the "
                               "same value")

    def list_subnets(self, ctx: AuthContext) -> list[m.Subnet]:
        q = select(t.Subnet).join(t.Network, t.Network.id == t.Subnet.network_id) \
            .order_by(t.Subnet.created_at, t.Subnet.id)
        if not ctx.is_admin:
            # Not the subnets of an external network that is not shared (see c.subnet_visible).
            q = q.where(or_(t.Subnet.project_id == ctx.project_id, t.Network.project_id == ctx.project_id,
                            t.Network.shared.is_(True)))
        with self._db() as s:
            return [c.subnet_of(r) for r in s.scalars(q)]

    def get_subnet(self, ctx: AuthContext, subnet_id: str) -> m.Subnet:
        with self._db() as s:
            return c.subnet_of(c.subnet_row(s, ctx, subnet_id))

    def update_subnet(self, ctx: AuthContext, subnet_id: str, *, name: str | None = None,
                      description: str | None = None, gateway_ip: str | None = None, no_gateway: bool = False,
                      enable_dhcp: bool | None = None, dns_nameservers: Sequence[str] | None = None,
                      host_routes: Sequence[tuple[str, str]] | None = None,
                      allocation_pools: Sequence[tuple[str, str]] | None = None) -> m.Subnet:
        c.require_write(ctx, "update_subnet")
        with self._db.begin() as s:
            row = c.subnet_row(s, ctx, subnet_id)
            _may_change(ctx, row.project_id, "update_subnet")
            net = ipaddress.ip_network(row.cidr)
            gateway = row.gateway_ip
            if no_gateway:
                gateway = None
            elif gateway_ip is not None:
                gateway = ipam.check_gateway(net, gateway_ip)
            pools = [(p["start"], p["end"]) for p in row.allocation_pools] if allocation_pools is None \
                else list(allocation_pools)
            pools = ipam.check_pools(net, pools, gateway)
            row.gateway_ip = gateway
            row.allocation_pools = [{"start": a, "end": b} for a, b in pools]
            if dns_nameservers is not None:
                row.dns_nameservers = ipam.check_nameservers(dns_nameservers)
            if host_routes is not None:
                row.host_routes = ipam.check_host_routes(net, host_routes)
            if name is not None:
                row.name = name
            if description is not None:
                row.description = description
            if enable_dhcp is not None:
                row.enable_dhcp = enable_dhcp
            c.touch(row)
            s.flush()
            network = s.get(t.Network, row.network_id)
            if network is not None and enable_dhcp is not None:
                c.sync_dhcp(s, network)
            return c.subnet_of(row)

    def delete_subnet(self, ctx: AuthContext, subnet_id: str) -> None:
        """409 while a port other than the DHCP port holds an address on the subnet."""
        c.require_write(ctx, "delete_subnet")
        with self._db.begin() as s:
            row = c.subnet_row(s, ctx, subnet_id)
            _may_change(ctx, row.project_id, "delete_subnet")
            held = s.scalar(select(t.IpAllocation.id).join(t.Port, t.Port.id == t.IpAllocation.port_id)
                            .where(t.IpAllocation.subnet_id == row.id, t.Port.device_owner != c.DHCP).limit(1))
            if held is not None:
                raise SubnetInUse(subnet_id=row.id)
            network = s.get(t.Network, row.network_id)
            row.enable_dhcp = False
            s.flush()
            if network is not None:
                c.sync_dhcp(s, network)
                c.touch(network)
            s.delete(row)

    # -- bootstrap ------------------------------------------------------------------------------

    def ensure_public_network(self, config: m.NetworkConfig, *, project_id: str) -> m.Network | None:
        """Make the admin-owned external network ``public`` and its subnet if missing (idempotent).

        The subnet is the host side of yunstack's host-only external bridge: no DHCP, the gateway is
        the host's address, and router gateways and floating IPs come from the pool.
        """
        if not config.public_network:
            return None
        with self._db.begin() as s:
            row = s.scalar(select(t.Network).where(t.Network.name == config.public_network,
                                                   t.Network.external.is_(True)))
            if row is None:
                top = s.scalar(select(func.max(t.Network.segmentation_id))) or 0
                row = t.Network(**c.stamp(), name=config.public_network, project_id=project_id,
                                admin_state_up=True, shared=False, external=True, port_security_enabled=True,
                                mtu=1500, segmentation_id=top + 1, description="", status="ACTIVE", tags=[])
                s.add(row)
                s.flush()
            if s.scalar(select(t.Subnet.id).where(t.Subnet.network_id == row.id)) is None:
                net = ipam.parse_cidr(config.public_cidr, ipaddress.ip_network(config.public_cidr).version)
                gateway = ipam.check_gateway(net, config.public_gateway)
                pools = ipam.check_pools(net, [(config.public_pool_start, config.public_pool_end)], gateway)
                s.add(t.Subnet(**c.stamp(), network_id=row.id, name=config.public_subnet, project_id=project_id,
                               cidr=str(net), ip_version=net.version, gateway_ip=gateway, enable_dhcp=False,
                               dns_nameservers=[], host_routes=[],
                               allocation_pools=[{"start": a, "end": b} for a, b in pools], description="",
                               tags=[]))
                s.flush()
            return c.networks_of(s, [row])[0]

    # -- tags (standard-attr-tag) ---------------------------------------------------------------

    def tags(self, ctx: AuthContext, collection: str, resource_id: str) -> list[str]:
        with self._db() as s:
            return list(self._tagged(s, ctx, collection, resource_id, write=False).tags or [])

    def update_tags(self, ctx: AuthContext, collection: str, resource_id: str, *,
                    replace: Sequence[str] | None = None, add: str | None = None,
                    remove: str | None = None) -> list[str]:
        """Replace all tags, add one or remove one (404 when it is absent)."""
        c.require_write(ctx, "update_tags")
        with self._db.begin() as s:
            row = self._tagged(s, ctx, collection, resource_id, write=True)
            tags = list(row.tags or [])
            if replace is not None:
                tags = list(dict.fromkeys(replace))
            if add is not None and add not in tags:
                tags.append(add)
            if remove is not None:
                if remove not in tags:
                    raise NotFound("Tag {tag} could not be found for {resource} {id}.", tag=remove,
                                   resource=collection, id=resource_id)
                tags.remove(remove)
            for tag in tags:
                if not 1 <= len(tag) <= 255 or "," in tag:
                    raise InvalidInput(error_message=f"'{tag}' is not a valid tag")
            row.tags = tags
            c.touch(row)
            return tags

    def _tagged(self, s: Session, ctx: AuthContext, collection: str, resource_id: str, *, write: bool) -> Any:
        kinds: dict[str, tuple[Any, type[NotFound]]] = {
            "networks": (t.Network, NetworkNotFound), "subnets": (t.Subnet, SubnetNotFound),
            "subnetpools": (t.SubnetPool, SubnetPoolNotFound),
            "ports": (t.Port, PortNotFound), "routers": (t.Router, RouterNotFound),
            "floatingips": (t.FloatingIp, FloatingIPNotFound), "security-groups": (t.SecurityGroup,
                                                                                  SecurityGroupNotFound)}
        if collection not in kinds:
            raise NotFound("The resource could not be found.")
        table, missing = kinds[collection]
        row = s.get(table, resource_id)
        if row is None:
            raise missing(id=resource_id)
        if collection == "networks" and not write and c.network_visible(ctx, row):
            return row
        if collection == "subnets":
            c.subnet_row(s, ctx, resource_id)
            if not write or c.owns(ctx, row.project_id):
                return row
        if not c.owns(ctx, row.project_id):
            raise missing(id=resource_id)
        return row
