"""Which hosts a committed network change concerns, so that their agents apply it now.

Every host's dataplane is reconciled from its ``host_state``.  Without a notice an agent would
see a change only at its next period (``[network] reconcile_period``): a security-group rule
added, a port on another host that its VXLAN forwarding table must learn, a floating IP.  Neutron
pushes such changes to the agents concerned over RPC (l2population for the tunnels); yunstack's
agents already hold a long-poll open, so the notice rides on it (``HostHub.network_changed``).

Only the network service writes the network tables, and only through the ORM, so the notice is
taken where the writes are: a listener on the sessions notes, before each flush, what the flush
will write (rows of the network tables only, so a port's group links are unlinked as rows:
``forget_port_groups``); just before the commit the notes are resolved to hosts with a few reads
in the same transaction, and after it they are handed to ``notify``.  A rolled-back transaction
notifies nothing.  The resolution is a superset of the hosts whose state changed, never fewer:

- a network or subnet: the hosts with a VM port on it;
- a port (its addresses, groups, binding): its network's hosts, its old and new binding hosts,
  and every host with a port in a group whose rules name one of its groups (old or new): they
  hold its addresses in their member lists;
- a security group or its rules: the hosts with a port in that group;
- a host's tunnel address: the hosts that share a network with it;
- always the network host (DHCP, routers, floating IPs and metadata are there).

A notice lost on the way (the control plane restarting between commit and notice) is made good by
the agent's periodic pass; the notice only makes the usual case fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction, sessionmaker
from sqlalchemy.orm.attributes import get_history

from yunstack.db.tables import network as t

log = logging.getLogger(__name__)

_KEY = "yunstack.network.changes"  # a session's notes, before its commit
_HOSTS = "yunstack.network.changes.hosts"  # ... resolved, told after it


@dataclass
class Change:
    """What one transaction wrote, in the terms its hosts are found by."""

    networks: set[str] = field(default_factory=set)
    ports: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)  # their rules changed: their members are told
    joined: set[str] = field(default_factory=set)  # their members changed: the groups naming them are told
    hosts: set[str] = field(default_factory=set)  # named outright: a port's binding hosts, before and after
    tunnels: set[str] = field(default_factory=set)  # hosts whose tunnel address changed

    def __bool__(self) -> bool:
        return bool(self.networks or self.ports or self.groups or self.joined or self.hosts or self.tunnels)

    def note(self, row: object) -> bool:
        """Add what writing ``row`` changes; False for a row that is not the network's."""
        if isinstance(row, t.Port):
            self.networks.add(row.network_id)
            self.ports.add(row.id)
            self.hosts.update(h for h in (*get_history(row, "binding_host").sum(), row.binding_host) if h)
        elif isinstance(row, t.Network):
            self.networks.add(row.id)
        elif isinstance(row, (t.Subnet, t.IpAllocation)):
            self.networks.add(row.network_id)
            if isinstance(row, t.IpAllocation):
                self.ports.add(row.port_id)
        elif isinstance(row, t.PortSecurityGroup):
            self.ports.add(row.port_id)
            self.joined.add(row.security_group_id)
        elif isinstance(row, t.SecurityGroupRule):
            self.groups.add(row.security_group_id)
        elif isinstance(row, t.SecurityGroup):
            self.groups.add(row.id)
        elif isinstance(row, t.NetworkHost):
            self.tunnels.add(row.host)
        else:
            # Routers, floating IPs: the network host's alone (it is always told).  Quotas, pools: no one's.
            return isinstance(row, (t.Router, t.FloatingIp))
        return True


class NetworkChanges:
    """Watches the network tables' writes through ``db``'s sessions; tells ``notify`` whose state changed.

    ``notify`` is unset (None) until the composition root wires it to the host hub: until then
    nothing is noted.
    """

    def __init__(self, db: sessionmaker[Session], network_host: str) -> None:
        self.network_host = network_host
        self.notify: Callable[[set[str]], None] | None = None
        event.listen(db, "before_flush", self._before_flush)
        event.listen(db, "before_commit", self._before_commit)
        event.listen(db, "after_commit", self._after_commit)
        event.listen(db, "after_soft_rollback", self._after_rollback)

    # -- listeners -------------------------------------------------------------------------------

    def _before_flush(self, s: Session, _flush: UOWTransaction, _instances: object) -> None:
        if self.notify is None:
            return
        change: Change = s.info.get(_KEY) or Change()
        routing = False
        # ``dirty`` also holds rows whose attributes were set to the values they had: not a change.
        changed = (row for row in s.dirty if s.is_modified(row, include_collections=False))
        for row in (*s.new, *changed, *s.deleted):
            routing = change.note(row) or routing
        gone = [row.id for row in s.deleted if isinstance(row, t.Port)]
        if gone:
            # Their group links go with them (ON DELETE CASCADE): note the groups while they are there.
            with s.no_autoflush:
                change.joined.update(s.scalars(select(t.PortSecurityGroup.security_group_id)
                                               .where(t.PortSecurityGroup.port_id.in_(gone))))
        if change or routing:
            change.hosts.add(self.network_host)
            s.info[_KEY] = change

    def _before_commit(self, s: Session) -> None:
        """Resolve the notes to hosts inside the transaction, on its own connection.

        Not after the commit on a connection of its own: a commit that waits for a second
        connection while it holds its first can starve the pool (twenty concurrent port creates
        on SQLite's fifteen did).
        """
        if self.notify is None or s.in_nested_transaction():
            return  # a savepoint's commit: the transaction it is part of may still roll back
        s.flush()  # the commit's own flush comes after this event: note its rows now
        change: Change | None = s.info.pop(_KEY, None)
        if change is None:
            return
        try:
            with s.no_autoflush:
                s.info[_HOSTS] = self.hosts_of(s, change)
        except SQLAlchemyError:  # the notice is an optimisation: the agents' period makes it good
            log.exception("could not resolve a network change to hosts; their next period applies it")

    def _after_commit(self, s: Session) -> None:
        if s.in_nested_transaction():
            return
        hosts: set[str] | None = s.info.pop(_HOSTS, None)
        if hosts and self.notify is not None:
            self.notify(hosts)

    @staticmethod
    def _after_rollback(s: Session, rolled_back: SessionTransaction) -> None:
        if rolled_back.parent is None:  # the whole transaction (a savepoint's rollback keeps the notes:
            s.info.pop(_KEY, None)      # telling a host of a change that did not happen costs one pass)
            s.info.pop(_HOSTS, None)

    # -- resolution ------------------------------------------------------------------------------

    def hosts_of(self, s: Session, change: Change) -> set[str]:
        """The hosts whose ``host_state`` ``change`` may have changed (see the module's rules)."""
        hosts = set(change.hosts) | {self.network_host}
        networks, groups, joined = set(change.networks), set(change.groups), set(change.joined)
        if change.ports:
            networks |= set(s.scalars(select(t.Port.network_id).where(t.Port.id.in_(change.ports))))
            # Its addresses may have changed: they are in the member lists of its groups.
            joined |= set(s.scalars(select(t.PortSecurityGroup.security_group_id)
                                    .where(t.PortSecurityGroup.port_id.in_(change.ports))))
        if change.tunnels:
            networks |= set(s.scalars(select(t.Port.network_id).where(t.Port.binding_host.in_(change.tunnels))))
            hosts |= change.tunnels
        bound = (t.Port.binding_host != "") & t.Port.device_owner.like("compute:%")
        if networks:
            hosts |= set(s.scalars(select(t.Port.binding_host).distinct()
                                   .where(bound, t.Port.network_id.in_(networks))))
        if joined:
            groups |= set(s.scalars(select(t.SecurityGroupRule.security_group_id).distinct()
                                    .where(t.SecurityGroupRule.remote_group_id.in_(joined))))
        if groups:
            hosts |= set(s.scalars(
                select(t.Port.binding_host).distinct()
                .join(t.PortSecurityGroup, t.PortSecurityGroup.port_id == t.Port.id)
                .where(bound, t.PortSecurityGroup.security_group_id.in_(groups))))
        return hosts


def forget_port_groups(s: Session, port_id: str) -> None:
    """Unlink every security group from ``port_id`` as rows, so that the change feed sees the
    groups it leaves (a bulk ``DELETE`` would pass it by)."""
    for link in s.scalars(select(t.PortSecurityGroup).where(t.PortSecurityGroup.port_id == port_id)):
        s.delete(link)
    s.flush()
