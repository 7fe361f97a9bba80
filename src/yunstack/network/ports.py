"""Ports: fixed IPs from the IPAM, MACs, device owner, binding host, port security and address pairs."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from yunstack.db.tables import network as t
from yunstack.errors import Conflict
from yunstack.identity.context import AuthContext
from yunstack.network import _common as c
from yunstack.network import models as m
from yunstack.network.changes import forget_port_groups
from yunstack.network.errors import DeviceIDNotOwnedByTenant, InvalidInput, PolicyNotAuthorized
from yunstack.network.secgroups import ensure_default_group, resolve_groups

FixedIpRequest = dict[str, str | None]


def check_address_pairs(pairs: Sequence[dict[str, str | None]], mac: str) -> list[dict[str, str]]:
    """Normalized pairs; every address and MAC is checked because each one becomes a firewall rule."""
    out: list[dict[str, str]] = []
    for pair in pairs:
        raw = pair.get("ip_address")
        if not raw:
            raise InvalidInput(error_message="Allowed address pair must have an ip_address")
        try:
            ip = str(ipaddress.ip_interface(raw).network) if "/" in raw else str(ipaddress.ip_address(raw))
        except ValueError as e:
            raise InvalidInput(error_message=f"allowed_address_pairs ip_address '{raw}' is not a valid IP "
                               "address or CIDR") from e
        pair_mac = pair.get("mac_address")
        item = {"ip_address": ip,
                "mac_address": c.normalize_mac(pair_mac, "allowed_address_pairs mac_address") if pair_mac
                else mac.lower()}
        if item in out:
            raise InvalidInput(error_message="Duplicate address detected")
        out.append(item)
    return out


@dataclass(frozen=True, kw_only=True)
class PortRequest:
    """One port to create (``POST /ports`` takes one, or many at once)."""

    network_id: str
    name: str = ""
    admin_state_up: bool = True
    mac_address: str | None = None
    fixed_ips: Sequence[FixedIpRequest] | None = None
    device_id: str = ""
    device_owner: str = ""
    binding_host: str = ""
    port_security_enabled: bool | None = None
    allowed_address_pairs: Sequence[dict[str, str | None]] = ()
    security_groups: Sequence[str] | None = None
    description: str = ""
    project_id: str | None = None


def _check_network_owner_fields(ctx: AuthContext, network: t.Network, action: str, *, mac: str | None,
                                fixed_ips: Sequence[FixedIpRequest] | None,
                                pairs: Sequence[dict[str, str | None]] | None,
                                port_security: bool | None) -> None:
    """Neutron's port policy on a network of another project (a shared one): only the network's
    owner or an admin may choose the MAC, fixed addresses (a subnet alone is fine), allowed
    address pairs or port security, so no project can claim another's addresses on it."""
    if c.owns(ctx, network.project_id):
        return
    if mac is not None:
        raise PolicyNotAuthorized(action=f"{action}:mac_address")
    if fixed_ips and any(f.get("ip_address") for f in fixed_ips):
        raise PolicyNotAuthorized(action=f"{action}:fixed_ips:ip_address")
    if pairs is not None:
        raise PolicyNotAuthorized(action=f"{action}:allowed_address_pairs")
    if port_security is not None:
        raise PolicyNotAuthorized(action=f"{action}:port_security_enabled")


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

    def _check_device(self, ctx: AuthContext, project_id: str, device_id: str, device_owner: str) -> None:
        """A port may name only a server of its own project, and only such a port may say
        ``compute:*``: the metadata service and a server's addresses trust that binding."""
        if ctx.is_admin or not (device_id or device_owner.startswith("compute:")):
            return
        owner = self.server_project(device_id) if device_id else None
        if (owner is not None or device_owner.startswith("compute:")) and owner != project_id:
            raise DeviceIDNotOwnedByTenant(device_id=device_id)

    def create_port(self, ctx: AuthContext, *, network_id: str, name: str = "", admin_state_up: bool = True,
                    mac_address: str | None = None, fixed_ips: Sequence[FixedIpRequest] | None = None,
                    device_id: str = "", device_owner: str = "", binding_host: str = "",
                    port_security_enabled: bool | None = None,
                    allowed_address_pairs: Sequence[dict[str, str | None]] = (),
                    security_groups: Sequence[str] | None = None, description: str = "",
                    project_id: str | None = None) -> m.Port:
        """A port with addresses from the network's subnets (409 when none is left) and the project's
        default security group unless groups are given or port security is off."""
        return self.create_ports(ctx, [PortRequest(
            network_id=network_id, name=name, admin_state_up=admin_state_up, mac_address=mac_address,
            fixed_ips=fixed_ips, device_id=device_id, device_owner=device_owner, binding_host=binding_host,
            port_security_enabled=port_security_enabled, allowed_address_pairs=allowed_address_pairs,
            security_groups=security_groups, description=description, project_id=project_id)])[0]

    def create_ports(self, ctx: AuthContext, requests: Sequence[PortRequest]) -> list[m.Port]:
        """Many ports in one transaction: all of them, or (on the first error) none."""
        c.require_write(ctx, "create_port")
        checked: list[tuple[PortRequest, str, bool, str | None]] = []
        for r in requests:
            if r.device_owner.startswith("network:"):
                c.require_admin(ctx, "create_port:device_owner")
            if r.binding_host:
                c.require_admin(ctx, "create_port:binding:host_id")
            project = c.owner(ctx, r.project_id)
            with self._db() as s:
                network = c.network_row(s, ctx, r.network_id)
                if not (c.owns(ctx, network.project_id) or network.shared):
                    raise PolicyNotAuthorized(action="create_port")
                _check_network_owner_fields(ctx, network, "create_port", mac=r.mac_address, fixed_ips=r.fixed_ips,
                                            pairs=r.allowed_address_pairs or None,
                                            port_security=r.port_security_enabled)
                secure = network.port_security_enabled if r.port_security_enabled is None \
                    else r.port_security_enabled
            self._check_device(ctx, project, r.device_id, r.device_owner)
            if r.allowed_address_pairs and not secure:
                raise InvalidInput(error_message="Port Security must be enabled in order to have allowed address "
                                   "pairs on a port.")
            default_id = ensure_default_group(self._db, project) if r.security_groups is None and secure else None
            checked.append((r, project, secure, default_id))
        with self._db.begin() as s:
            rows = []
            for r, project, secure, default_id in checked:
                network = c.network_row(s, ctx, r.network_id)
                self.quotas.check(s, project, {"port": 1})
                groups = self._port_groups(s, project, secure, r.security_groups, default_id)
                row = c.new_port(s, network=network, project_id=project, device_owner=r.device_owner,
                                 device_id=r.device_id, binding_host=r.binding_host, name=r.name,
                                 mac=r.mac_address, fixed_ips=r.fixed_ips, port_security=secure, group_ids=groups,
                                 description=r.description, admin_state_up=r.admin_state_up)
                row.allowed_address_pairs = check_address_pairs(r.allowed_address_pairs, row.mac_address)
                s.flush()
                rows.append(row)
            return c.ports_of(s, rows)

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
        if device_id is not None or device_owner is not None:
            with self._db() as s:
                current = c.port_row(s, ctx, port_id)
                project, now_id, now_owner = current.project_id, current.device_id, current.device_owner
            self._check_device(ctx, project, now_id if device_id is None else device_id,
                               now_owner if device_owner is None else device_owner)
        if binding_host is not None:
            c.require_admin(ctx, "update_port:binding:host_id")
        if device_owner is not None and device_owner.startswith("network:"):
            c.require_admin(ctx, "update_port:device_owner")
        if mac_address is not None:
            c.require_admin(ctx, "update_port:mac_address")
        with self._db.begin() as s:
            row = c.port_row(s, ctx, port_id)
            network = s.get(t.Network, row.network_id)
            if network is not None:
                _check_network_owner_fields(ctx, network, "update_port", mac=mac_address, fixed_ips=fixed_ips,
                                            pairs=allowed_address_pairs, port_security=port_security_enabled)
            if mac_address is not None and mac_address.lower() != row.mac_address:
                row.mac_address = c.check_mac(s, row.network_id, mac_address)
            if port_security_enabled is not None:
                row.port_security_enabled = port_security_enabled
            if security_groups is not None:
                groups = self._port_groups(s, row.project_id, row.port_security_enabled, security_groups)
                forget_port_groups(s, row.id)
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
