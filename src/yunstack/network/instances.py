"""What the compute service and the host agent ask of the network service, in-process.

The compute service calls these inside its own flows (no HTTP): ports for a new server, their
removal, the ``addresses`` of many servers at once, interface attach and detach.  The agent's
network reconciler asks ``host_state(host)`` for everything its dataplane must realise, and the
metadata proxy asks ``instance_for_address``.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from yunstack.db.tables import network as t
from yunstack.errors import BadRequest, Conflict, NotFound
from yunstack.identity.context import AuthContext
from yunstack.network import _common as c
from yunstack.network import desired as d
from yunstack.network import ipam, topology
from yunstack.network import models as m
from yunstack.network.errors import IpAddressAlreadyAllocated, IpAddressGenerationFailure, SecurityGroupNotFound
from yunstack.network.ports import delete_port_row
from yunstack.network.secgroups import ensure_default_group, resolve_groups
from yunstack.types import utcnow

Requested = Literal["auto", "none"] | Sequence[dict[str, str | None]]


def _hostname(ip: str | None) -> str:
    return "host-" + (ip or "unknown").replace(".", "-").replace(":", "-")


class InstanceOps(c.Base):
    # -- choosing networks ----------------------------------------------------------------------

    def _auto_network(self, s: Session, project_id: str) -> t.Network | None:
        """The rule for ``networks: "auto"`` (and attach without a network):

        the project's only non-external network; else, if the project has none, the single shared
        non-external network; else no network at all.  Two or more candidates at the deciding
        step are ambiguous (409), as in Nova.
        """
        for where in (t.Network.project_id == project_id, t.Network.shared.is_(True)):
            found = list(s.scalars(select(t.Network).where(where, t.Network.external.is_(False))
                                   .order_by(t.Network.created_at)))
            if len(found) > 1:
                raise Conflict("Multiple possible networks found, use a Network ID to be more specific.")
            if found:
                return found[0]
        return None

    def _boot_network(self, s: Session, ctx: AuthContext, network_id: str) -> t.Network:
        row = s.get(t.Network, network_id)
        if row is None or not (c.owns(ctx, row.project_id) or row.shared):
            raise BadRequest("Network {id} could not be found.", id=network_id)
        if s.scalar(select(t.Subnet.id).where(t.Subnet.network_id == row.id).limit(1)) is None:
            raise BadRequest("Network {id} requires a subnet in order to boot instances on.", id=network_id)
        return row

    def _plug(self, s: Session, ctx: AuthContext, instance_id: str, host: str, hostname: str,
              request: dict[str, str | None], groups: Sequence[str]) -> t.Port:
        """One requested NIC: an existing port (taken over) or a new port on a network."""
        if request.get("port"):
            port_id = request["port"] or ""
            port = s.get(t.Port, port_id)
            if port is None or not c.owns(ctx, port.project_id):
                raise BadRequest("Port id {port_id} could not be found.", port_id=port_id)
            if port.device_id or port.device_owner:
                raise Conflict("Port {port_id} is still in use.", port_id=port_id)
            if not c.fixed_ips_of(s, [port.id])[port.id]:
                raise BadRequest("Port {port_id} requires a FixedIP in order to be used.", port_id=port_id)
            port.device_id, port.device_owner, port.binding_host = instance_id, c.COMPUTE, host
            port.hostname = hostname or port.hostname
            port.status = c.port_status(c.COMPUTE, instance_id, host)
            c.touch(port)
            s.flush()
            return port
        network = self._boot_network(s, ctx, request.get("uuid") or "")
        fixed = [{"ip_address": request["fixed_ip"]}] if request.get("fixed_ip") else None
        project = ctx.project_id or network.project_id
        self.quotas.check(s, project, {"port": 1})
        secure = network.port_security_enabled
        try:
            port = c.new_port(s, network=network, project_id=project, device_owner=c.COMPUTE,
                              device_id=instance_id, binding_host=host, fixed_ips=fixed, port_security=secure,
                              group_ids=list(groups) if secure else [], auto_delete=True, hostname=hostname)
        except IpAddressAlreadyAllocated as e:
            raise BadRequest("Fixed IP address {address} is already in use on instance {instance_uuid}.",
                             address=request.get("fixed_ip"), instance_uuid=instance_id) from e
        except IpAddressGenerationFailure as e:
            raise BadRequest("No valid fixed IPs available on network {id}.", id=network.id) from e
        if not port.hostname:
            first = c.fixed_ips_of(s, [port.id])[port.id]
            port.hostname = _hostname(first[0].ip_address if first else None)
        return port

    # -- compute calls --------------------------------------------------------------------------

    def allocate_for_instance(self, ctx: AuthContext, instance_id: str, host: str, requested: Requested,
                              security_groups: Sequence[str], *, hostname: str = "") -> list[m.Port]:
        """Create (or take over) the ports of a new server, all or nothing.

        ``requested`` is ``"auto"`` (see ``_auto_network``: the project's only private network, else
        the single shared network, else none), ``"none"``, or a list of ``{"uuid", "port",
        "fixed_ip"}`` dicts as Nova's ``networks`` carries them.  New ports get device_owner
        ``compute:nova``, device_id ``instance_id``, binding host ``host`` and the named (or id'd)
        security groups of the project (``default`` is made on first use).  Errors carry Nova's
        messages: unknown network/port/group -> BadRequest, port in use or ambiguous network ->
        Conflict.  Everything happens in one transaction, so a failure leaves nothing behind.
        """
        if requested == "none":
            return []  # no port: nothing to put in a group (and no transaction to open)
        project = ctx.project_id or ""
        names = list(security_groups) or ["default"]
        if "default" in names and project:
            ensure_default_group(self._db, project)
        with self._db.begin() as s:
            if requested == "auto":
                network = self._auto_network(s, project)
                if network is None:
                    return []
                requests: list[dict[str, str | None]] = [{"uuid": network.id}]
            else:
                requests = [dict(r) for r in requested]
            try:
                groups = resolve_groups(s, project, names)
            except SecurityGroupNotFound as e:
                raise BadRequest("Security group {name} not found for project {project_id}.",
                                 name=e.context.get("id"), project_id=project) from e
            ports = [self._plug(s, ctx, instance_id, host, hostname, r, groups) for r in requests]
            return c.ports_of(s, ports)

    def deallocate_for_instance(self, ctx: AuthContext, instance_id: str) -> None:
        """Delete the ports allocate_for_instance created; detach (keep) ports the user passed in."""
        with self._db.begin() as s:
            for port in s.scalars(select(t.Port).where(t.Port.device_id == instance_id,
                                                       t.Port.device_owner.like("compute:%"))):
                self._unplug(s, port)

    def instances_with_ports(self, host: str) -> set[str]:
        """The ids of the servers that hold VM ports bound to ``host`` (to find ports whose server is gone)."""
        with self._db() as s:
            return set(s.scalars(select(t.Port.device_id).distinct()
                                 .where(t.Port.device_owner.like("compute:%"), t.Port.binding_host == host)))

    def bind_instance_ports(self, ctx: AuthContext, instance_id: str, host: str) -> None:
        """Bind a server's ports to ``host`` ("" unbinds them: a shelved server left its host)."""
        with self._db.begin() as s:
            for port in s.scalars(select(t.Port).where(t.Port.device_id == instance_id,
                                                       t.Port.device_owner.like("compute:%"))):
                port.binding_host = host
                port.status = c.port_status(port.device_owner, port.device_id, host)
                c.touch(port)

    @staticmethod
    def _unplug(s: Session, port: t.Port) -> None:
        if port.auto_delete:
            delete_port_row(s, port)
            return
        port.device_id, port.device_owner, port.binding_host, port.status = "", "", "", "DOWN"
        c.touch(port)
        s.flush()

    def attach_interface(self, ctx: AuthContext, instance_id: str, host: str, net_id: str | None = None,
                         port_id: str | None = None, fixed_ip: str | None = None, *,
                         hostname: str = "") -> m.Port:
        """One more NIC for a server: a port (taken over), a new port on ``net_id`` (optionally with
        ``fixed_ip``), or with neither, a new port on the network the ``"auto"`` rule picks."""
        project = ctx.project_id or ""
        ensure_default_group(self._db, project)
        with self._db.begin() as s:
            if port_id is None and net_id is None:
                network = self._auto_network(s, project)
                if network is None:
                    raise BadRequest("No specific network was requested and none are available for project "
                                     "'{project_id}'.", project_id=project)
                net_id = network.id
            groups = resolve_groups(s, project, ["default"])
            port = self._plug(s, ctx, instance_id, host, hostname,
                              {"port": port_id, "uuid": net_id, "fixed_ip": fixed_ip}, groups)
            return c.ports_of(s, [port])[0]

    def detach_interface(self, ctx: AuthContext, instance_id: str, port_id: str) -> None:
        """Remove one NIC: the port is deleted if we made it, else detached.  404 if not attached."""
        with self._db.begin() as s:
            port = s.get(t.Port, port_id)
            if port is None or port.device_id != instance_id or not c.owns(ctx, port.project_id):
                raise NotFound("Port {port_id} is not attached", port_id=port_id)
            self._unplug(s, port)

    def addresses_for_instances(self, instance_ids: Sequence[str] | Mapping[str, str],
                                ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Nova's ``addresses`` for many servers in one round of queries: per server, per network name,
        fixed then floating addresses, each ``{"version", "addr", "OS-EXT-IPS:type",
        "OS-EXT-IPS-MAC:mac_addr"}``.  Every requested id is in the result (``{}`` if it has no ports).
        Given ``{server id: project id}``, only ports of the server's own project count."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {i: {} for i in instance_ids}
        if not instance_ids:
            return out
        projects = instance_ids if isinstance(instance_ids, Mapping) else None
        with self._db() as s:
            found = s.execute(
                select(t.Port.id, t.Port.device_id, t.Port.mac_address, t.Network.name, t.IpAllocation.ip_address,
                       t.Port.project_id)
                .join(t.Network, t.Network.id == t.Port.network_id)
                .join(t.IpAllocation, t.IpAllocation.port_id == t.Port.id)
                # Compute's ports of the server; with the project check below a port of another project
                # that names the server shows nothing. (No binding-host test: a shelved server's ports
                # are unbound and still its addresses, as in Nova.)
                .where(t.Port.device_id.in_(list(instance_ids)), t.Port.device_owner.like("compute:%"))
                .order_by(t.Port.created_at, t.Port.id, t.IpAllocation.id)).all()
            rows = [r[:5] for r in found if projects is None or projects.get(r[1]) == r[5]]
            floating: dict[tuple[str | None, str | None], list[str]] = defaultdict(list)
            port_ids = list({r[0] for r in rows})
            if port_ids:
                for pid, fixed, addr in s.execute(select(t.FloatingIp.port_id, t.FloatingIp.fixed_ip_address,
                                                         t.FloatingIp.floating_ip_address)
                                                  .where(t.FloatingIp.port_id.in_(port_ids))):
                    floating[(pid, fixed)].append(addr)
        for port_id, instance_id, mac, net_name, ip in rows:
            entries = out[instance_id].setdefault(net_name, [])
            version = 6 if ":" in ip else 4
            entries.append({"version": version, "addr": ip, "OS-EXT-IPS:type": "fixed",
                            "OS-EXT-IPS-MAC:mac_addr": mac})
            for addr in floating.get((port_id, ip), []):
                entries.append({"version": 4, "addr": addr, "OS-EXT-IPS:type": "floating",
                                "OS-EXT-IPS-MAC:mac_addr": mac})
        return out

    def instance_for_address(self, network_id: str, ip: str) -> m.AddressOwner | None:
        """Who holds ``ip`` on ``network_id``, for the metadata service: a server's port, if any.

        Only a port compute bound (``compute:*`` with a binding host, which only compute and
        admins set) counts; its project comes along so that the caller can insist that the
        server is of the same project.  A port that merely names a server in ``device_id`` is
        not enough: that would hand the server's user data to whoever made the port.
        """
        with self._db() as s:
            row = s.execute(select(t.Port.device_id, t.Port.project_id, t.Port.binding_host)
                            .join(t.IpAllocation, t.IpAllocation.port_id == t.Port.id)
                            .where(t.IpAllocation.network_id == network_id, t.IpAllocation.ip_address == ip,
                                   t.Port.device_owner.like("compute:%"), t.Port.binding_host != "",
                                   t.Port.device_id != "").limit(1)).first()
        if row is None:
            return None
        return m.AddressOwner(instance_id=row[0], project_id=row[1], host=row[2])

    # -- the host's desired state ---------------------------------------------------------------

    def report_tunnel(self, host: str, tunnel_ip: str) -> None:
        """Record ``host``'s VXLAN endpoint (its agent reports it; "" withdraws it).

        Written only when it changed, so the agent may report it with every state it fetches.
        """
        if tunnel_ip:
            try:
                ipaddress.IPv4Address(tunnel_ip)
            except ValueError as e:
                raise BadRequest("Invalid tunnel address {ip} of host {host}: VXLAN runs over IPv4.",
                                 ip=tunnel_ip, host=host) from e
        with self._db.begin() as s:
            row = s.get(t.NetworkHost, host)
            if row is None:
                if tunnel_ip:
                    s.add(t.NetworkHost(host=host, tunnel_ip=tunnel_ip, updated_at=utcnow()))
            elif row.tunnel_ip != tunnel_ip:
                row.tunnel_ip, row.updated_at = tunnel_ip, utcnow()

    def host_state(self, host: str, incoming: Collection[str] = ()) -> d.HostNetworkState:
        """Everything ``host``'s dataplane must realise (roles: see ``network.topology``).

        Every host gets the VM ports bound to it, and those of the servers in ``incoming`` (moving
        to it: their guest starts here before their binding moves, as Neutron's inactive second
        binding), their networks and their security groups (with
        the member IPs of every group a rule refers to).  The network host (``network_host``; the
        control host unless configured, all-in-one: the only host) also serves DHCP, routing and
        metadata, so it gets every network, every router with its interfaces, gateway and floating
        IPs, and metadata targets for every VM port.  Each network another tunnelled host shares
        comes with its VXLAN tunnel: the peers and where each remote MAC is.
        """
        serves_all = topology.is_network_host(host, self.network_host)
        with self._db() as s:
            here = t.Port.binding_host == host
            if incoming:
                here = here | t.Port.device_id.in_(list(incoming))
            vm_ports = list(s.scalars(select(t.Port).where(t.Port.device_owner.like("compute:%"), here)
                                      .order_by(t.Port.created_at, t.Port.id)))
            all_ids = list(s.scalars(select(t.Network.id).order_by(t.Network.created_at, t.Network.id)))
            local = [topology.PortPlace(network_id=p.network_id, mac_address=p.mac_address, host=host)
                     for p in vm_ports]
            wanted = topology.networks_of_host(host, self.network_host, all_ids, local)
            by_id = {n.id: n for n in s.scalars(select(t.Network).where(t.Network.id.in_(wanted)))} if wanted else {}
            networks = [by_id[i] for i in wanted if i in by_id]
            tunnels = {h: ip for h, ip in s.execute(select(t.NetworkHost.host, t.NetworkHost.tunnel_ip)) if ip}
            net_states = self._network_states(s, networks)
            if tunnels.get(host):
                net_states = self._with_tunnels(s, host, net_states, tunnels)
            ports = c.ports_of(s, vm_ports)
            groups = self._group_states(s, {g for p in ports for g in p.security_groups})
            metadata: tuple[d.MetadataTarget, ...] = ()
            remote: tuple[d.PortState, ...] = ()
            if serves_all:
                others = list(s.scalars(select(t.Port).where(t.Port.device_owner.like("compute:%"),
                                                             t.Port.binding_host != host,
                                                             t.Port.binding_host != "",
                                                             t.Port.network_id.in_([n.id for n in networks]))
                                        .order_by(t.Port.created_at, t.Port.id)))
                remote = _port_states(c.ports_of(s, others), others)
                meta_q = select(t.Port.device_id, t.IpAllocation.network_id, t.IpAllocation.ip_address) \
                    .join(t.IpAllocation, t.IpAllocation.port_id == t.Port.id) \
                    .where(t.Port.device_owner.like("compute:%"), t.Port.binding_host != "")
                metadata = tuple(d.MetadataTarget(network_id=n, ip_address=ip, instance_id=i)
                                 for i, n, ip in s.execute(meta_q.order_by(t.IpAllocation.id)))
            return d.HostNetworkState(
                host=host, network_host=serves_all, tunnel_ip=tunnels.get(host, ""), networks=tuple(net_states),
                ports=_port_states(ports, vm_ports), dhcp_ports=remote, security_groups=groups,
                routers=tuple(self._router_states(s)) if serves_all else (),
                metadata=metadata)

    def _with_tunnels(self, s: Session, host: str, nets: list[d.NetworkState],
                      tunnels: dict[str, str]) -> list[d.NetworkState]:
        """``nets`` with their VXLAN tunnels: where every port of theirs on another host is."""
        ids = [n.id for n in nets]
        if not ids:
            return nets
        places = [place for net_id, mac, owner, bound in s.execute(
                      select(t.Port.network_id, t.Port.mac_address, t.Port.device_owner, t.Port.binding_host)
                      .where(t.Port.network_id.in_(ids)))
                  if (place := self._place(net_id, mac, owner, bound)) is not None]
        hosts = topology.hosts_by_network(self.network_host, ids, places)
        return [replace(n, tunnel=topology.tunnel(host, n.id, n.segmentation_id, hosts.get(n.id, set()),
                                                  tunnels, places)) for n in nets]

    def _place(self, network_id: str, mac: str, owner: str, bound: str) -> topology.PortPlace | None:
        where = topology.port_host(owner, bound, self.network_host)
        return None if where is None else topology.PortPlace(network_id=network_id, mac_address=mac, host=where)

    @staticmethod
    def _network_states(s: Session, networks: Sequence[t.Network]) -> list[d.NetworkState]:
        ids = [n.id for n in networks]
        subnets: dict[str, list[t.Subnet]] = defaultdict(list)
        dhcp: dict[str, t.Port] = {}
        if ids:
            for sn in s.scalars(select(t.Subnet).where(t.Subnet.network_id.in_(ids)).order_by(t.Subnet.created_at)):
                subnets[sn.network_id].append(sn)
            for p in s.scalars(select(t.Port).where(t.Port.network_id.in_(ids), t.Port.device_owner == c.DHCP)):
                dhcp[p.network_id] = p
        dhcp_ips = c.fixed_ips_of(s, [p.id for p in dhcp.values()])
        out = []
        for n in networks:
            port = dhcp.get(n.id)
            held = {f.subnet_id: f.ip_address for f in dhcp_ips.get(port.id, [])} if port else {}
            states = tuple(d.SubnetState(
                id=sn.id, network_id=n.id, cidr=sn.cidr, ip_version=sn.ip_version, gateway_ip=sn.gateway_ip,
                enable_dhcp=sn.enable_dhcp, dns_nameservers=tuple(sn.dns_nameservers),
                host_routes=tuple((h["destination"], h["nexthop"]) for h in sn.host_routes),
                allocation_pools=tuple(d.AllocationPool(start=p["start"], end=p["end"])
                                       for p in sn.allocation_pools),
                dhcp_ip=held.get(sn.id), ipv6_ra_mode=sn.ipv6_ra_mode,
                ipv6_address_mode=sn.ipv6_address_mode) for sn in subnets[n.id])
            out.append(d.NetworkState(id=n.id, name=n.name, mtu=n.mtu, external=n.external, subnets=states,
                                      segmentation_id=n.segmentation_id,
                                      dhcp_mac=port.mac_address if port else None))
        return out

    @staticmethod
    def _group_states(s: Session, wanted: set[str]) -> tuple[d.SecurityGroupState, ...]:
        if not wanted:
            return ()
        rules = list(s.scalars(select(t.SecurityGroupRule).where(
            or_(t.SecurityGroupRule.security_group_id.in_(wanted)))
            .order_by(t.SecurityGroupRule.created_at, t.SecurityGroupRule.id)))
        every = wanted | {r.remote_group_id for r in rules if r.remote_group_id}
        if every - wanted:
            rules += list(s.scalars(select(t.SecurityGroupRule).where(
                t.SecurityGroupRule.security_group_id.in_(every - wanted))))
        members: dict[str, list[str]] = defaultdict(list)
        for gid, ip in s.execute(select(t.PortSecurityGroup.security_group_id, t.IpAllocation.ip_address)
                                 .join(t.IpAllocation, t.IpAllocation.port_id == t.PortSecurityGroup.port_id)
                                 .where(t.PortSecurityGroup.security_group_id.in_(every))
                                 .order_by(t.IpAllocation.id)):
            members[gid].append(ip)
        by_group: dict[str, list[d.SecurityGroupRule]] = defaultdict(list)
        for r in rules:
            by_group[r.security_group_id].append(d.SecurityGroupRule(
                id=r.id, direction=r.direction, ethertype=r.ethertype, protocol=r.protocol,
                port_range_min=r.port_range_min, port_range_max=r.port_range_max,
                remote_ip_prefix=r.remote_ip_prefix, remote_group_id=r.remote_group_id))
        return tuple(d.SecurityGroupState(id=g, rules=tuple(by_group[g]), member_ips=tuple(members[g]))
                     for g in sorted(every))

    @staticmethod
    def _router_states(s: Session) -> list[d.RouterState]:
        out = []
        for r in s.scalars(select(t.Router).order_by(t.Router.created_at, t.Router.id)):
            interfaces = []
            for port in s.scalars(select(t.Port).where(t.Port.device_id == r.id,
                                                       t.Port.device_owner == c.ROUTER_INTERFACE)
                                  .order_by(t.Port.created_at)):
                for f in c.fixed_ips_of(s, [port.id])[port.id]:
                    subnet = s.get(t.Subnet, f.subnet_id)
                    if subnet is not None:
                        interfaces.append(d.RouterInterface(
                            port_id=port.id, subnet_id=subnet.id, network_id=port.network_id,
                            ip_address=f.ip_address, prefixlen=ipam.prefixlen(subnet.cidr),
                            mac_address=port.mac_address))
            gw_ip = gw_len = gw_mac = None
            gw_port = s.get(t.Port, r.gw_port_id) if r.gw_port_id else None
            if gw_port is not None:
                held = [f for f in c.fixed_ips_of(s, [gw_port.id])[gw_port.id] if ":" not in f.ip_address]
                gw_mac = gw_port.mac_address
                if held:
                    gw_subnet = s.get(t.Subnet, held[0].subnet_id)
                    gw_ip = held[0].ip_address
                    gw_len = ipam.prefixlen(gw_subnet.cidr) if gw_subnet else None
            fips = tuple(d.FloatingIpState(id=f.id, floating_ip_address=f.floating_ip_address,
                                           fixed_ip_address=f.fixed_ip_address or "", port_id=f.port_id or "")
                         for f in s.scalars(select(t.FloatingIp).where(t.FloatingIp.router_id == r.id,
                                                                      t.FloatingIp.port_id.is_not(None))
                                            .order_by(t.FloatingIp.created_at)))
            out.append(d.RouterState(id=r.id, gateway_network_id=r.gw_network_id, gateway_ip=gw_ip,
                                     gateway_prefixlen=gw_len, gateway_mac=gw_mac, enable_snat=r.enable_snat,
                                     interfaces=tuple(interfaces), floating_ips=fips,
                                     routes=tuple((x["destination"], x["nexthop"]) for x in r.routes or ())))
        return out


def _port_states(ports: Sequence[m.Port], rows: Sequence[t.Port]) -> tuple[d.PortState, ...]:
    """The dataplane's view of ``ports`` (``rows`` are their table rows, in the same order)."""
    return tuple(d.PortState(id=p.id, network_id=p.network_id, mac_address=p.mac_address,
                             fixed_ips=tuple(d.FixedIp(subnet_id=f.subnet_id, ip_address=f.ip_address)
                                             for f in p.fixed_ips),
                             device_id=p.device_id, device_owner=p.device_owner,
                             hostname=row.hostname or _hostname(None), tap=d.tap_name(p.id),
                             port_security_enabled=p.port_security_enabled,
                             security_group_ids=p.security_groups,
                             allowed_address_pairs=tuple((a.ip_address, a.mac_address)
                                                         for a in p.allowed_address_pairs))
                 for p, row in zip(ports, rows, strict=True))
