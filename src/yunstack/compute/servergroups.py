"""Server groups (Nova ``os-server-groups``): the groups, their members, and what the scheduler needs.

A server joins a group at create time through the ``group`` scheduler hint.  The create use case
calls :meth:`ServerGroupService.for_boot` and :meth:`ServerGroupService.add_member` inside its own
transaction (under the scheduler lock), so the hosts the scheduler sees for a group always include
every member placed before, even within one multi-create.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute.quotas import QuotaService
from yunstack.db.tables import compute as t
from yunstack.db.tables import servergroups as g
from yunstack.errors import BadRequest, NotFound, QuotaExceeded
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.types import new_uuid

POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")


@dataclass(frozen=True, kw_only=True)
class ServerGroup:
    id: str
    name: str
    project_id: str
    user_id: str
    policy: str
    members: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class BootGroup:
    """What scheduling a new member needs: the policy and how many members each host runs."""

    id: str
    policy: str
    hosts: Counter[str]


def _missing(group_id: str) -> NotFound:
    return NotFound("Instance group {id} could not be found.", id=group_id)


class ServerGroupService:
    def __init__(self, db: sessionmaker[Session], quotas: QuotaService) -> None:
        self._db = db
        self._quotas = quotas

    @staticmethod
    def _members(s: Session, group_ids: list[str]) -> dict[str, list[str]]:
        """Each group's members whose servers are not deleted, oldest first."""
        inst, m = t.Instance, g.ServerGroupMember
        rows = s.execute(select(m.group_id, m.instance_id).join(inst, inst.id == m.instance_id)
                         .where(m.group_id.in_(group_ids), inst.vm_state != "deleted")
                         .order_by(inst.created_at, inst.id))
        out: dict[str, list[str]] = {gid: [] for gid in group_ids}
        for group_id, instance_id in rows:
            out[group_id].append(instance_id)
        return out

    def _row(self, s: Session, ctx: AuthContext, group_id: str) -> g.ServerGroup:
        row = s.get(g.ServerGroup, group_id)
        if row is None:
            raise _missing(group_id)
        try:
            policy.visible(ctx, row.project_id, kind="server group", id=group_id)
        except NotFound:
            raise _missing(group_id) from None
        return row

    @staticmethod
    def _view(row: g.ServerGroup, members: list[str]) -> ServerGroup:
        return ServerGroup(id=row.id, name=row.name, project_id=row.project_id, user_id=row.user_id,
                           policy=row.policy, members=tuple(members))

    # -- the API's use cases ---------------------------------------------------------------------

    def create(self, ctx: AuthContext, name: str, group_policy: str) -> ServerGroup:
        policy.require_write(ctx, "os_compute_api:os-server-groups:create")
        project_id = policy.require_scoped(ctx, "os_compute_api:os-server-groups:create")
        if group_policy not in POLICIES:
            raise BadRequest("Invalid policy {p!r}: one of {ok}.", p=group_policy, ok=", ".join(POLICIES))
        with self._db.begin() as s:
            try:
                self._quotas.check(s, project_id, {"server_groups": 1})
            except QuotaExceeded:
                raise QuotaExceeded("Quota exceeded, too many server groups.") from None
            row = g.ServerGroup(id=new_uuid(), name=name, project_id=project_id, user_id=ctx.user.id,
                                policy=group_policy, created_at=datetime.now(UTC))
            s.add(row)
            return self._view(row, [])

    def list_groups(self, ctx: AuthContext, *, all_projects: bool = False, limit: int | None = None,
                    offset: int = 0) -> list[ServerGroup]:
        """The caller's project's groups; every project's for an admin asking ``all_projects``."""
        q = select(g.ServerGroup).order_by(g.ServerGroup.created_at, g.ServerGroup.id)
        if not (ctx.is_admin and all_projects):
            q = q.where(g.ServerGroup.project_id == (ctx.project_id or "(unscoped)"))
        q = q.offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self._db() as s:
            rows = list(s.scalars(q))
            members = self._members(s, [r.id for r in rows])
        return [self._view(r, members[r.id]) for r in rows]

    def get(self, ctx: AuthContext, group_id: str) -> ServerGroup:
        with self._db() as s:
            row = self._row(s, ctx, group_id)
            return self._view(row, self._members(s, [row.id])[row.id])

    def delete(self, ctx: AuthContext, group_id: str) -> None:
        """Delete the group; its servers keep running (as Nova)."""
        policy.require_write(ctx, "os_compute_api:os-server-groups:delete")
        with self._db.begin() as s:
            row = self._row(s, ctx, group_id)
            s.execute(delete(g.ServerGroupMember).where(g.ServerGroupMember.group_id == row.id))
            s.delete(row)

    # -- for the create use case, inside its transaction --------------------------------------------

    def for_boot(self, s: Session, ctx: AuthContext, group_id: str, *, adding: int) -> BootGroup:
        """The group named by a ``group`` hint, with its members' hosts; checks the members quota.

        An unknown or invisible group is a 400, as Nova answers for a bad scheduler hint.
        """
        row = s.get(g.ServerGroup, group_id)
        if row is None or (not ctx.is_admin and row.project_id != ctx.project_id):
            raise BadRequest("Invalid server group {id}: it does not exist.", id=group_id)
        inst, m = t.Instance, g.ServerGroupMember
        hosts = [h for (h,) in s.execute(select(inst.host).join(m, m.instance_id == inst.id)
                                         .where(m.group_id == row.id, inst.vm_state != "deleted"))]
        limit = self._quotas.limits(s, row.project_id)["server_group_members"]
        if limit >= 0 and len(hosts) + adding > limit:
            raise QuotaExceeded("Quota exceeded, too many servers in group.")
        return BootGroup(id=row.id, policy=row.policy, hosts=Counter(h for h in hosts if h))

    @staticmethod
    def for_move(s: Session, instance_id: str) -> tuple[str | None, dict[str, int]]:
        """A moving server's group policy (None: in no group) and how many *other* members each
        host runs: its destination must keep the group's policy as a new member's would."""
        m, inst = g.ServerGroupMember, t.Instance
        group_id = s.scalar(select(m.group_id).where(m.instance_id == instance_id))
        if group_id is None:
            return None, {}
        row = s.get(g.ServerGroup, group_id)
        hosts = [h for (h,) in s.execute(select(inst.host).join(m, m.instance_id == inst.id)
                                         .where(m.group_id == group_id, inst.id != instance_id,
                                                inst.vm_state != "deleted"))]
        return (row.policy if row is not None else None), dict(Counter(h for h in hosts if h))

    @staticmethod
    def add_member(s: Session, group_id: str, instance_id: str) -> None:
        s.add(g.ServerGroupMember(group_id=group_id, instance_id=instance_id))
