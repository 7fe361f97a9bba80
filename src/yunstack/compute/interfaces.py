"""A server's network interfaces and security groups (Nova's os-interface and security group actions).

Ports belong to the network service; these use cases check the server's state, change ports
through ``NetworkService`` and queue the host's step (``compute.operations.interfaces``): the agent reconciles
its dataplane so that the tap exists, then hot-plugs the NIC into a running QEMU
(``attach_interface``) or unplugs it (``detach_interface``).  A stopped server only gets the port;
it is plugged at the next start.  A detached port leaves the network service only once the guest
has let go of it (``agentlink.finish``), so its tap never disappears under a running QEMU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import operations
from yunstack.compute.operations import Operation
from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest, Conflict, NotFound, YunError
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.network import models as m
from yunstack.network.service import NetworkService
from yunstack.protocol import AttachInterfaceArgs, DetachInterfaceArgs, StepArgs


class InterfaceOps:
    """Mixed into ``ComputeService``, which provides the attributes and helpers below."""

    _db: sessionmaker[Session]
    network: NetworkService | None
    notify: Callable[[str], None]

    def _row(self, s: Session, ctx: AuthContext, server_id: str) -> t.Instance:
        raise NotImplementedError

    def _record(self, s: Session, row: t.Instance, action: str, request_id: str, ctx: AuthContext,
                message: str | None = None) -> None:
        raise NotImplementedError

    def _networking(self) -> NetworkService:
        if self.network is None:
            raise BadRequest("Interfaces need the networking service, which this cloud does not run.")
        return self.network

    # -- interfaces ------------------------------------------------------------------------------

    def list_interfaces(self, ctx: AuthContext, server_id: str) -> list[m.Port]:
        """The server's ports, oldest first (Nova's ``interfaceAttachments``)."""
        with self._db() as s:
            row = self._row(s, ctx, server_id)
        return [p for p in self._networking().list_ports(ctx, device_ids=[row.id])
                if p.device_owner.startswith("compute:")]

    def get_interface(self, ctx: AuthContext, server_id: str, port_id: str) -> m.Port:
        for port in self.list_interfaces(ctx, server_id):
            if port.id == port_id:
                return port
        raise NotFound("Port {port_id} could not be found.", port_id=port_id)

    def _begin(self, s: Session, ctx: AuthContext, server_id: str, action: str) -> tuple[t.Instance, Operation]:
        raise NotImplementedError

    def _queue_action(self, s: Session, ctx: AuthContext, row: t.Instance, decl: Operation, args: StepArgs,
                      request_id: str) -> None:
        raise NotImplementedError

    def _queue(self, ctx: AuthContext, server_id: str, args: AttachInterfaceArgs | DetachInterfaceArgs,
               request_id: str) -> str | None:
        """Check the operation's states and queue its host step; returns the server's host."""
        with self._db.begin() as s:
            row, decl = self._begin(s, ctx, server_id, args.op)
            self._queue_action(s, ctx, row, decl, args, request_id)
            return row.host

    def attach_interface(self, ctx: AuthContext, server_id: str, request_id: str, *, net_id: str | None = None,
                         port_id: str | None = None, fixed_ip: str | None = None) -> m.Port:
        """A new NIC for a server: a port of the caller's (taken over), a new port on ``net_id``, or on
        the network the ``"auto"`` rule picks.  Returns the port at once; the agent plugs it."""
        policy.require_write(ctx, "compute:os-interface:create")
        network = self._networking()
        if net_id and port_id:
            raise BadRequest("Must not input both network_id and port_id")
        with self._db() as s:
            row = self._row(s, ctx, server_id)
            allowed = operations.by_action("attach_interface").allowed
            assert allowed is not None
            allowed.check("attach_interface", server_id, row.vm_state, row.task_state)
            host, hostname = row.host or "", row.hostname
        port = network.attach_interface(ctx, server_id, host, net_id, port_id, fixed_ip, hostname=hostname)
        try:
            host = self._queue(ctx, server_id, AttachInterfaceArgs(port_id=port.id), request_id) or host
        except YunError:
            # Another operation came first: the port goes back as it was, nothing is half-made.
            with contextlib.suppress(YunError):
                network.detach_interface(ctx, server_id, port.id)
            raise
        self.notify(host)
        return port

    def detach_interface(self, ctx: AuthContext, server_id: str, port_id: str, request_id: str) -> None:
        """Queue the unplug of one NIC; the port is released (deleted if Nova made it) once it is out."""
        policy.require_write(ctx, "compute:os-interface:delete")
        port = self.get_interface(ctx, server_id, port_id)
        host = self._queue(ctx, server_id, DetachInterfaceArgs(port_id=port.id, mac=port.mac_address), request_id)
        if host:
            self.notify(host)

    # -- security groups -------------------------------------------------------------------------

    def server_security_groups(self, ctx: AuthContext, server_id: str) -> list[m.SecurityGroup]:
        """The groups of the server's ports (Nova's ``os-security-groups`` of a server)."""
        ports = self.list_interfaces(ctx, server_id)
        wanted = list(dict.fromkeys(g for p in ports for g in p.security_groups))
        groups = {g.id: g for g in self._networking().list_security_groups(ctx)}
        return [groups[g] for g in wanted if g in groups]

    def _group(self, ctx: AuthContext, project_id: str, name: str) -> m.SecurityGroup:
        found = [g for g in self._networking().list_security_groups(ctx)
                 if g.project_id == project_id and name in (g.name, g.id)]
        if len(found) > 1:
            raise Conflict("Multiple security_group matches found for name '{name}', use an ID to be more "
                           "specific.", name=name)
        if not found:
            raise NotFound("Security group {name} not found for project {project_id}.", name=name,
                           project_id=project_id)
        return found[0]

    def add_security_group(self, ctx: AuthContext, server_id: str, name: str) -> None:
        """Add a group to every port of the server (and to its ``security_groups``)."""
        self._change_group(ctx, server_id, name, add=True)

    def remove_security_group(self, ctx: AuthContext, server_id: str, name: str) -> None:
        """Remove a group from every port of the server (and from its ``security_groups``)."""
        self._change_group(ctx, server_id, name, add=False)

    def _change_group(self, ctx: AuthContext, server_id: str, name: str, *, add: bool) -> None:
        policy.require_write(ctx, "compute:security_groups:" + ("add" if add else "remove"))
        network = self._networking()
        with self._db() as s:
            row = self._row(s, ctx, server_id)
            project = row.project_id
        group = self._group(ctx, project, name)
        ports = [p for p in self.list_interfaces(ctx, server_id) if p.port_security_enabled]
        holding = [p for p in ports if group.id in p.security_groups]
        if add and ports and len(holding) == len(ports):
            raise BadRequest("Security group {name} is already associated with the instance {id}",
                             name=name, id=server_id)
        if not add and not holding:
            raise BadRequest("Security group {name} not associated with the instance {id}", name=name,
                             id=server_id)
        for port in ports:
            groups = [g for g in port.security_groups if g != group.id]
            network.update_port(ctx, port.id, security_groups=[*groups, group.id] if add else groups)
        with self._db.begin() as s:
            row = self._row(s, ctx, server_id)
            names = [g for g in (row.security_groups or []) if g not in (group.name, group.id)]
            row.security_groups = [*names, group.name] if add else names
            row.updated_at = datetime.now(UTC)
