"""Compute hosts: the agents' heartbeats, host usage for the scheduler, hypervisors and zones.

A host's row (``compute_node``) holds what its agent last reported; ``updated_at`` is when the
control plane last heard from the agent, and a host is *up* while that is younger than
``down_after`` seconds (``[compute] host_down_after``, 30 s by default).  An agent always holds a
long-poll (``wait``), and each one it starts counts (``seen``); the control plane ends a wait after
at most two thirds of ``down_after`` (``longest_wait``), so a live agent is seen well within it and
a killed agent's host is down within ``down_after``.  The resource report (``heartbeat``) comes
once a minute, or sooner when something the scheduler uses changed.  ``clock`` is the one source
of "now" for both sides of that comparison, so tests move time instead of sleeping.  What guests are
*allocated* on a host is not reported but counted from the instance table (the flavors of the
host's instances that are not deleted), so the scheduler and the API see claims at once.

Nova before microversion 2.53 names hypervisors by integer.  Ours are UUIDs, so the integer is
the UUID's first 32 bits; ``heartbeat`` picks UUIDs whose prefixes are unique, which makes the
integer stable, unique and an indexed prefix lookup.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import typing
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, Text, bindparam, case, cast, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import aggregates, memoryledger, scheduler
from yunstack.compute.driver import Capabilities, HostInfo, PowerState
from yunstack.compute.hostauth import KnownCredentials
from yunstack.db.tables import compute as t
from yunstack.db.tables import hosts as h
from yunstack.db.tables import migrations as mig
from yunstack.errors import BadRequest, Conflict, NotFound
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.types import utcnow

DOWN_AFTER = 30.0
SEEN_WRITE_SECONDS = 2.0  # the hosts seen are written at most this often (per API process)
INTERNAL_ZONE = "internal"
_NOTHING = (0, 0, 0, 0, 0, 0)  # a host's allocations when nothing is on it


@functools.lru_cache(maxsize=256)
def _capabilities(reported: str | None) -> Capabilities | None:
    """A capabilities report as stored (JSON text), parsed once per distinct report."""
    data = None if reported is None else json.loads(reported)
    return None if data is None else Capabilities.from_dict(data)


def api_id(node_id: str) -> int:
    """The integer id Nova clients see below microversion 2.53."""
    return int(node_id.replace("-", "")[:8], 16)


@dataclass(frozen=True, kw_only=True)
class HostUsage:
    """One host: its size as reported, its allocations as counted, and its state."""

    id: str
    api_id: int
    host: str
    availability_zone: str
    vcpus: int
    memory_mib: int
    local_gb: int
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    disk_allocation_ratio: float
    reserved_host_memory_mib: int
    vcpus_used: int  # allocated: sum of the flavors' vcpus
    memory_used_mib: int  # allocated: sum of the flavors' RAM (without the reserved part)
    disk_used_gb: int  # allocated: sum of the flavors' root + ephemeral disk
    instances: int  # instances on the host that are not deleted
    running: int  # of those, the ones powered on
    workload: int  # of those, the ones with a task in progress
    disabled: bool
    disabled_reason: str | None
    up: bool
    reported_memory_used_mib: int  # what the host itself says is in use
    reported_local_gb_used: int
    hypervisor_type: str
    hypervisor_version: int
    cpu_info: str
    host_ip: str
    uptime: str
    accel: str
    updated_at: datetime
    stats: dict[str, Any] = field(default_factory=dict)
    capabilities: Capabilities | None = None  # None: the host has not reported them (yet)

    @property
    def observed_free_mib(self) -> int | None:
        """The memory manager's admission room on the host (``stats``), MiB; None = not reported yet."""
        value = self.stats.get("observed_free_mib")
        return None if value is None else int(value)

    @property
    def memory_mb_used(self) -> int:
        """Nova's ``memory_mb_used``: the reserved part plus the allocations."""
        return self.reserved_host_memory_mib + self.memory_used_mib

    @property
    def free_ram_mb(self) -> int:
        return self.memory_mib - self.memory_mb_used

    @property
    def free_disk_gb(self) -> int:
        return self.local_gb - self.disk_used_gb

    @property
    def disk_available_least(self) -> int:
        """Disk actually free on the host (copy-on-write overlays use less than they are given)."""
        return self.local_gb - self.reported_local_gb_used


@dataclass(frozen=True, kw_only=True)
class ZoneHost:
    host: str
    service: str
    available: bool
    active: bool
    updated_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class Zone:
    name: str
    available: bool
    hosts: tuple[ZoneHost, ...] = ()


_NODES = typing.cast(Table, t.ComputeNode.__table__)
# What a resource report writes (``HostService.heartbeat``), as one statement built once.
_REPORTED = ("availability_zone", "vcpus", "memory_mib", "memory_used_mib", "local_gb", "local_gb_used",
             "hypervisor_type", "hypervisor_version", "cpu_info", "uptime", "accel", "capabilities", "host_ip",
             "ram_allocation_ratio", "cpu_allocation_ratio", "disk_allocation_ratio", "reserved_host_memory_mib",
             "updated_at")
_REPORT = (update(_NODES).where(_NODES.c.host == bindparam("r_host"))
           .values({_NODES.c[c]: bindparam(f"r_{c}") for c in _REPORTED}).returning(_NODES.c.id))

# ``HostService.seen``'s batch; never backwards: a resource report may have written a later time.
_SEEN = (update(_NODES).where(_NODES.c.host == bindparam("b_host"), _NODES.c.updated_at < bindparam("b_at"))
         .values(updated_at=bindparam("b_at")))


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class HostService:
    def __init__(self, db: sessionmaker[Session], *, down_after: float = DOWN_AFTER,
                 control_host: str = "localhost", clock: Callable[[], datetime] = utcnow,
                 known: KnownCredentials | None = None, statements: Engine | None = None) -> None:
        if not down_after > 0:
            raise BadRequest("[compute] host_down_after must be a positive number of seconds.")
        self._db = db
        self.down_after = down_after
        self.clock = clock  # "now" for heartbeats and the up/down verdict alike
        self._control_host = control_host
        self._seen: dict[str, datetime] = {}  # host -> when it was seen, not yet written
        self._seen_written = float("-inf")  # time.monotonic() of the last write
        self._seen_lock = threading.Lock()
        self._known = known  # the credentials the agent API trusts for a while (hostauth)
        self._statements = statements  # autocommit: a report is one UPDATE (db.engine.make_engine)

    # -- the agent's side ----------------------------------------------------------------------

    @property
    def longest_wait(self) -> float:
        """The longest long-poll the control plane holds: a live agent starts its next one (and
        is seen) well before ``down_after`` runs out."""
        return max(1.0, self.down_after * 2 / 3)

    def seen(self, host: str) -> None:
        """``host``'s agent just called (it starts a long-poll): it is up as of now.

        Written in batches: each call notes the host, and the first call at least
        ``SEEN_WRITE_SECONDS`` after the last write writes every host noted since, in one
        statement.  A thousand hosts long-polling are then a few writes a second, not fifty;
        a host's row is at most that late, and never later than its next long-poll.
        """
        now = self.clock()
        with self._seen_lock:
            self._seen[host] = max(now, self._seen.get(host, now))
            if time.monotonic() - self._seen_written < SEEN_WRITE_SECONDS:
                return
            batch, self._seen = self._seen, {}
            self._seen_written = time.monotonic()
        with self._db.begin() as s:
            s.execute(_SEEN, [{"b_host": h, "b_at": at} for h, at in sorted(batch.items())])

    def heartbeat(self, host: str, info: HostInfo, *, availability_zone: str, ram_allocation_ratio: float,
                  cpu_allocation_ratio: float, disk_allocation_ratio: float, reserved_host_memory_mib: int,
                  host_ip: str = "127.0.0.1") -> str:
        """Create or refresh ``host``'s row from the driver's report; returns the node's id.

        The disabled flag and reason belong to the operator and are left alone.
        """
        now = self.clock()
        values: dict[str, Any] = dict(
            availability_zone=availability_zone, vcpus=info.vcpus, memory_mib=info.memory_mib,
            memory_used_mib=info.memory_used_mib, local_gb=info.local_gb, local_gb_used=info.local_gb_used,
            hypervisor_type=info.hypervisor_type, hypervisor_version=info.hypervisor_version,
            cpu_info=info.cpu_info, uptime=info.uptime, accel=info.accel,
            capabilities=info.capabilities.to_dict(), host_ip=host_ip,
            ram_allocation_ratio=ram_allocation_ratio, cpu_allocation_ratio=cpu_allocation_ratio,
            disk_allocation_ratio=disk_allocation_ratio, reserved_host_memory_mib=reserved_host_memory_mib,
            updated_at=now)
        # A known host (every report but its first): one UPDATE, built once, no ORM object, and
        # with ``statements`` no transaction around it (one statement is atomic by itself).
        params = {"r_host": host, **{f"r_{k}": v for k, v in values.items()}}
        if self._statements is not None:
            with self._statements.connect() as c:
                node_id = c.execute(_REPORT, params).scalar()
            if node_id is not None:
                return str(node_id)
        with self._db.begin() as s:
            node_id = s.execute(_REPORT, params).scalar()
            if node_id is None:
                node_id = self._new_node_id(s)
                s.add(t.ComputeNode(id=node_id, host=host, created_at=now, disabled=False, stats={}, **values))
        return str(node_id)

    @staticmethod
    def _new_node_id(s: Session) -> str:
        while True:
            candidate = str(uuid.uuid4())
            if s.scalar(select(t.ComputeNode.id).where(t.ComputeNode.id.like(candidate[:8] + "%"))) is None:
                return candidate

    # -- the scheduler's side ------------------------------------------------------------------

    def host_states(self, session: Session, hosts: Collection[str] | None = None) -> list[HostUsage]:
        """Every host (or those named) with its allocations and zone, in five queries whatever the host count.

        Takes the caller's session so a scheduler can read and claim in one transaction.
        """
        used = self._allocations(session, hosts)
        # Plain rows, not ORM objects: at 1,000 hosts the identity map costs more than the query.
        nodes = t.ComputeNode.__table__
        node_q = select(nodes).order_by(nodes.c.id)
        if hosts is not None:
            node_q = node_q.where(nodes.c.host.in_(list(hosts)))
        cutoff = self.clock() - timedelta(seconds=self.down_after)
        zones = aggregates.host_zones(session, hosts)  # an aggregate's zone outranks the reported one
        states = []
        for n in session.execute(node_q):
            count, vcpus, ram, disk, running, workload = used.get(n.host, _NOTHING)
            states.append(HostUsage(
                id=n.id, api_id=api_id(n.id), host=n.host, availability_zone=zones.get(n.host, n.availability_zone),
                vcpus=n.vcpus, memory_mib=n.memory_mib, local_gb=n.local_gb,
                cpu_allocation_ratio=n.cpu_allocation_ratio, ram_allocation_ratio=n.ram_allocation_ratio,
                disk_allocation_ratio=n.disk_allocation_ratio,
                reserved_host_memory_mib=n.reserved_host_memory_mib, vcpus_used=vcpus, memory_used_mib=ram,
                disk_used_gb=disk, instances=count, running=running, workload=workload,
                disabled=n.disabled, disabled_reason=n.disabled_reason, up=n.updated_at >= cutoff,
                reported_memory_used_mib=n.memory_used_mib, reported_local_gb_used=n.local_gb_used,
                hypervisor_type=n.hypervisor_type, hypervisor_version=n.hypervisor_version,
                cpu_info=n.cpu_info, host_ip=n.host_ip, uptime=n.uptime, accel=n.accel,
                updated_at=n.updated_at, stats=dict(n.stats or {}),
                capabilities=None if n.capabilities is None else Capabilities.from_dict(n.capabilities)))
        return states

    @staticmethod
    def scheduling_rows(session: Session) -> list[Any]:
        """The hosts' rows as ``scheduling`` reads them: what the scheduler filters and weighs on.

        A claim does not change these (reports, liveness and enable/disable are not serialised by
        the scheduler lock either), so a create reads them before it takes the lock and holds it
        only for the allocations, which claims do change.
        """
        n = t.ComputeNode
        return list(session.execute(select(
            n.host, n.availability_zone, n.updated_at, n.disabled, n.vcpus, n.memory_mib, n.local_gb,
            n.ram_allocation_ratio, n.cpu_allocation_ratio, n.disk_allocation_ratio, n.reserved_host_memory_mib,
            n.hypervisor_type, n.stats["observed_free_mib"].as_integer(), cast(n.capabilities, Text),
            n.stats["observed_physical_mib"].as_integer(), n.stats["observed_used_mib"].as_integer(),
            n.stats["observed_level"].as_integer(), n.stats["observed_psi"].as_float(),
            n.stats["observed_at"].as_float(), n.stats["observed_swap_in"].as_float(),
            n.stats["observed_swap_out"].as_float(), n.stats["observed_clone_mib"])
            .order_by(n.id)))

    def scheduling(self, session: Session, rows: Sequence[Any] | None = None) -> list[scheduler.HostState]:
        """Every host as the scheduler sees it, its allocations read in the caller's transaction
        (its claim's); ``rows`` from ``scheduling_rows`` if the caller read them already.

        Only what the scheduler looks at: the columns it filters and weighs on, the allocations,
        and the capabilities, parsed once per distinct report (a thousand hosts send a handful of
        different ones).  ``host_states`` builds every host's whole view (the API's) and costs
        several times more at 1,000 hosts.
        """
        used = self._allocations(session, None)
        if rows is None:
            rows = self.scheduling_rows(session)
        now = self.clock()
        cutoff = now - timedelta(seconds=self.down_after)
        observed_since = (now - memoryledger.OBSERVED_FOR).timestamp()
        zones = aggregates.host_zones(session)  # read under the lock: zone changes take it too
        states = []
        for (host, zone, updated_at, disabled, vcpus, memory_mib, local_gb, ram_ratio, cpu_ratio, disk_ratio,
             reserved, hypervisor_type, observed_free, capabilities, physical, observed_used, level, psi,
             observed_at, swap_in, swap_out, clones) in rows:
            count, vcpus_used, ram, disk, _running, _workload = used.get(host, _NOTHING)
            if observed_at is None or observed_at < observed_since:  # no report lately: not observed
                observed_free = physical = observed_used = clones = None
            states.append(scheduler.HostState(
                host=host, availability_zone=zones.get(host, zone), up=updated_at >= cutoff, disabled=disabled,
                vcpus=vcpus, memory_mib=memory_mib, local_gb=local_gb, vcpus_used=vcpus_used, memory_used_mib=ram,
                disk_used_gb=disk, ram_allocation_ratio=ram_ratio, cpu_allocation_ratio=cpu_ratio,
                disk_allocation_ratio=disk_ratio, reserved_host_memory_mib=reserved, instances=count,
                hypervisor_type=hypervisor_type, capabilities=_capabilities(capabilities),
                observed_free_mib=None if observed_free is None else int(observed_free),
                observed_physical_mib=None if physical is None else int(physical),
                observed_used_mib=None if observed_used is None else int(observed_used),
                observed_level=int(level or 0), observed_psi=float(psi or 0.0),
                observed_swap_in=float(swap_in or 0.0), observed_swap_out=float(swap_out or 0.0),
                clone_mib=_clone_costs(clones)))
        return states

    @staticmethod
    def _allocations(session: Session, hosts: Collection[str] | None) -> dict[str, tuple[int, ...]]:
        """Per host: (instances, vcpus, RAM MiB, disk GB, running, with a task) of what is on it or
        on its way to it, in three queries whatever the host count."""
        inst = t.Instance
        fl = inst.flavor
        usage_q = (
            select(inst.host, func.count(inst.id),
                   func.coalesce(func.sum(fl["vcpus"].as_integer()), 0),
                   func.coalesce(func.sum(fl["ram"].as_integer()), 0),
                   func.coalesce(func.sum(fl["disk"].as_integer() + fl["ephemeral"].as_integer()), 0),
                   func.coalesce(func.sum(case((inst.power_state == int(PowerState.RUNNING), 1), else_=0)), 0),
                   func.coalesce(func.sum(case((inst.task_state.is_not(None), 1), else_=0)), 0))
            .where(inst.host.is_not(None), inst.vm_state != "deleted")
            .group_by(inst.host))
        if hosts is not None:
            usage_q = usage_q.where(inst.host.in_(list(hosts)))
        used = {row[0]: tuple(int(x) for x in row[1:]) for row in session.execute(usage_q)}
        # A server on its way to a host holds its size there too, from the moment the move is
        # accepted until it arrives (then its own row counts it): two moves never overbook a host.
        m = mig.Migration
        incoming_q = (
            select(m.dest_compute,
                   func.coalesce(func.sum(fl["vcpus"].as_integer()), 0),
                   func.coalesce(func.sum(fl["ram"].as_integer()), 0),
                   func.coalesce(func.sum(fl["disk"].as_integer() + fl["ephemeral"].as_integer()), 0))
            .join(inst, inst.id == m.instance_uuid)
            .where(mig.arriving(), inst.vm_state != "deleted")
            .group_by(m.dest_compute))
        if hosts is not None:
            incoming_q = incoming_q.where(m.dest_compute.in_(list(hosts)))
        # A cold move that waits for its confirm holds its old size on the source, for a revert.
        old = inst.old_flavor
        held_q = (
            select(m.source_compute,
                   func.coalesce(func.sum(old["vcpus"].as_integer()), 0),
                   func.coalesce(func.sum(old["ram"].as_integer()), 0),
                   func.coalesce(func.sum(old["disk"].as_integer() + old["ephemeral"].as_integer()), 0))
            .join(inst, inst.id == m.instance_uuid)
            .where(mig.unconfirmed(), inst.vm_state != "deleted", inst.old_flavor.is_not(None))
            .group_by(m.source_compute))
        if hosts is not None:
            held_q = held_q.where(m.source_compute.in_(list(hosts)))
        for query in (incoming_q, held_q):
            for dest, vcpus_in, ram_in, disk_in in session.execute(query):
                count, vcpus, ram, disk, running, workload = used.get(dest, _NOTHING)
                used[dest] = (count, vcpus + int(vcpus_in), ram + int(ram_in), disk + int(disk_in), running,
                              workload)
        return used

    def set_disabled(self, ctx: AuthContext, host: str, disabled: bool, reason: str | None = None) -> None:
        """Admin only: take a host out of scheduling (or back); its guests keep running."""
        policy.require_admin(ctx, "os_compute_api:os-services:update")
        with self._db.begin() as s:
            row = s.scalar(select(t.ComputeNode).where(t.ComputeNode.host == host))
            if row is None:
                raise NotFound("Compute host {host} could not be found.", host=host)
            row.disabled = disabled
            row.disabled_reason = reason if disabled else None

    def service_host(self, ctx: AuthContext, service_id: str) -> str:
        """The host of a service named by its id: the UUID from 2.53, the integer before (404 if none)."""
        policy.require_admin(ctx, "os_compute_api:os-services:update")
        missing = NotFound("Service {id} could not be found.", id=service_id)
        with self._db() as s:
            if service_id.isascii() and service_id.isdigit():
                if len(service_id) > 10 or int(service_id) > 0xFFFFFFFF:
                    raise missing
                query = select(t.ComputeNode.host).where(t.ComputeNode.id.like(f"{int(service_id):08x}%"))
            else:
                query = select(t.ComputeNode.host).where(t.ComputeNode.id == service_id)
            host = s.scalar(query)
        if host is None:
            raise missing
        return host

    def delete_service(self, ctx: AuthContext, service_id: str) -> None:
        """Admin only: forget a host (Nova's service delete); refused while servers are on it.

        Its agent's credential is revoked as well, so a host that was only partitioned cannot
        come back as if nothing happened: it must be added and joined again (``yun host add``).
        """
        policy.require_admin(ctx, "os_compute_api:os-services:delete")
        host = self.service_host(ctx, service_id)
        with self._db.begin() as s:
            busy = s.scalar(select(func.count(t.Instance.id)).where(t.Instance.host == host,
                                                                     t.Instance.vm_state != "deleted"))
            if busy:
                raise Conflict("Unable to delete compute service that is hosting instances. Migrate or "
                               "delete the instances first.")
            s.execute(delete(t.ComputeNode).where(t.ComputeNode.host == host))
            s.execute(delete(h.HostCredential).where(h.HostCredential.host == host))
            aggregates.AggregateService.forget_host(s, host)
        if self._known is not None:
            self._known.forget(host)

    # -- os-services and os-migrations (admin only) ----------------------------------------------

    def list_services(self, ctx: AuthContext, *, host: str | None = None,
                      binary: str | None = None) -> list[HostUsage]:
        """The nova-compute service of every host (the only service that runs apart from the API)."""
        policy.require_admin(ctx, "os_compute_api:os-services:list")
        if binary not in (None, "", "nova-compute"):
            return []
        with self._db() as s:
            nodes = self.host_states(s, [host] if host else None)
        return nodes

    def is_up(self, s: Session, host: str) -> bool | None:
        """Whether ``host``'s agent heartbeat is recent; None when there is no such host."""
        updated = s.scalar(select(t.ComputeNode.updated_at).where(t.ComputeNode.host == host))
        if updated is None:
            return None
        return bool(updated >= self.clock() - timedelta(seconds=self.down_after))

    # -- os-hypervisors (admin only) -----------------------------------------------------------

    def list_hypervisors(self, ctx: AuthContext, *, limit: int | None = None,
                         marker: str | None = None) -> list[HostUsage]:
        """Hypervisors by id; ``marker`` is the integer id of the last one of the previous page."""
        policy.require_admin(ctx, "os_compute_api:os-hypervisors:list")
        with self._db() as s:
            nodes = self.host_states(s)
        if marker is not None:
            ids = [str(n.api_id) for n in nodes]
            if marker not in ids:
                raise _bad_marker(marker)
            nodes = nodes[ids.index(marker) + 1:]
        return nodes if limit is None else nodes[:limit]

    def get_hypervisor(self, ctx: AuthContext, hypervisor_id: str) -> HostUsage:
        policy.require_admin(ctx, "os_compute_api:os-hypervisors:show")
        missing = NotFound("Hypervisor with ID '{id}' could not be found.", id=hypervisor_id)
        if not (hypervisor_id.isascii() and hypervisor_id.isdigit()) or len(hypervisor_id) > 10 \
                or int(hypervisor_id) > 0xFFFFFFFF:
            raise missing
        prefix = f"{int(hypervisor_id):08x}"
        with self._db() as s:
            host = s.scalar(select(t.ComputeNode.host).where(t.ComputeNode.id.like(prefix + "%")))
            states = self.host_states(s, [host]) if host is not None else []
        if not states:
            raise missing
        return states[0]

    def search(self, ctx: AuthContext, pattern: str) -> list[HostUsage]:
        """Hypervisors whose name contains ``pattern``; 404 when none does."""
        policy.require_admin(ctx, "os_compute_api:os-hypervisors:search")
        with self._db() as s:
            hosts = list(s.scalars(select(t.ComputeNode.host)
                                   .where(t.ComputeNode.host.like(_like(pattern), escape="\\"))))
            states = self.host_states(s, hosts) if hosts else []
        if not states:
            raise NotFound("No hypervisor matching '{pattern}' could be found.", pattern=pattern)
        return states

    def servers(self, ctx: AuthContext, pattern: str) -> list[tuple[HostUsage, list[tuple[str, str]]]]:
        """Matching hypervisors with the (name, id) of each instance on them."""
        nodes = self.search(ctx, pattern)
        with self._db() as s:
            rows = s.execute(select(t.Instance.host, t.Instance.name, t.Instance.id)
                             .where(t.Instance.host.in_([n.host for n in nodes]),
                                    t.Instance.vm_state != "deleted")
                             .order_by(t.Instance.created_at))
            by_host: dict[str, list[tuple[str, str]]] = {}
            for host, name, instance_id in rows:
                by_host.setdefault(str(host), []).append((name, instance_id))
        return [(n, by_host.get(n.host, [])) for n in nodes]

    def statistics(self, ctx: AuthContext) -> dict[str, int]:
        policy.require_admin(ctx, "os_compute_api:os-hypervisors:statistics")
        with self._db() as s:
            nodes = self.host_states(s)
        return {
            "count": len(nodes),
            "vcpus": sum(n.vcpus for n in nodes),
            "memory_mb": sum(n.memory_mib for n in nodes),
            "local_gb": sum(n.local_gb for n in nodes),
            "vcpus_used": sum(n.vcpus_used for n in nodes),
            "memory_mb_used": sum(n.memory_mb_used for n in nodes),
            "local_gb_used": sum(n.disk_used_gb for n in nodes),
            "free_ram_mb": sum(n.free_ram_mb for n in nodes),
            "free_disk_gb": sum(n.free_disk_gb for n in nodes),
            "current_workload": sum(n.workload for n in nodes),
            "running_vms": sum(n.instances for n in nodes),
            "disk_available_least": sum(n.disk_available_least for n in nodes),
            # yunstack extension (documented in docs/api-changes.md): what memory overcommit saves.
            **_memory_totals(nodes),
        }

    # -- os-availability-zone ------------------------------------------------------------------

    def availability_zones(self, ctx: AuthContext, *, detail: bool = False) -> list[Zone]:
        """Zones of the compute hosts; a zone is available while one of its hosts is enabled.

        ``detail`` (admins only) adds each zone's hosts and Nova's ``internal`` zone, which holds
        the control plane (scheduler and conductor run inside the API process here).
        """
        if detail:
            policy.require_admin(ctx, "os_compute_api:os-availability-zone:detail")
        with self._db() as s:
            nodes = self.host_states(s)
        zones: dict[str, list[HostUsage]] = {}
        for n in nodes:
            zones.setdefault(n.availability_zone, []).append(n)
        result = []
        if detail:
            now = utcnow()
            result.append(Zone(name=INTERNAL_ZONE, available=True, hosts=tuple(
                ZoneHost(host=self._control_host, service=svc, available=True, active=True, updated_at=now)
                for svc in ("nova-conductor", "nova-scheduler"))))
        for name in sorted(zones):
            members = zones[name]
            hosts = tuple(ZoneHost(host=n.host, service="nova-compute", available=n.up and not n.disabled,
                                   active=not n.disabled, updated_at=n.updated_at) for n in members)
            result.append(Zone(name=name, available=any(not n.disabled for n in members),
                               hosts=hosts if detail else ()))
        return result


def _bad_marker(marker: str) -> BadRequest:
    return BadRequest("marker [{marker}] not found", marker=marker)


def cpu_info_dict(cpu_info: str) -> dict[str, Any]:
    """``cpu_info`` as a dict (microversion 2.28+); an empty or invalid string becomes ``{}``."""
    try:
        value = json.loads(cpu_info) if cpu_info else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _memory_totals(nodes: Sequence[HostUsage]) -> dict[str, int]:
    """Host memory-ledger sums for the statistics view, from each node's latest reported entry."""
    keys = ("committed", "guests_used", "savings_ksm", "savings_balloon", "savings_swap")
    totals = dict.fromkeys(keys, 0)
    for n in nodes:
        host = (n.stats.get("memory") or {}).get("host") or {}
        for key in keys:
            totals[key] += int(host.get(key, 0) or 0)
    mib = 1 << 20
    return {"yunstack:memory_committed_mb": totals["committed"] // mib,
            "yunstack:memory_guests_used_mb": totals["guests_used"] // mib,
            "yunstack:memory_saved_ksm_mb": totals["savings_ksm"] // mib,
            "yunstack:memory_saved_balloon_mb": totals["savings_balloon"] // mib,
            "yunstack:memory_saved_swap_mb": totals["savings_swap"] // mib}


def _clone_costs(value: Any) -> dict[str, int]:
    """``stats["observed_clone_mib"]`` as the scheduler reads it: shape -> MiB, nothing unusable."""
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}
