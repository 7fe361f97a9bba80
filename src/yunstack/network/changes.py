"""Which hosts a committed network change concerns, so that their agents apply it now.

Every host's dataplane is reconciled from its ``host_state``.  Without a notice an agent would
see a change only at its next period (``[network] reconcile_period``): a security-group rule
added, a port on another host that its VXLAN forwarding table must learn, a floating IP.  Neutron
pushes such changes to the agents concerned over RPC (l2population for the tunnels); yunstack's
agents already hold a long-poll open, so the notice rides on it (``HostHub.network_changed``).

Only the network service writes the network tables, and only through the ORM, so the notice is
taken where the writes are: a listener on the sessions notes, before each flush, what the flush
will write (rows of the network tables only, so a port's group links are unlinked as rows:
``forget_port_groups``); after the commit a worker thread resolves the notes to hosts with a few
reads of its own and hands them to ``notify``.  A rolled-back transaction notifies nothing.
Every host whose dataplane must change is told (some are told of a change that leaves their
state as it was):

- a network or subnet: the hosts with a VM port on it;
- a port (its addresses, groups, binding): its network's hosts, its old and new binding hosts,
  and every host with a port in a group whose rules name one of its groups (old or new): they
  hold its addresses in their member lists;
- a security group or its rules: the hosts with a port in that group;
- a host's tunnel address: the hosts that share a network with it (every host with a VM port,
  for the network host's, which is on every network);
- always the network host (DHCP, routers, floating IPs and metadata are there).

A notice lost on the way (the control plane stopping between commit and notice) is made good by
the agent's first wait on the next control plane, or by its periodic pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import event, select
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction, sessionmaker
from sqlalchemy.orm.attributes import get_history

from yunstack.db.tables import network as t

log = logging.getLogger(__name__)

_KEY = "yunstack.network.changes"  # a session's notes, until its commit
WORKER_IDLE_SECONDS = 30.0  # the worker thread ends after this long with nothing to tell


@dataclass
class Change:
    """What one transaction wrote, in the terms its hosts are found by."""

    networks: set[str] = field(default_factory=set)
    ports: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)  # their rules changed: their members are told
    joined: set[str] = field(default_factory=set)  # their members changed: the groups naming them are told
    hosts: set[str] = field(default_factory=set)  # named outright: a port's binding hosts, before and after
    tunnels: set[str] = field(default_factory=set)  # hosts whose tunnel address changed

    def merge(self, other: Change) -> None:
        for name in ("networks", "ports", "groups", "joined", "hosts", "tunnels"):
            getattr(self, name).update(getattr(other, name))

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
    nothing is noted.  A committed change is resolved to hosts on a worker thread, with a
    session of its own, after the commit: reading committed rows, it sees what any other
    transaction committed before it (one resolved inside the transaction missed a host that a
    concurrent, not yet committed boot was adding to the network), a failed read cannot abort
    the transaction whose change it describes, and the request that committed neither waits for
    the reads nor holds its connection while a second one is found (twenty concurrent port
    creations starved SQLite's pool of fifteen when the reads ran after the commit on the
    committing thread).
    """

    def __init__(self, db: sessionmaker[Session], network_host: str) -> None:
        self._db = db
        self.network_host = network_host
        self.notify: Callable[[set[str]], None] | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a change queued, or the worker went idle
        self._queue: list[Change] = []
        self._busy = False  # the worker is resolving a batch
        self._worker: threading.Thread | None = None
        self._closed = False
        event.listen(db, "before_flush", self._before_flush)
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

    def _after_commit(self, s: Session) -> None:
        if s.in_nested_transaction():
            return  # a savepoint's commit: the transaction it is part of may still roll back
        change: Change | None = s.info.pop(_KEY, None)
        if change is not None and self.notify is not None:
            self._submit(change)

    @staticmethod
    def _after_rollback(s: Session, rolled_back: SessionTransaction) -> None:
        if rolled_back.parent is None:  # the whole transaction (a savepoint's rollback keeps the notes:
            s.info.pop(_KEY, None)      # telling a host of a change that did not happen costs one pass)

    # -- the worker ------------------------------------------------------------------------------

    def _submit(self, change: Change) -> None:
        with self._lock:
            if self._closed:
                return
            self._queue.append(change)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="network-changes", daemon=True)
                self._worker.start()
            self._changed.notify_all()

    def _run(self) -> None:
        """Resolve and tell what was committed, a batch at a time; end after a while with nothing."""
        while True:
            with self._lock:
                if not self._queue and not self._closed:
                    self._changed.wait(WORKER_IDLE_SECONDS)
                if not self._queue:
                    self._worker = None
                    self._changed.notify_all()
                    return
                batch, self._queue = self._queue, []
                self._busy = True
            try:
                self._tell(batch)
            finally:
                with self._lock:
                    self._busy = False
                    self._changed.notify_all()

    def _tell(self, batch: list[Change]) -> None:
        merged = Change()
        for change in batch:
            merged.merge(change)
        notify = self.notify
        try:
            with self._db() as s:
                hosts = self.hosts_of(s, merged)
        except Exception:  # the commit stands; the agents' periodic pass makes the notice good
            log.exception("could not resolve a network change to hosts; their next period applies it")
            return
        if notify is not None and hosts:
            notify(hosts)

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until every change committed so far has been told; False if ``timeout`` ran out."""
        with self._lock:
            return self._changed.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self) -> None:
        """Tell what is queued, then stop the worker (the control plane is stopping)."""
        with self._lock:
            self._closed = True
            worker = self._worker
            self._changed.notify_all()
        if worker is not None:
            worker.join(WORKER_IDLE_SECONDS)

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
        bound = (t.Port.binding_host != "") & t.Port.device_owner.like("compute:%")
        if change.tunnels:
            networks |= set(s.scalars(select(t.Port.network_id).where(t.Port.binding_host.in_(change.tunnels))))
            hosts |= change.tunnels
            if self.network_host in change.tunnels:  # it is every network's VXLAN peer
                hosts |= set(s.scalars(select(t.Port.binding_host).distinct().where(bound)))
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
