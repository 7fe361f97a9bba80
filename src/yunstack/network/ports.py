"""Ports: fixed IPs from the IPAM, MACs, device owner, binding host, port security and address pairs."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from yunstack.db.tables import network as t
from yunstack.errors import Conflict
from yunstack.identity.context import AuthContext
from yunstack.network import _common as c
from yunstack.network import models as m
from yunstack.network.errors import InvalidInput, PolicyNotAuthorized
from yunstack.network.secgroups import ensure_default_group, resolve_groups

FixedIpRequest = dict[str, str | None]


def check_address_pairs(pairs: Sequence[dict[str, str | None]], mac: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for pair in pairs:
        raw = pair.get("ip_address")
        if not raw:
            raise InvalidInput(error_message="Allowed address pair must have an ip_address")
        try:
            ip = str(ipaddress.ip_interface(raw).network) if "/" in raw else str(ipaddress.ip_address(raw))
        except ValueError as e:
            raise InvalidInput(error_message=f"'{raw}' is not a valid IP address") from e
        item = {"ip_address": ip, "mac_address": (pair.get("mac_address") or mac).lower()}
        if item in out:
            raise InvalidInput(error_message="Duplicate address detected")
        out.append(item)
    return out


class PortOps(c.Base):
    @staticmethod
    def _port_groups(s: Session, project_id: str, secure: bool, security_groups: Sequence[str] | None,
                     default_id: str | None = None) -> list[str]:
        # Never opens a second connection: the default group was ensured before the transaction
        # (nested connections from many threads could exhaust the pool).
        if security_groups is None:
            return [default_id] if secure and default_id else []
        if security_groups and not secure:
            raise InvalidInput(error_message="Port has security group associated. Cannot disable port security "
                               "or ip address until security group is removed")
        return resolve_groups(s, project_id, security_groups)

    def create_port(self, ctx: AuthContext, *, network_id: str, name: str = "", admin_state_up: bool = True,
                    mac_address: str | None = None, fixed_ips: Sequence[FixedIpRequest] | None = None,
                    device_id: str = "", device_owner: str = "", binding_host: str = "",
                    port_security_enabled: bool | None = None,
                    allowed_address_pairs: Sequence[dict[str, str | None]] = (),
                    security_groups: Sequence[str] | None = None, description: str = "",
                    project_id: str | None = None) -> m.Port:
        """A port with addresses from the network's subnets (409 when none is left) and the project's
        default security group unless groups are given or port security is off."""
        c.require_write(ctx, "create_port")
        if device_owner.startswith("network:"):
            c.require_admin(ctx, "create_port:device_owner")
        if binding_host:
            c.require_admin(ctx, "create_port:binding:host_id")
        project = c.owner(ctx, project_id)
        with self._db() as s:
            network = c.network_row(s, ctx, network_id)
            if not (c.owns(ctx, network.project_id) or network.shared):
                raise PolicyNotAuthorized(action="create_port")
            secure = network.port_security_enabled if port_security_enabled is None else port_security_enabled
        default_id = ensure_default_group(self._db, project) if security_groups is None and secure else None
        if allowed_address_pairs and not secure:
            raise InvalidInput(error_message="Port Security must be enabled in order to have allowed address "
                               "pairs on a port.")
        with self._db.begin() as s:
            network = c.network_row(s, ctx, network_id)
            self.quotas.check(s, project, {"port": 1})
            groups = self._port_groups(s, project, secure, security_groups, default_id)
            row = c.new_port(s, network=network, project_id=project, device_owner=device_owner,
                             device_id=device_id, binding_host=binding_host, name=name, mac=mac_address,
                             fixed_ips=fixed_ips, port_security=secure, group_ids=groups,
                             description=description, admin_state_up=admin_state_up)
            row.allowed_address_pairs = check_address_pairs(allowed_address_pairs, row.mac_address)
            s.flush()
            return c.ports_of(s, [row])[0]

    def list_ports(self, ctx: AuthContext, *, device_ids: Sequence[str] = ()) -> list[m.Port]:
        q = select(t.Port).order_by(t.Port.created_at, t.Port.id)
        if device_ids:
            q = q.where(t.Port.device_id.in_(device_ids))
        if not ctx.is_admin:
            mine = select(t.Network.id).where(t.Network.project_id == ctx.project_id)
            q = q.where(or_(t.Port.project_id == ctx.project_id, t.Port.network_id.in_(mine)))
        with self._db() as s:
            return c.ports_of(s, list(s.scalars(q)))

    def get_port(self, ctx: AuthContext, port_id: str) -> m.Port:
        with self._db() as s:
            return c.ports_of(s, [self._visible_port(s, ctx, port_id)])[0]

    def _visible_port(self, s: Session, ctx: AuthContext, port_id: str) -> t.Port:
        row = s.get(t.Port, port_id)
        if row is not None and not c.owns(ctx, row.project_id):
            net = s.get(t.Network, row.network_id)
            if net is not None and net.project_id == ctx.project_id:
                return row
        return c.port_row(s, ctx, port_id)

    def update_port(self, ctx: AuthContext, port_id: str, *, name: str | None = None,
                    admin_state_up: bool | None = None, device_id: str | None = None,
                    device_owner: str | None = None, binding_host: str | None = None,
                    fixed_ips: Sequence[FixedIpRequest] | None = None, mac_address: str | None = None,
                    port_security_enabled: bool | None = None,
                    allowed_address_pairs: Sequence[dict[str, str | None]] | None = None,
                    security_groups: Sequence[str] | None = None, description: str | None = None) -> m.Port:
        c.require_write(ctx, "update_port")
        if binding_host is not None:
            c.require_admin(ctx, "update_port:binding:host_id")
        if device_owner is not None and device_owner.startswith("network:"):
            c.require_admin(ctx, "update_port:device_owner")
        if mac_address is not None:
            c.require_admin(ctx, "update_port:mac_address")
        with self._db.begin() as s:
            row = c.port_row(s, ctx, port_id)
            if mac_address is not None and mac_address.lower() != row.mac_address:
                row.mac_address = c.check_mac(s, row.network_id, mac_address)
            if port_security_enabled is not None:
                row.port_security_enabled = port_security_enabled
            if security_groups is not None:
                groups = self._port_groups(s, row.project_id, row.port_security_enabled, security_groups)
                s.execute(delete(t.PortSecurityGroup).where(t.PortSecurityGroup.port_id == row.id))
                for gid in dict.fromkeys(groups):
                    s.add(t.PortSecurityGroup(port_id=row.id, security_group_id=gid))
            elif port_security_enabled is False and c.groups_of(s, [row.id])[row.id]:
                raise InvalidInput(error_message="Port has security group associated. Cannot disable port "
                                   "security or ip address until security group is removed")
            if allowed_address_pairs is not None:
                if allowed_address_pairs and not row.port_security_enabled:
                    raise InvalidInput(error_message="Port Security must be enabled in order to have allowed "
                                       "address pairs on a port.")
                row.allowed_address_pairs = check_address_pairs(allowed_address_pairs, row.mac_address)
            if fixed_ips is not None:
                self._replace_fixed_ips(s, row, fixed_ips)
            for key, value in (("name", name), ("admin_state_up", admin_state_up), ("device_id", device_id),
                               ("device_owner", device_owner), ("binding_host", binding_host),
                               ("description", description)):
                if value is not None:
                    setattr(row, key, value)
            row.status = c.port_status(row.device_owner, row.device_id, row.binding_host)
            c.touch(row)
            s.flush()
            return c.ports_of(s, [row])[0]

    def _replace_fixed_ips(self, s: Session, row: t.Port, wanted: Sequence[FixedIpRequest]) -> None:
        held = list(s.scalars(select(t.IpAllocation).where(t.IpAllocation.port_id == row.id)))
        keep = {(w.get("subnet_id"), w.get("ip_address")) for w in wanted}
        kept, fresh = set(), []
        for alloc in held:
            if (alloc.subnet_id, alloc.ip_address) in keep or (None, alloc.ip_address) in keep:
                kept.add(alloc.ip_address)
            else:
                s.delete(alloc)
        s.flush()
        for w in wanted:
            if w.get("ip_address") is None or w.get("ip_address") not in kept:
                fresh.append(w)
        c.assign_fixed_ips(s, row, fresh)
        if row.device_owner == c.COMPUTE:
            # A floating IP follows its fixed address; one whose address went away is disassociated.
            for fip in s.scalars(select(t.FloatingIp).where(t.FloatingIp.port_id == row.id)):
                if fip.fixed_ip_address not in kept:
                    _disassociate(fip)

    def delete_port(self, ctx: AuthContext, port_id: str) -> None:
        """Router interface and gateway ports go through the router API (409 here, as in Neutron)."""
        c.require_write(ctx, "delete_port")
        with self._db.begin() as s:
            row = self._visible_port(s, ctx, port_id)
            if row.device_owner in (c.ROUTER_INTERFACE, c.ROUTER_GATEWAY, c.FLOATINGIP):
                raise Conflict("Port {port_id} cannot be deleted directly via the port API: has device owner "
                               "{owner}.", port_id=row.id, owner=row.device_owner)
            delete_port_row(s, row)


def _disassociate(fip: t.FloatingIp) -> None:
    fip.port_id = None
    fip.fixed_ip_address = None
    fip.router_id = None
    fip.status = "DOWN"
    c.touch(fip)


def delete_port_row(s: Session, row: t.Port) -> None:
    """Delete a port; floating IPs on it are disassociated first (Neutron does the same)."""
    for fip in s.scalars(select(t.FloatingIp).where(t.FloatingIp.port_id == row.id)):
        _disassociate(fip)
    s.flush()
    s.delete(row)
    s.flush()
