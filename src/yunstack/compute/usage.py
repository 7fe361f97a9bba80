"""Per-project usage over a period (Nova ``os-simple-tenant-usage``): hours of RAM, vCPUs and disk.

A server counts from ``launched_at`` to ``terminated_at`` (or the period's end), clipped to the
period, with the flavor it has now.  Deleted servers keep their rows (``vm_state`` deleted,
``terminated_at`` set), so past usage stays visible.  Servers that never launched used nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest, Forbidden
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.types import utcnow


@dataclass(frozen=True, kw_only=True)
class ServerUsage:
    instance_id: str
    name: str
    tenant_id: str
    flavor: str
    hours: float
    memory_mb: int
    local_gb: int
    vcpus: int
    started_at: datetime
    ended_at: datetime | None
    state: str
    uptime: int


@dataclass(frozen=True, kw_only=True)
class TenantUsage:
    tenant_id: str
    start: datetime
    stop: datetime
    total_hours: float
    total_memory_mb_usage: float
    total_vcpus_usage: float
    total_local_gb_usage: float
    server_usages: tuple[ServerUsage, ...]


def _hours(launched: datetime, terminated: datetime | None, start: datetime, stop: datetime) -> float:
    end = min(stop, terminated) if terminated else stop
    return max(0.0, (end - max(launched, start)).total_seconds() / 3600.0)


def _server(row: t.Instance, start: datetime, stop: datetime, now: datetime) -> ServerUsage:
    assert row.launched_at is not None
    flavor = row.flavor or {}
    ended = row.terminated_at
    return ServerUsage(
        instance_id=row.id, name=row.name, tenant_id=row.project_id, flavor=str(flavor.get("name", "")),
        hours=_hours(row.launched_at, ended, start, stop), memory_mb=int(flavor.get("ram", 0)),
        local_gb=int(flavor.get("disk", 0)) + int(flavor.get("ephemeral", 0)), vcpus=int(flavor.get("vcpus", 0)),
        started_at=row.launched_at, ended_at=ended, state="terminated" if ended else row.vm_state,
        uptime=int(((ended or now) - row.launched_at).total_seconds()))


class UsageService:
    def __init__(self, db: sessionmaker[Session]) -> None:
        self._db = db

    def usages(self, ctx: AuthContext, start: datetime, stop: datetime, *, project_id: str | None = None,
               limit: int | None = None, marker: str | None = None) -> list[TenantUsage]:
        """Each project's usage in [start, stop); one project's when ``project_id`` is given.

        All projects need an admin; a member may read only its own project.  ``stop`` is clipped
        to now; ``limit``/``marker`` page over servers (Nova 2.40).
        """
        if project_id is None:
            policy.require_admin(ctx, "os_compute_api:os-simple-tenant-usage:list")
        elif not ctx.is_admin and project_id != ctx.project_id:
            raise Forbidden(action="os_compute_api:os-simple-tenant-usage:show")
        now = utcnow()
        stop = min(stop, now)
        if not start < stop:
            raise BadRequest("Invalid start time. The start time cannot occur after the end time.")
        inst = t.Instance
        q = (select(inst).where(inst.launched_at.is_not(None), inst.launched_at < stop,
                                or_(inst.terminated_at.is_(None), inst.terminated_at > start))
             .order_by(inst.created_at, inst.id))
        if project_id is not None:
            q = q.where(inst.project_id == project_id)
        with self._db() as s:
            rows = list(s.scalars(q))
        if marker is not None:
            ids = [r.id for r in rows]
            if marker not in ids:
                raise BadRequest("Marker {marker} could not be found.", marker=marker)
            rows = rows[ids.index(marker) + 1:]
        if limit is not None:
            rows = rows[:limit]
        by_project: dict[str, list[ServerUsage]] = {}
        for row in rows:
            by_project.setdefault(row.project_id, []).append(_server(row, start, stop, now))
        return [TenantUsage(tenant_id=p, start=start, stop=stop, total_hours=sum(u.hours for u in us),
                            total_memory_mb_usage=sum(u.memory_mb * u.hours for u in us),
                            total_vcpus_usage=sum(u.vcpus * u.hours for u in us),
                            total_local_gb_usage=sum(u.local_gb * u.hours for u in us), server_usages=tuple(us))
                for p, us in by_project.items()]

