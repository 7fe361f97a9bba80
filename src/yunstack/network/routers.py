"""Routers (external gateway, interfaces) and floating IPs (associate, disassociate).

A router's gateway and interfaces are ports (``network:router_gateway`` and
``network:router_interface``, device_id = the router); a floating IP holds its address through a
``network:floatingip`` port on the external network.  Gateway and floating IP ports belong to no
project (``""``), as in Neutron, so only admins see them in port lists.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from yunstack.db.tables import network as t
from yunstack.errors import BadRequest, Conflict
from yunstack.identity.context import AuthContext
from yunstack.network import _common as c
from yunstack.network import ipam
from yunstack.network import models as m
from yunstack.network.changes import forget_port_groups
from yunstack.network.errors import (
    ExternalGatewayForFloatingIPNotFound,
    FloatingIPNotFound,
    FloatingIPPortAlreadyAssociated,
    InvalidInput,
    InvalidRoutes,
    NetworkNotFound,
    PortInUse,
    RouterInterfaceInUseByRoute,
    RouterInterfaceNotFound,
    RouterInUse,
    RouterNotFound,
)
from yunstack.network.ports import _disassociate, delete_port_row


@dataclass(frozen=True, kw_only=True)
class GatewayRequest:
    network_id: str
    enable_snat: bool | None = None
    external_fixed_ips: tuple[dict[str, str | None], ...] | None = None


def _bad(what: str, msg: str) -> BadRequest:
    return BadRequest("Bad {what} request: {msg}.", what=what, msg=msg)


def _routers_of(s: Session, rows: Sequence[t.Router]) -> list[m.Router]:
    gw_ports = [r.gw_port_id for r in rows if r.gw_port_id]
    ips = c.fixed_ips_of(s, gw_ports)
    out = []
    for r in rows:
        gateway = None
        if r.gw_network_id is not None:
            gateway = m.GatewayInfo(network_id=r.gw_network_id, enable_snat=r.enable_snat,
                                    external_fixed_ips=tuple(ips.get(r.gw_port_id or "", ())))
        out.append(m.Router(id=r.id, project_id=r.project_id, description=r.description or "",
                            tags=tuple(r.tags or ()), revision_number=r.revision_number, created_at=r.created_at,
                            updated_at=r.updated_at, name=r.name, admin_state_up=r.admin_state_up,
                            status=r.status, gateway=gateway,
                            routes=tuple(m.HostRoute(**x) for x in r.routes or ())))
    return out


def _fip_of(r: t.FloatingIp) -> m.FloatingIp:
    return m.FloatingIp(id=r.id, project_id=r.project_id, description=r.description or "",
                        tags=tuple(r.tags or ()), revision_number=r.revision_number, created_at=r.created_at,
                        updated_at=r.updated_at, floating_ip_address=r.floating_ip_address,
                        floating_network_id=r.floating_network_id, router_id=r.router_id, port_id=r.port_id,
                        fixed_ip_address=r.fixed_ip_address, status=r.status)


MAX_ROUTES = 30  # Neutron's max_routes default


def _route_key(route: dict[str, str]) -> tuple[str, str]:
    return route["destination"], route["nexthop"]


def _normalize_routes(routes: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """Well-formed routes (destination a CIDR without host bits, nexthop an address of the same
    family), normalized and without duplicates; 400 naming the route otherwise."""
    out: list[dict[str, str]] = []
    for destination, nexthop in routes:
        try:
            dest = ipaddress.ip_network(destination.strip())
        except ValueError as e:
            raise InvalidInput(error_message=f"routes destination '{destination}' is not a valid CIDR without "
                               "host bits") from e
        hop = ipam.address(nexthop, "routes nexthop")
        if dest.version != hop.version:
            raise InvalidInput(error_message=f"routes: destination {dest} and nexthop {hop} are not of the same "
                               "IP version")
        item = {"destination": str(dest), "nexthop": str(hop)}
        if item not in out:
            out.append(item)
    return out


def _interface_ports(s: Session, router_id: str) -> list[t.Port]:
    return list(s.scalars(select(t.Port).where(t.Port.device_id == router_id,
                                               t.Port.device_owner == c.ROUTER_INTERFACE)))


class RouterOps(c.Base):
    def _router_row(self, s: Session, ctx: AuthContext, router_id: str) -> t.Router:
        row = s.get(t.Router, router_id)
        if row is None or not c.owns(ctx, row.project_id):
            raise RouterNotFound(id=router_id)
        return row

    def create_router(self, ctx: AuthContext, *, name: str = "", admin_state_up: bool = True, description: str = "",
                      gateway: GatewayRequest | None = None, project_id: str | None = None) -> m.Router:
        c.require_write(ctx, "create_router")
        project = c.owner(ctx, project_id)
        with self._db.begin() as s:
            self.quotas.check(s, project, {"router": 1})
            row = t.Router(**c.stamp(), name=name, project_id=project, admin_state_up=admin_state_up,
                           status="ACTIVE", enable_snat=True, description=description, tags=[])
            s.add(row)
            s.flush()
            if gateway is not None:
                self._set_gateway(s, ctx, row, gateway)
            return _routers_of(s, [row])[0]

    def list_routers(self, ctx: AuthContext) -> list[m.Router]:
        q = select(t.Router).order_by(t.Router.created_at, t.Router.id)
        if not ctx.is_admin:
            q = q.where(t.Router.project_id == ctx.project_id)
        with self._db() as s:
            return _routers_of(s, list(s.scalars(q)))

    def get_router(self, ctx: AuthContext, router_id: str) -> m.Router:
        with self._db() as s:
            return _routers_of(s, [self._router_row(s, ctx, router_id)])[0]

    def update_router(self, ctx: AuthContext, router_id: str, *, name: str | None = None,
                      admin_state_up: bool | None = None, description: str | None = None,
                      gateway: GatewayRequest | None = None, clear_gateway: bool = False,
                      routes: Sequence[tuple[str, str]] | None = None) -> m.Router:
        """``gateway`` sets (or changes) the external gateway, ``clear_gateway`` removes it;
        ``routes`` replaces the extra routes."""
        c.require_write(ctx, "update_router")
        with self._db.begin() as s:
            row = self._router_row(s, ctx, router_id)
            if clear_gateway:
                self._clear_gateway(s, row)
            elif gateway is not None:
                self._set_gateway(s, ctx, row, gateway)
            if routes is not None:
                self._set_routes(s, row, _normalize_routes(routes))
            for key, value in (("name", name), ("admin_state_up", admin_state_up), ("description", description)):
                if value is not None:
                    setattr(row, key, value)
            c.touch(row)
            s.flush()
            return _routers_of(s, [row])[0]

    def update_extra_routes(self, ctx: AuthContext, router_id: str, routes: Sequence[tuple[str, str]], *,
                            add: bool) -> m.Router:
        """``add_extraroutes`` / ``remove_extraroutes`` (extraroute-atomic): add routes not there yet,
        or remove those given (absent ones are ignored), in one transaction."""
        c.require_write(ctx, "update_router")
        wanted = _normalize_routes(routes)
        with self._db.begin() as s:
            row = self._router_row(s, ctx, router_id)
            current = [dict(r) for r in row.routes or ()]
            if add:
                result = current + [r for r in wanted if r not in current]
            else:
                result = [r for r in current if r not in wanted]
            self._set_routes(s, row, result)
            c.touch(row)
            s.flush()
            return _routers_of(s, [row])[0]

    def _router_cidrs(self, s: Session, row: t.Router) -> tuple[list[str], set[str]]:
        """The CIDRs of the subnets the router has a port on, and the router's own addresses."""
        ports = _interface_ports(s, row.id)
        if row.gw_port_id:
            gw = s.get(t.Port, row.gw_port_id)
            if gw is not None:
                ports.append(gw)
        cidrs, own = [], set()
        for fixed in (f for held in c.fixed_ips_of(s, [p.id for p in ports]).values() for f in held):
            subnet = s.get(t.Subnet, fixed.subnet_id)
            if subnet is not None:
                cidrs.append(subnet.cidr)
            own.add(fixed.ip_address)
        return cidrs, own

    def _set_routes(self, s: Session, row: t.Router, routes: list[dict[str, str]]) -> None:
        """Neutron's rule: each nexthop is on a subnet the router is connected to, and is not one of
        the router's own addresses; at most MAX_ROUTES routes."""
        if len(routes) > MAX_ROUTES:
            raise BadRequest("Number of routes exceeds the limit {n}.", n=MAX_ROUTES)
        cidrs, own = self._router_cidrs(s, row)
        for route in routes:
            hop = route["nexthop"]
            if hop in own:
                raise InvalidRoutes(routes=route, reason=f"the nexthop is used by router {row.id}")
            if not any(ipam.contains(cidr, hop) for cidr in cidrs):
                raise InvalidRoutes(routes=route, reason=f"the nexthop is not connected with router {row.id}")
        row.routes = routes

    def _set_gateway(self, s: Session, ctx: AuthContext, row: t.Router, gw: GatewayRequest) -> None:
        if gw.enable_snat is not None and gw.enable_snat != row.enable_snat:
            c.require_admin(ctx, "update_router:external_gateway_info:enable_snat")
        if gw.external_fixed_ips is not None:
            c.require_admin(ctx, "update_router:external_gateway_info:external_fixed_ips")
        network = s.get(t.Network, gw.network_id)
        if network is None or not c.network_visible(ctx, network):
            raise NetworkNotFound(id=gw.network_id)
        if not network.external:
            raise _bad("router", f"Network {network.id} is not an external network")
        if gw.enable_snat is not None:
            row.enable_snat = gw.enable_snat
        if row.gw_network_id == network.id and row.gw_port_id and gw.external_fixed_ips is None:
            return
        if row.gw_network_id is not None:
            self._clear_gateway(s, row)
        port = c.new_port(s, network=network, project_id="", device_owner=c.ROUTER_GATEWAY, device_id=row.id,
                          fixed_ips=list(gw.external_fixed_ips) if gw.external_fixed_ips else None,
                          port_security=False)
        row.gw_network_id, row.gw_port_id = network.id, port.id

    def _clear_gateway(self, s: Session, row: t.Router) -> None:
        if row.gw_network_id is None:
            return
        if s.scalar(select(t.FloatingIp.id).where(t.FloatingIp.router_id == row.id).limit(1)) is not None:
            raise Conflict("Gateway cannot be updated for router {router_id}, since a gateway to external network "
                           "{net_id} is required by one or more floating IPs.", router_id=row.id,
                           net_id=row.gw_network_id)
        port = s.get(t.Port, row.gw_port_id) if row.gw_port_id else None
        row.gw_network_id, row.gw_port_id = None, None
        s.flush()
        if port is not None:
            delete_port_row(s, port)

    def delete_router(self, ctx: AuthContext, router_id: str) -> None:
        c.require_write(ctx, "delete_router")
        with self._db.begin() as s:
            row = self._router_row(s, ctx, router_id)
            if _interface_ports(s, row.id):
                raise RouterInUse(router_id=row.id)
            self._clear_gateway(s, row)
            s.delete(row)

    # -- interfaces -----------------------------------------------------------------------------

    def add_router_interface(self, ctx: AuthContext, router_id: str, *, subnet_id: str | None = None,
                             port_id: str | None = None) -> m.RouterInterfaceInfo:
        """Attach a subnet (a new port on its gateway IP) or an unused port of the caller's."""
        c.require_write(ctx, "add_router_interface")
        if (subnet_id is None) == (port_id is None):
            raise _bad("router", "Either subnet_id or port_id must be specified")
        with self._db.begin() as s:
            router = self._router_row(s, ctx, router_id)
            if subnet_id is not None:
                subnet = c.subnet_row(s, ctx, subnet_id)
                if subnet.gateway_ip is None:
                    raise _bad("router", f"Subnet {subnet.id} does not have a gateway IP")
                self._check_overlap(s, router, [subnet])
                network = s.get(t.Network, subnet.network_id)
                assert network is not None
                port = c.new_port(s, network=network, project_id=router.project_id,
                                  device_owner=c.ROUTER_INTERFACE, device_id=router.id,
                                  fixed_ips=[{"subnet_id": subnet.id, "ip_address": subnet.gateway_ip}],
                                  port_security=False)
            else:
                port = c.port_row(s, ctx, port_id or "")
                if port.device_id or port.device_owner:
                    raise PortInUse(port_id=port.id, net_id=port.network_id, device_id=port.device_id)
                held = c.fixed_ips_of(s, [port.id])[port.id]
                if not held:
                    raise _bad("router", "Router port must have at least one fixed IP")
                subnets = [sn for sn in (s.get(t.Subnet, f.subnet_id) for f in held) if sn is not None]
                self._check_overlap(s, router, subnets)
                port.device_id, port.device_owner, port.status = router.id, c.ROUTER_INTERFACE, "ACTIVE"
                forget_port_groups(s, port.id)
                port.port_security_enabled = False
            c.touch(router)
            s.flush()
            return self._interface_info(s, router, port)

    def _check_overlap(self, s: Session, router: t.Router, subnets: Sequence[t.Subnet]) -> None:
        for port in _interface_ports(s, router.id):
            for fixed in c.fixed_ips_of(s, [port.id])[port.id]:
                other = s.get(t.Subnet, fixed.subnet_id)
                for subnet in subnets:
                    if other is None:
                        continue
                    if other.id == subnet.id:
                        raise _bad("router", f"Router already has a port on subnet {subnet.id}")
                    if ipam.overlaps(other.cidr, subnet.cidr):
                        raise _bad("router", f"Cidr {subnet.cidr} of subnet {subnet.id} overlaps with cidr "
                                   f"{other.cidr} of subnet {other.id}")

    def _interface_info(self, s: Session, router: t.Router, port: t.Port) -> m.RouterInterfaceInfo:
        subnet_ids = tuple(f.subnet_id for f in c.fixed_ips_of(s, [port.id])[port.id])
        return m.RouterInterfaceInfo(id=router.id, project_id=router.project_id, port_id=port.id,
                                     subnet_id=subnet_ids[0] if subnet_ids else "", subnet_ids=subnet_ids,
                                     network_id=port.network_id)

    def remove_router_interface(self, ctx: AuthContext, router_id: str, *, subnet_id: str | None = None,
                                port_id: str | None = None) -> m.RouterInterfaceInfo:
        c.require_write(ctx, "remove_router_interface")
        if subnet_id is None and port_id is None:
            raise _bad("router", "Either subnet_id or port_id must be specified")
        with self._db.begin() as s:
            router = self._router_row(s, ctx, router_id)
            found = None
            for port in _interface_ports(s, router.id):
                subnets = {f.subnet_id for f in c.fixed_ips_of(s, [port.id])[port.id]}
                if (port_id is None or port.id == port_id) and (subnet_id is None or subnet_id in subnets):
                    found = port
                    break
            if found is None:
                if port_id is not None:
                    raise RouterInterfaceNotFound(router_id=router.id, port_id=port_id)
                raise RouterInterfaceNotFound("Router {router_id} has no interface on subnet {subnet_id}",
                                              router_id=router.id, subnet_id=subnet_id)
            info = self._interface_info(s, router, found)
            cidrs = [sn.cidr for sn in (s.get(t.Subnet, i) for i in info.subnet_ids) if sn is not None]
            for route in router.routes or ():
                if any(ipam.contains(cidr, route["nexthop"]) for cidr in cidrs):
                    raise RouterInterfaceInUseByRoute(subnet_id=info.subnet_id, router_id=router.id)
            for fip in s.scalars(select(t.FloatingIp).where(t.FloatingIp.router_id == router.id)):
                held = c.fixed_ips_of(s, [fip.port_id])[fip.port_id] if fip.port_id else []
                if any(f.subnet_id in info.subnet_ids and f.ip_address == fip.fixed_ip_address for f in held):
                    raise Conflict("Router interface for subnet {subnet_id} on router {router_id} cannot be "
                                   "deleted, as it is required by one or more floating IPs.",
                                   subnet_id=info.subnet_id, router_id=router.id)
            delete_port_row(s, found)
            c.touch(router)
            return info

    # -- floating IPs ---------------------------------------------------------------------------

    def _fip_row(self, s: Session, ctx: AuthContext, fip_id: str) -> t.FloatingIp:
        row = s.get(t.FloatingIp, fip_id)
        if row is None or not c.owns(ctx, row.project_id):
            raise FloatingIPNotFound(id=fip_id)
        return row

    def create_floatingip(self, ctx: AuthContext, *, floating_network_id: str, port_id: str | None = None,
                          fixed_ip_address: str | None = None, floating_ip_address: str | None = None,
                          subnet_id: str | None = None, description: str = "",
                          project_id: str | None = None) -> m.FloatingIp:
        """An address from the external network's subnet; associated at once when ``port_id`` is given."""
        c.require_write(ctx, "create_floatingip")
        if floating_ip_address is not None:
            c.require_admin(ctx, "create_floatingip:floating_ip_address")
        project = c.owner(ctx, project_id)
        with self._db.begin() as s:
            network = c.network_row(s, ctx, floating_network_id)
            if not network.external:
                raise _bad("floatingip", f"Network {network.id} is not a valid external network")
            self.quotas.check(s, project, {"floatingip": 1})
            fip_id = c.stamp()["id"]
            wanted: list[dict[str, str | None]] | None = None
            if floating_ip_address is not None or subnet_id is not None:
                wanted = [{"subnet_id": subnet_id, "ip_address": floating_ip_address}]
            port = c.new_port(s, network=network, project_id="", device_owner=c.FLOATINGIP, device_id=fip_id,
                              fixed_ips=wanted, port_security=False)
            v4 = [f for f in c.fixed_ips_of(s, [port.id])[port.id] if ":" not in f.ip_address]
            if not v4:
                raise _bad("floatingip", f"Network {network.id} has no IPv4 subnet for floating IPs")
            row = t.FloatingIp(**{**c.stamp(), "id": fip_id}, project_id=project,
                               floating_ip_address=v4[0].ip_address, floating_network_id=network.id,
                               floating_port_id=port.id, status="DOWN", description=description, tags=[])
            s.add(row)
            s.flush()
            if port_id is not None:
                self._associate(s, ctx, row, port_id, fixed_ip_address)
            return _fip_of(row)

    def _associate(self, s: Session, ctx: AuthContext, fip: t.FloatingIp, port_id: str,
                   fixed_ip_address: str | None) -> None:
        port = c.port_row(s, ctx, port_id)
        v4 = [f for f in c.fixed_ips_of(s, [port.id])[port.id] if ":" not in f.ip_address]
        if fixed_ip_address is not None:
            chosen = [f for f in v4 if f.ip_address == fixed_ip_address]
            if not chosen:
                raise _bad("floatingip", f"Port {port.id} does not have fixed ip {fixed_ip_address}")
        elif len(v4) > 1:
            raise _bad("floatingip", f"Port {port.id} has multiple fixed IPv4 addresses. Must provide a specific "
                       "IPv4 address when assigning a floating IP")
        elif not v4:
            raise _bad("floatingip", f"Port {port.id} does not have any IPv4 address")
        else:
            chosen = v4
        fixed = chosen[0]
        router_id = self._router_for(s, fip.floating_network_id, fixed.subnet_id)
        if router_id is None:
            raise ExternalGatewayForFloatingIPNotFound(external_network_id=fip.floating_network_id,
                                                       subnet_id=fixed.subnet_id, port_id=port.id)
        other = s.scalar(select(t.FloatingIp).where(t.FloatingIp.port_id == port.id,
                                                    t.FloatingIp.fixed_ip_address == fixed.ip_address,
                                                    t.FloatingIp.id != fip.id))
        if other is not None:
            raise FloatingIPPortAlreadyAssociated(floating_ip_address=fip.floating_ip_address, fip_id=fip.id,
                                                  port_id=port.id, fixed_ip=fixed.ip_address,
                                                  net_id=fip.floating_network_id)
        fip.port_id, fip.fixed_ip_address, fip.router_id, fip.status = port.id, fixed.ip_address, router_id, "ACTIVE"
        c.touch(fip)

    @staticmethod
    def _router_for(s: Session, external_network_id: str, subnet_id: str) -> str | None:
        """A router with a gateway on the external network and an interface on the subnet."""
        q = (select(t.Router.id).join(t.Port, t.Port.device_id == t.Router.id)
             .join(t.IpAllocation, t.IpAllocation.port_id == t.Port.id)
             .where(t.Router.gw_network_id == external_network_id, t.Port.device_owner == c.ROUTER_INTERFACE,
                    t.IpAllocation.subnet_id == subnet_id).order_by(t.Router.created_at).limit(1))
        return s.scalar(q)

    def list_floatingips(self, ctx: AuthContext) -> list[m.FloatingIp]:
        q = select(t.FloatingIp).order_by(t.FloatingIp.created_at, t.FloatingIp.id)
        if not ctx.is_admin:
            q = q.where(t.FloatingIp.project_id == ctx.project_id)
        with self._db() as s:
            return [_fip_of(r) for r in s.scalars(q)]

    def get_floatingip(self, ctx: AuthContext, fip_id: str) -> m.FloatingIp:
        with self._db() as s:
            return _fip_of(self._fip_row(s, ctx, fip_id))

    def update_floatingip(self, ctx: AuthContext, fip_id: str, *, port_id: str | None = None,
                          disassociate: bool = False, fixed_ip_address: str | None = None,
                          description: str | None = None) -> m.FloatingIp:
        """``port_id`` associates (or moves) the address; ``disassociate`` (port_id: null) frees it."""
        c.require_write(ctx, "update_floatingip")
        with self._db.begin() as s:
            row = self._fip_row(s, ctx, fip_id)
            if disassociate:
                _disassociate(row)
            elif port_id is not None:
                self._associate(s, ctx, row, port_id, fixed_ip_address)
            if description is not None:
                row.description = description
                c.touch(row)
            s.flush()
            return _fip_of(row)

    def delete_floatingip(self, ctx: AuthContext, fip_id: str) -> None:
        c.require_write(ctx, "delete_floatingip")
        with self._db.begin() as s:
            row = self._fip_row(s, ctx, fip_id)
            port = s.get(t.Port, row.floating_port_id)
            s.delete(row)
            s.flush()
            if port is not None:
                s.delete(port)
