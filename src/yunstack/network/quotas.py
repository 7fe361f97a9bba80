"""Neutron quotas on the one quota engine (``yunstack.quota``): defaults, overrides, the check.

As in compute, nothing is reserved: usage is counted inside the transaction that creates the
resource, under the project's lock (``netquota:<project>``: an advisory lock on PostgreSQL, the
single writer on SQLite), so two concurrent creates of one project check one after the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import network as t
from yunstack.errors import Conflict, Forbidden
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.network.errors import InvalidInput
from yunstack.network.models import QuotaUsage
from yunstack.quota import MAX_LIMIT, UNLIMITED, QuotaEngine

DEFAULTS: dict[str, int] = {
    "network": 100,
    "subnet": 100,
    "port": 500,
    "router": 10,
    "floatingip": 50,
    "security_group": 10,
    "security_group_rule": 100,
}
_TABLES: dict[str, Any] = {
    "network": t.Network, "subnet": t.Subnet, "port": t.Port, "router": t.Router,
    "floatingip": t.FloatingIp, "security_group": t.SecurityGroup,
    "security_group_rule": t.SecurityGroupRule,
}


class OverQuota(Conflict):
    """Raised when a create would pass a Neutron quota (Neutron's OverQuota is a 409)."""

    message = "Quota exceeded for resources: ['{resource}']."


def _over(resource: str, _requested: int, _used: int, _limit: int) -> OverQuota:
    return OverQuota(resource=resource)


def _below_usage(resource: str, value: int, used: int, _limit: int) -> InvalidInput:
    return InvalidInput(error_message=f"Quota limit {value} for {resource} must be greater than or equal to "
                        f"already used and reserved {used}")


def _count(resource: str, session: Session, project_id: str, _user_id: str | None) -> dict[str, int]:
    """One resource, one query: a check for a port counts only ports."""
    table = _TABLES[resource]
    return {resource: int(session.scalar(
        select(func.count()).select_from(table).where(table.project_id == project_id)) or 0)}


def engine() -> QuotaEngine:
    """Neutron's quota engine: each resource counted from its own table."""
    quota = QuotaEngine("netquota", t.NetworkQuota, _over)
    for resource, default in DEFAULTS.items():
        quota.register({resource: default}, partial(_count, resource))
    return quota


class NetworkQuotas:
    def __init__(self, db: sessionmaker[Session]) -> None:
        self._db = db
        self.engine = engine()

    # -- building blocks, inside a caller's transaction ---------------------------------------

    def limits(self, session: Session, project_id: str) -> dict[str, int]:
        return self.engine.limits(session, project_id)

    def used(self, session: Session, project_id: str, resource: str) -> int:
        return self.engine.usage(session, project_id, only=(resource,))[resource]

    def check(self, session: Session, project_id: str, deltas: Mapping[str, int]) -> None:
        """Raise OverQuota if adding ``deltas`` would pass a limit; call inside the creating transaction."""
        if project_id:  # a resource of no project (made by the system) counts against none
            self.engine.check(session, project_id, deltas)

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
            used = self.engine.usage(s, project_id)
        return {r: QuotaUsage(limit=limit, used=used[r]) for r, limit in limits.items()}

    def defaults(self, ctx: AuthContext, project_id: str) -> dict[str, int]:
        return dict(DEFAULTS)

    def overridden(self, ctx: AuthContext) -> dict[str, dict[str, int]]:
        """Admin only: every project with an override, with its full limits (``GET /quotas``)."""
        policy.require_admin(ctx, "get_quota")
        with self._db() as s:
            return {p: self.limits(s, p) for p in self.engine.overridden_projects(s)}

    def update(self, ctx: AuthContext, project_id: str, values: Mapping[str, int], *,
               check_limit: bool = False) -> dict[str, int]:
        """Admin only: set limits (-1 = unlimited).  As Neutron: a limit below what is in use is
        refused only with ``check_limit``; otherwise it is set, and only new resources are refused."""
        if not ctx.is_admin:
            raise Forbidden("(rule:update_quota) is disallowed by policy", action="update_quota")
        for resource, value in values.items():
            if resource not in DEFAULTS:
                raise InvalidInput(error_message=f"Unrecognized attribute(s) '{resource}'")
            if not UNLIMITED <= value <= MAX_LIMIT:
                raise InvalidInput(error_message=f"'{value}' should be greater than or equal to -1")
        with self._db.begin() as s:
            return self.engine.set_limits(s, project_id, values, below_usage=_below_usage if check_limit else None)

    def reset(self, ctx: AuthContext, project_id: str) -> None:
        if not ctx.is_admin:
            raise Forbidden("(rule:delete_quota) is disallowed by policy", action="delete_quota")
        with self._db.begin() as s:
            self.engine.reset(s, project_id)
