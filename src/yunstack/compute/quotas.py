"""Compute quotas (Nova's os-quota-sets and limits) on the one quota engine (``yunstack.quota``).

There are no reservations: usage is counted from the instance, server group and keypair tables at
the moment of the check, inside the caller's transaction, under the project's lock (``quota:<project>``:
an advisory lock on PostgreSQL, the single writer on SQLite), so a quota can never drift from
reality and two concurrent boots of one project, in one worker or two, check one after the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import compute as t
from yunstack.db.tables import servergroups as sg
from yunstack.errors import BadRequest, Forbidden, QuotaExceeded
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.quota import MAX_LIMIT, UNLIMITED, QuotaEngine

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


def _over(resource: str, requested: int, used: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded("Quota exceeded for {resource}: Requested {requested}, but already used {used} of "
                         "{limit} {resource}", resource=resource, requested=requested, used=used, limit=limit)


def _below_usage(resource: str, value: int, used: int, _limit: int) -> BadRequest:
    return BadRequest("Quota limit {value} for {resource} must be greater than or equal to already used and "
                      "reserved {used}.", value=value, resource=resource, used=used)


def _instances(session: Session, project_id: str, _user_id: str | None) -> dict[str, int]:
    """Servers that are not deleted, and their flavors' cores and RAM, in one query."""
    inst = t.Instance
    count, cores, ram = session.execute(
        select(func.count(inst.id), func.coalesce(func.sum(inst.flavor["vcpus"].as_integer()), 0),
               func.coalesce(func.sum(inst.flavor["ram"].as_integer()), 0))
        .where(inst.project_id == project_id, inst.vm_state != "deleted")).one()
    return {"instances": int(count), "cores": int(cores), "ram": int(ram)}


def _server_groups(session: Session, project_id: str, _user_id: str | None) -> dict[str, int]:
    return {"server_groups": int(session.scalar(
        select(func.count(sg.ServerGroup.id)).where(sg.ServerGroup.project_id == project_id)) or 0)}


def _key_pairs(session: Session, _project_id: str, user_id: str | None) -> dict[str, int]:
    """Keypairs are the user's, not the project's: 0 when the caller cannot name the user."""
    if user_id is None:
        return {"key_pairs": 0}
    return {"key_pairs": int(session.scalar(
        select(func.count(t.KeyPair.id)).where(t.KeyPair.user_id == user_id)) or 0)}


def engine() -> QuotaEngine:
    """Compute's quota engine: its resources and how each is counted."""
    quota = QuotaEngine("quota", t.Quota, _over)
    quota.register({r: DEFAULTS[r] for r in ("instances", "cores", "ram")}, _instances)
    quota.register({"key_pairs": DEFAULTS["key_pairs"]}, _key_pairs)
    quota.register({"server_groups": DEFAULTS["server_groups"]}, _server_groups)
    quota.register({r: v for r, v in DEFAULTS.items()
                    if r not in ("instances", "cores", "ram", "key_pairs", "server_groups")})
    return quota


class QuotaService:
    def __init__(self, db: sessionmaker[Session]) -> None:
        self._db = db
        self.engine = engine()

    # -- building blocks, usable inside a caller's transaction ---------------------------------

    def limits(self, session: Session, project_id: str) -> dict[str, int]:
        """The project's limit for every resource: its overrides over the defaults."""
        return self.engine.limits(session, project_id)

    def usage(self, session: Session, project_id: str, user_id: str | None = None) -> dict[str, int]:
        """What the project uses now: servers that are not deleted, their flavors' cores and RAM,
        its server groups and the user's keypairs."""
        return self.engine.usage(session, project_id, user_id)

    def lock_project(self, session: Session, project_id: str) -> None:
        """Serialise this project's quota checks until ``session``'s transaction ends."""
        self.engine.lock(session, project_id)

    def allowed_count(self, session: Session, project_id: str, per_item: Mapping[str, int], low: int,
                      high: int) -> int:
        """How many items of ``per_item`` each fit, as many as possible between ``low`` and ``high``.

        Nova's rule for ``min_count``/``max_count``: make as many as the quota allows, or refuse
        (403 naming the quota) when not even ``low`` fit.
        """
        if low < 1 or high < low:
            raise BadRequest("min_count must be >= 1 and <= max_count.")
        return self.engine.allowed_count(session, project_id, per_item, low, high)

    def check(self, session: Session, project_id: str, deltas: Mapping[str, int], *,
              user_id: str | None = None) -> None:
        """Raise QuotaExceeded (403) if adding ``deltas`` would pass a limit; call it inside the
        transaction that then creates the resources.  ``key_pairs`` counts ``user_id``'s keypairs."""
        self.engine.check(session, project_id, deltas, user_id=user_id)

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
            return self.engine.set_limits(s, project_id, values, below_usage=None if force else _below_usage)

    def reset(self, ctx: AuthContext, project_id: str) -> None:
        """Admin only: drop the project's overrides, back to the defaults."""
        policy.require_admin(ctx, "os_compute_api:os-quota-sets:delete")
        with self._db.begin() as s:
            self.engine.reset(s, project_id)

    def absolute(self, ctx: AuthContext, project_id: str | None = None) -> dict[str, QuotaUsage]:
        """For ``GET /limits``: the caller's project, or (admins only) ``project_id``'s."""
        if project_id is not None and project_id != ctx.project_id:
            policy.require_admin(ctx, "os_compute_api:limits:other_project")
        target = project_id or ctx.project_id or ""
        with self._db() as s:
            limits = self.limits(s, target)
            used = self.usage(s, target, ctx.user.id if target == ctx.project_id else None)
        return {r: QuotaUsage(limit=limits[r], in_use=used[r]) for r in limits}
