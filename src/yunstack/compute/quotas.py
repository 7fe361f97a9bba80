"""Compute quotas: defaults, per-project overrides, usage counted from what exists, and the check.

There are no reservations: usage is counted from the instance and keypair tables at the moment
of the check, inside the caller's transaction, so a quota can never drift from reality.  On
PostgreSQL the check takes a transaction-scoped advisory lock per project, which serialises two
concurrent boots of one project; SQLite serialises writers anyway.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import compute as t
from yunstack.db.tables import servergroups as sg
from yunstack.errors import BadRequest, Forbidden, QuotaExceeded
from yunstack.identity import policy
from yunstack.identity.context import AuthContext

UNLIMITED = -1
MAX_LIMIT = 0x7FFFFFFF

DEFAULTS: dict[str, int] = {
    "instances": 10,
    "cores": 20,
    "ram": 51200,
    "key_pairs": 100,
    "metadata_items": 128,
    "injected_files": 5,
    "injected_file_content_bytes": 10240,
    "injected_file_path_bytes": 255,
    "server_groups": 10,
    "server_group_members": 10,
    # Network quotas Nova still showed (as a proxy) below microversion 2.36.
    "floating_ips": 10,
    "fixed_ips": -1,
    "security_groups": 10,
    "security_group_rules": 20,
}
# Hidden (and refused on update) from 2.36 on: the network proxy quotas.
NETWORK_PROXY = ("floating_ips", "fixed_ips", "security_groups", "security_group_rules")


@dataclass(frozen=True, kw_only=True)
class QuotaUsage:
    """One resource's limit and what is in use (reserved is always 0: we count, not reserve)."""

    limit: int
    in_use: int
    reserved: int = 0


def _lock_project(session: Session, project_id: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"quota:{project_id}".encode()) - 2**31
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


class QuotaService:
    def __init__(self, db: sessionmaker[Session]) -> None:
        self._db = db

    # -- building blocks, usable inside a caller's transaction ---------------------------------

    def limits(self, session: Session, project_id: str) -> dict[str, int]:
        """The project's limit for every resource: its overrides over the defaults."""
        limits = dict(DEFAULTS)
        rows = session.execute(select(t.Quota.resource, t.Quota.hard_limit)
                               .where(t.Quota.project_id == project_id))
        for resource, hard_limit in rows:
            if resource in limits:
                limits[resource] = hard_limit
        return limits

    def usage(self, session: Session, project_id: str, user_id: str | None = None) -> dict[str, int]:
        """What the project uses now: servers that are not deleted, their flavors' cores and RAM,
        and the user's keypairs."""
        inst = t.Instance
        count, cores, ram = session.execute(
            select(func.count(inst.id), func.coalesce(func.sum(inst.flavor["vcpus"].as_integer()), 0),
                   func.coalesce(func.sum(inst.flavor["ram"].as_integer()), 0))
            .where(inst.project_id == project_id, inst.vm_state != "deleted")).one()
        used = dict.fromkeys(DEFAULTS, 0)
        used.update(instances=int(count), cores=int(cores), ram=int(ram))
        used["server_groups"] = int(session.scalar(
            select(func.count(sg.ServerGroup.id)).where(sg.ServerGroup.project_id == project_id)) or 0)
        if user_id is not None:
            used["key_pairs"] = int(session.scalar(
                select(func.count(t.KeyPair.id)).where(t.KeyPair.user_id == user_id)) or 0)
        return used

    def lock_project(self, session: Session, project_id: str) -> None:
        """Serialise this project's quota checks until ``session``'s transaction ends (PostgreSQL)."""
        _lock_project(session, project_id)

    def allowed_count(self, session: Session, project_id: str, per_item: Mapping[str, int], low: int,
                      high: int) -> int:
        """How many items of ``per_item`` each fit, as many as possible between ``low`` and ``high``.

        Nova's rule for ``min_count``/``max_count``: make as many as the quota allows, or refuse
        (403 naming the quota) when not even ``low`` fit.  One read of limits and usage whatever
        ``high`` is, so a huge ``max_count`` costs no more than one.
        """
        if low < 1 or high < low:
            raise BadRequest("min_count must be >= 1 and <= max_count.")
        _lock_project(session, project_id)
        limits = self.limits(session, project_id)
        used = self.usage(session, project_id)
        room = high
        for resource, each in per_item.items():
            limit = limits.get(resource, UNLIMITED)
            if each > 0 and limit != UNLIMITED:
                room = min(room, max(0, limit - used[resource]) // each)
        if room < low:
            self.check(session, project_id, {r: each * low for r, each in per_item.items()})  # raises, naming it
        return max(room, low)

    def check(self, session: Session, project_id: str, deltas: Mapping[str, int], *,
              user_id: str | None = None) -> None:
        """Raise QuotaExceeded (403) if adding ``deltas`` would pass a limit; call it inside the
        transaction that then creates the resources.  ``key_pairs`` counts ``user_id``'s keypairs."""
        wanted = {r: d for r, d in deltas.items() if d > 0}
        if not wanted:
            return
        _lock_project(session, project_id)
        limits = self.limits(session, project_id)
        used = self.usage(session, project_id, user_id)
        for resource, delta in wanted.items():
            limit = limits.get(resource, UNLIMITED)
            if limit != UNLIMITED and used[resource] + delta > limit:
                raise QuotaExceeded("Quota exceeded for {resource}: Requested {requested}, but already "
                                    "used {used} of {limit} {resource}", resource=resource,
                                    requested=delta, used=used[resource], limit=limit)

    # -- use cases -----------------------------------------------------------------------------

    def _may_read(self, ctx: AuthContext, project_id: str) -> None:
        if not ctx.is_admin and project_id != ctx.project_id:
            raise Forbidden(action="os_compute_api:os-quota-sets:show")

    def show(self, ctx: AuthContext, project_id: str) -> dict[str, int]:
        self._may_read(ctx, project_id)
        with self._db() as s:
            return self.limits(s, project_id)

    def detail(self, ctx: AuthContext, project_id: str) -> dict[str, QuotaUsage]:
        self._may_read(ctx, project_id)
        user_id = ctx.user.id if project_id == ctx.project_id else None
        with self._db() as s:
            limits = self.limits(s, project_id)
            used = self.usage(s, project_id, user_id)
        return {r: QuotaUsage(limit=limits[r], in_use=used[r]) for r in limits}

    def defaults(self, ctx: AuthContext, project_id: str) -> dict[str, int]:
        return dict(DEFAULTS)

    def update(self, ctx: AuthContext, project_id: str, values: Mapping[str, int], *,
               force: bool = False) -> dict[str, int]:
        """Admin only: set limits (-1 = unlimited).  Below what is in use is refused unless forced."""
        policy.require_admin(ctx, "os_compute_api:os-quota-sets:update")
        for resource, value in values.items():
            if resource not in DEFAULTS:
                raise BadRequest("Unknown quota resource {resource}.", resource=resource)
            if not UNLIMITED <= value <= MAX_LIMIT:
                raise BadRequest("Quota limit {value} for {resource} must be -1 or greater.",
                                 value=value, resource=resource)
        with self._db.begin() as s:
            _lock_project(s, project_id)
            if not force:
                used = self.usage(s, project_id)
                for resource, value in values.items():
                    if value != UNLIMITED and value < used[resource]:
                        raise BadRequest("Quota limit {value} for {resource} must be greater than or "
                                         "equal to already used and reserved {used}.", value=value,
                                         resource=resource, used=used[resource])
            for resource, value in values.items():
                row = s.get(t.Quota, (project_id, resource))
                if row is None:
                    s.add(t.Quota(project_id=project_id, resource=resource, hard_limit=value))
                else:
                    row.hard_limit = value
            s.flush()
            return self.limits(s, project_id)

    def reset(self, ctx: AuthContext, project_id: str) -> None:
        """Admin only: drop the project's overrides, back to the defaults."""
        policy.require_admin(ctx, "os_compute_api:os-quota-sets:delete")
        with self._db.begin() as s:
            s.execute(delete(t.Quota).where(t.Quota.project_id == project_id))

    def absolute(self, ctx: AuthContext, project_id: str | None = None) -> dict[str, QuotaUsage]:
        """For ``GET /limits``: the caller's project, or (admins only) ``project_id``'s."""
        if project_id is not None and project_id != ctx.project_id:
            policy.require_admin(ctx, "os_compute_api:limits:other_project")
        target = project_id or ctx.project_id or ""
        with self._db() as s:
            limits = self.limits(s, target)
            used = self.usage(s, target, ctx.user.id if target == ctx.project_id else None)
        return {r: QuotaUsage(limit=limits[r], in_use=used[r]) for r in limits}
