"""Neutron quotas: defaults, per-project overrides, usage counted from what exists, and the check.

As in compute, nothing is reserved: usage is counted inside the transaction that creates the
resource, and on PostgreSQL a transaction-scoped advisory lock per project serialises two
concurrent creates of one project (SQLite serialises writers anyway).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import network as t
from yunstack.errors import Conflict, Forbidden
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.network.errors import InvalidInput
from yunstack.network.models import QuotaUsage

UNLIMITED = -1
MAX_LIMIT = 0x7FFFFFFF

DEFAULTS: dict[str, int] = {
    "network": 100,
    "subnet": 100,
    "port": 500,
    "router": 10,
    "floatingip": 50,
    "security_group": 10,
    "security_group_rule": 100,
}


class OverQuota(Conflict):
    """Raised when a create would pass a Neutron quota (Neutron's OverQuota is a 409)."""

    message = "Quota exceeded for resources: ['{resource}']."


def _counted(resource: str) -> tuple[Any, Any]:
    table: Any = {
        "network": t.Network, "subnet": t.Subnet, "port": t.Port, "router": t.Router,
        "floatingip": t.FloatingIp, "security_group": t.SecurityGroup,
        "security_group_rule": t.SecurityGroupRule,
    }[resource]
    return table, table.project_id


def _lock_project(session: Session, project_id: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"netquota:{project_id}".encode()) - 2**31
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


class NetworkQuotas:
    def __init__(self, db: sessionmaker[Session]) -> None:
        self._db = db

    # -- building blocks, inside a caller's transaction ---------------------------------------

    def limits(self, session: Session, project_id: str) -> dict[str, int]:
        limits = dict(DEFAULTS)
        rows = session.execute(select(t.NetworkQuota.resource, t.NetworkQuota.hard_limit)
                               .where(t.NetworkQuota.project_id == project_id))
        for resource, hard_limit in rows:
            if resource in limits:
                limits[resource] = hard_limit
        return limits

    def used(self, session: Session, project_id: str, resource: str) -> int:
        table, column = _counted(resource)
        return int(session.scalar(select(func.count()).select_from(table).where(column == project_id)) or 0)

    def check(self, session: Session, project_id: str, deltas: Mapping[str, int]) -> None:
        """Raise OverQuota if adding ``deltas`` would pass a limit; call inside the creating transaction."""
        wanted = {r: d for r, d in deltas.items() if d > 0}
        if not wanted or not project_id:
            return
        _lock_project(session, project_id)
        limits = self.limits(session, project_id)
        for resource, delta in wanted.items():
            limit = limits[resource]
            if limit != UNLIMITED and self.used(session, project_id, resource) + delta > limit:
                raise OverQuota(resource=resource)

    # -- use cases -----------------------------------------------------------------------------

    def _may_read(self, ctx: AuthContext, project_id: str) -> None:
        if not ctx.is_admin and project_id != ctx.project_id:
            raise Forbidden("(rule:get_quota) is disallowed by policy", action="get_quota")

    def show(self, ctx: AuthContext, project_id: str) -> dict[str, int]:
        self._may_read(ctx, project_id)
        with self._db() as s:
            return self.limits(s, project_id)

    def details(self, ctx: AuthContext, project_id: str) -> dict[str, QuotaUsage]:
        self._may_read(ctx, project_id)
        with self._db() as s:
            limits = self.limits(s, project_id)
            return {r: QuotaUsage(limit=limit, used=self.used(s, project_id, r)) for r, limit in limits.items()}

    def defaults(self, ctx: AuthContext, project_id: str) -> dict[str, int]:
        return dict(DEFAULTS)

    def overridden(self, ctx: AuthContext) -> dict[str, dict[str, int]]:
        """Admin only: every project with an override, with its full limits (``GET /quotas``)."""
        policy.require_admin(ctx, "get_quota")
        with self._db() as s:
            projects = sorted(set(s.scalars(select(t.NetworkQuota.project_id))))
            return {p: self.limits(s, p) for p in projects}

    def update(self, ctx: AuthContext, project_id: str, values: Mapping[str, int]) -> dict[str, int]:
        """Admin only: set limits (-1 = unlimited); a limit below what is in use is refused."""
        if not ctx.is_admin:
            raise Forbidden("(rule:update_quota) is disallowed by policy", action="update_quota")
        for resource, value in values.items():
            if resource not in DEFAULTS:
                raise InvalidInput(error_message=f"Unrecognized attribute(s) '{resource}'")
            if not UNLIMITED <= value <= MAX_LIMIT:
                raise InvalidInput(error_message=f"'{value}' should be greater than or equal to -1")
        with self._db.begin() as s:
            _lock_project(s, project_id)
            for resource, value in values.items():
                used = self.used(s, project_id, resource)
                if value != UNLIMITED and value < used:
                    raise InvalidInput(error_message=f"Quota limit {value} for {resource} must be greater "
                                       f"than or equal to already used and reserved {used}")
                row = s.get(t.NetworkQuota, (project_id, resource))
                if row is None:
                    s.add(t.NetworkQuota(project_id=project_id, resource=resource, hard_limit=value))
                else:
                    row.hard_limit = value
            s.flush()
            return self.limits(s, project_id)

    def reset(self, ctx: AuthContext, project_id: str) -> None:
        if not ctx.is_admin:
            raise Forbidden("(rule:delete_quota) is disallowed by policy", action="delete_quota")
        with self._db.begin() as s:
            s.execute(delete(t.NetworkQuota).where(t.NetworkQuota.project_id == project_id))
