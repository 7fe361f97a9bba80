"""Host aggregates (Nova ``os-aggregates``): named sets of hosts with metadata, admin only.

Two metadata keys mean something here:

- ``availability_zone`` puts the aggregate's hosts in that zone, in place of the zone their agent
  reports (``[compute] availability_zone``), for the scheduler's AvailabilityZoneFilter, for
  ``os-availability-zone`` and ``os-services``, and for the zone a new server records.  A host is
  in at most one zone: a change that would put it in two is refused, as Nova does.  A change that
  would move a host that runs servers to another zone is refused too (Nova refuses it for a zone
  update; here also for adding or removing such a host), so a server's recorded zone stays true.
- ``yunstack:memory_balancer`` (``off``, ``advise`` or ``auto``) sets the memory balancer's mode on
  the aggregate's hosts (:meth:`AggregateService.mode_for_hosts`).

Every change runs under the scheduler lock (``db.locks``): a create never places a server on a
host while its zone is changing.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session, sessionmaker

from yunstack.db import locks
from yunstack.db.tables import aggregates as a
from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest, Conflict, NotFound, YunError
from yunstack.identity import policy
from yunstack.identity.context import AuthContext

AZ_KEY = "availability_zone"
BALANCER_KEY = "yunstack:memory_balancer"
BALANCER_MODES = ("off", "advise", "auto")  # most conservative first: the first of a host's values wins
INTERNAL_ZONE = "internal"
_RULE = "os_compute_api:os-aggregates:{}"
_MAX_ID = 2**31 - 1  # the id column is a 32-bit integer on PostgreSQL


@dataclass(frozen=True, kw_only=True)
class Aggregate:
    """One aggregate as the API shows it."""

    id: int
    uuid: str
    name: str
    hosts: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    created_at: datetime
    updated_at: datetime | None

    @property
    def availability_zone(self) -> str | None:
        return self.metadata.get(AZ_KEY)


def host_zones(s: Session, hosts: Collection[str] | None = None) -> dict[str, str]:
    """The zone each host's aggregates put it in (hosts in no zoned aggregate are absent)."""
    h, m = a.AggregateHost, a.AggregateMetadata
    q = (select(h.host, m.value).join(m, m.aggregate_id == h.aggregate_id).where(m.key == AZ_KEY)
         .order_by(h.host, m.value))
    if hosts is not None:
        q = q.where(h.host.in_(list(hosts)))
    return {host: zone for host, zone in s.execute(q)}


def effective_zones(s: Session, hosts: Collection[str]) -> dict[str, str]:
    """Each host's zone: its aggregates' if any, else the one its agent reports."""
    reported: dict[str, str] = {host: zone for host, zone in s.execute(
        select(t.ComputeNode.host, t.ComputeNode.availability_zone).where(t.ComputeNode.host.in_(list(hosts))))}
    return {**reported, **host_zones(s, hosts)}


def follow_host(row: t.Instance) -> None:
    """A server that moved to ``row.host`` shows that host's zone from now on, as Nova's view does.

    Called right after a move sets the host, in the transaction that does it (``row``'s session).
    """
    s = object_session(row)
    if s is None or row.host is None:
        return
    with s.no_autoflush:
        zone = effective_zones(s, [row.host]).get(row.host)
    if zone:
        row.availability_zone = zone


def check_balancer_mode(value: str) -> str:
    """``value`` if it is a memory balancer mode; 400 otherwise."""
    if value not in BALANCER_MODES:
        raise BadRequest("Invalid value {v!r} for metadata key {key}: one of {ok}.", v=value, key=BALANCER_KEY,
                         ok=", ".join(BALANCER_MODES))
    return value


def resolve_modes(values_by_host: Mapping[str, Collection[str]], hosts: Collection[str],
                  default: str) -> dict[str, str]:
    """Each host's balancer mode: the most conservative of its aggregates' values, else ``default``.

    A stored value that is not a mode (written before validation, or by hand) counts as ``off``.
    """
    check_balancer_mode(default)
    rank = {mode: i for i, mode in enumerate(BALANCER_MODES)}
    out = {}
    for host in sorted({*hosts, *values_by_host}):
        values = values_by_host.get(host)
        out[host] = BALANCER_MODES[min(rank.get(v, 0) for v in values)] if values else default
    return out


def _missing(aggregate_id: object) -> NotFound:
    return NotFound("Aggregate {id} could not be found.", id=aggregate_id)


class AggregateService:
    def __init__(self, db: sessionmaker[Session]) -> None:
        self._db = db

    # -- reading ---------------------------------------------------------------------------------

    @staticmethod
    def _row(s: Session, aggregate_id: str) -> a.Aggregate:
        """By Nova's integer id, or by UUID (a convenience); 404 for anything else."""
        row: a.Aggregate | None = None
        text = str(aggregate_id)
        if text.isascii() and text.isdigit():
            if len(text) <= 10 and int(text) <= _MAX_ID:
                row = s.get(a.Aggregate, int(text))
        else:
            try:
                row = s.scalar(select(a.Aggregate).where(a.Aggregate.uuid == str(uuid.UUID(text))))
            except ValueError:
                row = None
        if row is None:
            raise _missing(aggregate_id)
        return row

    @staticmethod
    def _views(s: Session, rows: list[a.Aggregate]) -> list[Aggregate]:
        ids = [r.id for r in rows]
        hosts: dict[int, list[str]] = {i: [] for i in ids}
        meta: dict[int, dict[str, str]] = {i: {} for i in ids}
        if ids:
            for agg_id, host in s.execute(select(a.AggregateHost.aggregate_id, a.AggregateHost.host)
                                          .where(a.AggregateHost.aggregate_id.in_(ids))
                                          .order_by(a.AggregateHost.host)):
                hosts[agg_id].append(host)
            for agg_id, key, value in s.execute(
                    select(a.AggregateMetadata.aggregate_id, a.AggregateMetadata.key, a.AggregateMetadata.value)
                    .where(a.AggregateMetadata.aggregate_id.in_(ids)).order_by(a.AggregateMetadata.key)):
                meta[agg_id][key] = value
        return [Aggregate(id=r.id, uuid=r.uuid, name=r.name, hosts=tuple(hosts[r.id]), metadata=meta[r.id],
                          created_at=r.created_at, updated_at=r.updated_at) for r in rows]

    def list_aggregates(self, ctx: AuthContext) -> list[Aggregate]:
        policy.require_admin(ctx, _RULE.format("index"))
        with self._db() as s:
            return self._views(s, list(s.scalars(select(a.Aggregate).order_by(a.Aggregate.id))))

    def get(self, ctx: AuthContext, aggregate_id: str) -> Aggregate:
        policy.require_admin(ctx, _RULE.format("show"))
        with self._db() as s:
            return self._views(s, [self._row(s, aggregate_id)])[0]

    # -- changing --------------------------------------------------------------------------------

    @staticmethod
    def _check_name(s: Session, name: str, row_id: int | None = None) -> None:
        q = select(a.Aggregate.id).where(a.Aggregate.name == name)
        if row_id is not None:
            q = q.where(a.Aggregate.id != row_id)
        if s.scalar(q) is not None:
            raise Conflict("Aggregate {name} already exists.", name=name)

    @staticmethod
    def _check_zone_name(zone: str | None) -> None:
        if zone is not None and (not zone or ":" in zone):
            raise BadRequest("Invalid availability zone {zone!r}: it must not be empty or contain ':'.", zone=zone)
        if zone == INTERNAL_ZONE:
            raise BadRequest("Aggregates cannot use the internal availability zone {zone!r}.", zone=zone)

    @staticmethod
    def _set_meta(s: Session, row: a.Aggregate, updates: Mapping[str, str | None]) -> None:
        for key, value in updates.items():
            found = s.get(a.AggregateMetadata, (row.id, key))
            if value is None:
                if found is not None:
                    s.delete(found)
            elif found is None:
                s.add(a.AggregateMetadata(aggregate_id=row.id, key=key, value=value))
            else:
                found.value = value
        s.flush()

    @staticmethod
    def _hosts_of(s: Session, row: a.Aggregate) -> list[str]:
        return list(s.scalars(select(a.AggregateHost.host).where(a.AggregateHost.aggregate_id == row.id)))

    @staticmethod
    def _check_zones(s: Session, hosts: Collection[str], before: Mapping[str, str], error: type[YunError]) -> None:
        """After a change (flushed): every host in at most one zone, and no host with servers moved."""
        if not hosts:
            return
        h, m = a.AggregateHost, a.AggregateMetadata
        zones: dict[str, set[str]] = {}
        for host, zone in s.execute(select(h.host, m.value).join(m, m.aggregate_id == h.aggregate_id)
                                    .where(m.key == AZ_KEY, h.host.in_(list(hosts)))):
            zones.setdefault(host, set()).add(zone)
        for host, found in sorted(zones.items()):
            if len(found) > 1:
                raise error("Host {host} would be in more than one availability zone: {zones}.", host=host,
                            zones=", ".join(sorted(found)))
        after = effective_zones(s, hosts)
        moved = sorted(x for x in hosts if before.get(x) != after.get(x))
        if not moved:
            return
        busy = s.scalars(select(t.Instance.host).where(t.Instance.host.in_(moved), t.Instance.vm_state != "deleted")
                         .group_by(t.Instance.host).order_by(t.Instance.host)).all()
        if busy:
            raise error("Cannot change the availability zone of host(s) {hosts}: they run servers, whose zone "
                        "would no longer be true.", hosts=", ".join(str(x) for x in busy))

    def create(self, ctx: AuthContext, name: str, availability_zone: str | None = None) -> Aggregate:
        policy.require_admin(ctx, _RULE.format("create"))
        self._check_zone_name(availability_zone)
        with self._db.begin() as s:
            locks.scheduler_lock(s)
            self._check_name(s, name)
            row = a.Aggregate(uuid=str(uuid.uuid4()), name=name, created_at=datetime.now(UTC))
            s.add(row)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict("Aggregate {name} already exists.", name=name) from None
            if availability_zone is not None:
                self._set_meta(s, row, {AZ_KEY: availability_zone})
            return self._views(s, [row])[0]

    def update(self, ctx: AuthContext, aggregate_id: str, updates: Mapping[str, str | None]) -> Aggregate:
        """``updates`` holds ``name`` and/or ``availability_zone`` (None: the aggregate leaves its zone)."""
        policy.require_admin(ctx, _RULE.format("update"))
        if "availability_zone" in updates:
            self._check_zone_name(updates["availability_zone"])
        with self._db.begin() as s:
            locks.scheduler_lock(s)
            row = self._row(s, aggregate_id)
            name = updates.get("name")
            if name is not None and name != row.name:
                self._check_name(s, name, row.id)
                row.name = name
            if "availability_zone" in updates:
                self._change_meta(s, row, {AZ_KEY: updates["availability_zone"]})
            row.updated_at = datetime.now(UTC)
            return self._views(s, [row])[0]

    def _change_meta(self, s: Session, row: a.Aggregate, updates: Mapping[str, str | None]) -> None:
        hosts = self._hosts_of(s, row)
        before = effective_zones(s, hosts)
        self._set_meta(s, row, updates)
        if AZ_KEY in updates:
            self._check_zones(s, hosts, before, BadRequest)

    def set_metadata(self, ctx: AuthContext, aggregate_id: str, metadata: Mapping[str, str | None]) -> Aggregate:
        """Set keys, and delete those whose value is None (absent keys are no error); others stay."""
        policy.require_admin(ctx, _RULE.format("set_metadata"))
        if AZ_KEY in metadata:
            self._check_zone_name(metadata[AZ_KEY])
        mode = metadata.get(BALANCER_KEY)
        if mode is not None:
            check_balancer_mode(mode)
        with self._db.begin() as s:
            locks.scheduler_lock(s)
            row = self._row(s, aggregate_id)
            self._change_meta(s, row, metadata)
            row.updated_at = datetime.now(UTC)
            return self._views(s, [row])[0]

    def delete(self, ctx: AuthContext, aggregate_id: str) -> None:
        """Only an empty aggregate (Nova: 400 while it has hosts)."""
        policy.require_admin(ctx, _RULE.format("delete"))
        with self._db.begin() as s:
            locks.scheduler_lock(s)  # as add_host: a host added meanwhile is seen, not dropped by the cascade
            row = self._row(s, aggregate_id)
            if self._hosts_of(s, row):
                raise BadRequest("Cannot delete aggregate {id}: it still has hosts; remove them first.",
                                 id=aggregate_id)
            s.execute(delete(a.AggregateMetadata).where(a.AggregateMetadata.aggregate_id == row.id))
            s.delete(row)

    def add_host(self, ctx: AuthContext, aggregate_id: str, host: str) -> Aggregate:
        policy.require_admin(ctx, _RULE.format("add_host"))
        with self._db.begin() as s:
            locks.scheduler_lock(s)
            row = self._row(s, aggregate_id)
            if s.scalar(select(t.ComputeNode.id).where(t.ComputeNode.host == host)) is None:
                raise NotFound("Compute host {host} could not be found.", host=host)
            if s.get(a.AggregateHost, (row.id, host)) is not None:
                raise Conflict("Aggregate {id} already has host {host}.", id=aggregate_id, host=host)
            before = effective_zones(s, [host])
            s.add(a.AggregateHost(aggregate_id=row.id, host=host))
            s.flush()
            self._check_zones(s, [host], before, Conflict)
            row.updated_at = datetime.now(UTC)
            return self._views(s, [row])[0]

    def remove_host(self, ctx: AuthContext, aggregate_id: str, host: str) -> Aggregate:
        policy.require_admin(ctx, _RULE.format("remove_host"))
        with self._db.begin() as s:
            locks.scheduler_lock(s)
            row = self._row(s, aggregate_id)
            found = s.get(a.AggregateHost, (row.id, host))
            if found is None:
                raise NotFound("Cannot remove host {host} in aggregate {id}: it is not in it.", host=host,
                               id=aggregate_id)
            before = effective_zones(s, [host])
            s.delete(found)
            s.flush()
            self._check_zones(s, [host], before, Conflict)
            row.updated_at = datetime.now(UTC)
            return self._views(s, [row])[0]

    @staticmethod
    def forget_host(s: Session, host: str) -> None:
        """A deleted compute service leaves its aggregates (as Nova), in the caller's transaction."""
        s.execute(delete(a.AggregateHost).where(a.AggregateHost.host == host))

    # -- for the memory balancer -------------------------------------------------------------------

    def mode_for_hosts(self, default: str) -> dict[str, str]:
        """Every known host's memory balancer mode, from its aggregates' ``yunstack:memory_balancer``.

        A host in no aggregate with the key gets ``default``; a host whose aggregates disagree gets
        the most conservative of their values (``off`` < ``advise`` < ``auto``).
        """
        check_balancer_mode(default)
        h, m = a.AggregateHost, a.AggregateMetadata
        with self._db() as s:
            known = set(s.scalars(select(t.ComputeNode.host)))
            values: dict[str, set[str]] = {}
            for host, value in s.execute(select(h.host, m.value).join(m, m.aggregate_id == h.aggregate_id)
                                         .where(m.key == BALANCER_KEY)):
                values.setdefault(host, set()).add(value)
        return resolve_modes(values, known, default)
