"""The memory ledger as the control plane keeps it: latest per host, and a bounded history.

The agent's memory manager reports one ledger entry per host every ~10 s.  The latest entry also
feeds overcommit-aware admission: ``ComputeNode.stats["observed_free_mib"]`` is what the host can
still give a new guest without risking an OOM (the manager's admission room: free memory plus what
ballooning could take back above the guests' working sets, minus regrowth and a reserve), and the
scheduler's ObservedMemoryFilter reads it; ``observed_load`` (capacity, use, level, PSI) feeds its
MemoryPressureWeigher, the memory balancer's target rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import compute as t
from yunstack.errors import NotFound
from yunstack.identity import policy
from yunstack.identity.context import AuthContext

MIB = 1 << 20
HISTORY = timedelta(hours=24)
HEADROOM_FRACTION = 0.05  # of each guest's working set, at least HEADROOM_MIN
HEADROOM_MIN = 32 * MIB
# The scheduler uses a host's observed memory this long after its report (managers report every
# ~10 s); a host whose manager stopped is then weighed and filtered on its static size alone,
# as the balancer (compute/balancer.py STALE_AFTER) neither relieves nor fills it.
OBSERVED_FOR = timedelta(seconds=120)


def observed_free_mib(entry: Mapping[str, Any], reserved_mib: int) -> int:
    """Memory a new guest may count on, in MiB.

    The manager's admission room when it reports one (``memory.policy.admission_room``: free +
    reclaimable - regrowth - reserve; 0 while it admits nothing), else the older estimate
    physical - Σ(working set + headroom) - reserved.
    """
    host = entry.get("host", {})
    if "admission_room" in host:
        return 0 if host.get("admission_blocked") else max(0, int(host["admission_room"]) // MIB)
    physical = int(host.get("physical", 0))
    committed = 0
    for g in entry.get("guests", []):
        ws = int(g.get("working_set") or 0) or int(g.get("resident") or 0)
        committed += ws + max(HEADROOM_MIN, int(ws * HEADROOM_FRACTION))
    return max(0, (physical - committed) // MIB - reserved_mib)


LEVELS = {"none": 0, "ksm": 1, "balloon": 2, "swap": 3}  # memory.model.PressureLevel by its ledger name


def observed_load(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The host's memory load as the scheduler's MemoryPressureWeigher reads it (``compute_node.stats``):
    capacity and use in MiB, pressure level and PSI; nothing when the entry lacks them (an older agent)."""
    host = entry.get("host", {})
    if "physical" not in host or "available" not in host:
        return {}
    physical = int(host["physical"])
    return {"observed_physical_mib": physical // MIB,
            "observed_used_mib": max(0, physical - int(host["available"])) // MIB,
            "observed_level": LEVELS.get(str(entry.get("level", "none")), 0),
            "observed_psi": float(host.get("psi_some_avg10") or 0.0),
            "observed_swap_in": float(host.get("swap_in_rate") or 0.0),
            "observed_swap_out": float(host.get("swap_out_rate") or 0.0)}


def template_shape(image_id: str, flavor: Mapping[str, Any]) -> str:
    """What two servers share when one could start from the memory template the other was cloned from
    on a host: the image and the flavor's size (the host's template key also covers the QEMU command
    line, which these decide)."""
    return f"{image_id}/{flavor.get('ram')}/{flavor.get('vcpus')}/{flavor.get('disk')}"


def clone_costs(entry: Mapping[str, Any], shapes: Mapping[str, str]) -> dict[str, int]:
    """What a clone costs the host now, in MiB, by ``template_shape``: the most any running clone of
    that shape holds of its own (resident - the template's shared page cache), as the host's
    ``memory.policy.expected_footprint`` expects of the next one.  ``shapes``: instance id -> shape."""
    costs: dict[str, int] = {}
    for g in entry.get("guests", []):
        shape = shapes.get(g.get("instance_id", ""))
        if not g.get("template") or shape is None:
            continue
        own = int(g.get("resident") or 0) - int(g.get("template_shared") or 0)
        costs[shape] = max(costs.get(shape, 0), max(0, own) // MIB)
    return costs


class MemoryLedgerService:
    def __init__(self, db: sessionmaker[Session]) -> None:
        self._db = db

    def record(self, host: str, entry: Mapping[str, Any]) -> None:
        now = datetime.now(UTC)
        with self._db.begin() as s:
            node = s.scalar(select(t.ComputeNode).where(t.ComputeNode.host == host))
            if node is not None:
                stats = dict(node.stats or {})
                stats["observed_free_mib"] = observed_free_mib(entry, node.reserved_host_memory_mib)
                stats["observed_clone_mib"] = clone_costs(entry, self._shapes(s, entry))
                stats.update(observed_load(entry))
                stats["observed_at"] = now.timestamp()  # the scheduler ignores a report older than OBSERVED_FOR
                stats["memory"] = {k: entry[k] for k in ("host", "level", "wall_time", "manager") if k in entry}
                node.stats = stats
            s.add(t.MemorySample(host=host, at=now, data=dict(entry)))
            s.execute(delete(t.MemorySample).where(t.MemorySample.at < now - HISTORY))

    @staticmethod
    def _shapes(s: Session, entry: Mapping[str, Any]) -> dict[str, str]:
        """The ``template_shape`` of every clone in ``entry``, by instance id."""
        ids = [g["instance_id"] for g in entry.get("guests", []) if g.get("template") and "instance_id" in g]
        if not ids:
            return {}
        rows = s.execute(select(t.Instance.id, t.Instance.image_id, t.Instance.flavor).where(t.Instance.id.in_(ids)))
        return {i: template_shape(image, flavor or {}) for i, image, flavor in rows if image}

    def _owners(self, s: Session, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        rows = s.execute(select(t.Instance.id, t.Instance.project_id).where(t.Instance.id.in_(list(ids))))
        return {i: p for i, p in rows}

    def _visible(self, ctx: AuthContext, s: Session, entry: Mapping[str, Any]) -> dict[str, Any] | None:
        """An entry as the caller may see it: admins everything; others only their servers' rows."""
        guests = list(entry.get("guests", []))
        owners = self._owners(s, [g["instance_id"] for g in guests])
        mine = guests if ctx.is_admin else [g for g in guests if owners.get(g["instance_id"]) == ctx.project_id]
        out = {"wall_time": entry.get("wall_time"), "level": entry.get("level"),
               "servers": [dict(g, project_id=owners.get(g["instance_id"])) for g in mine]}
        if ctx.is_admin:
            out.update(balance=entry.get("host"), manager=entry.get("manager"),
                       reasons=entry.get("reasons", []), errors=entry.get("errors", []))
        return out

    def latest(self, ctx: AuthContext) -> list[dict[str, Any]]:
        """The newest entry of every host (one row per host)."""
        with self._db() as s:
            hosts = s.scalars(select(t.ComputeNode.host).order_by(t.ComputeNode.host)).all()
            result = []
            for host in hosts:
                row = s.scalar(select(t.MemorySample).where(t.MemorySample.host == host)
                               .order_by(t.MemorySample.at.desc()).limit(1))
                if row is None:
                    continue
                view = self._visible(ctx, s, row.data)
                if view is not None:
                    result.append({"host": host if ctx.is_admin else None, **view,
                                   "at": row.at.isoformat()})
            return result

    def history(self, ctx: AuthContext, *, host: str | None = None, since: datetime | None = None,
                limit: int = 360) -> list[dict[str, Any]]:
        with self._db() as s:
            q = select(t.MemorySample).order_by(t.MemorySample.at.desc()).limit(max(1, min(limit, 8640)))
            if host is not None:
                q = q.where(t.MemorySample.host == host)
            if since is not None:
                q = q.where(t.MemorySample.at > since)
            rows = list(s.scalars(q))[::-1]
            return [{"host": r.host if ctx.is_admin else None, "at": r.at.isoformat(),
                     **(self._visible(ctx, s, r.data) or {})} for r in rows]

    def for_server(self, ctx: AuthContext, server_id: str) -> dict[str, Any]:
        with self._db() as s:
            inst = s.get(t.Instance, server_id)
            if inst is None or inst.vm_state == "deleted":  # deleted servers keep their rows
                raise NotFound("Instance {id} could not be found.", id=server_id)
            policy.visible(ctx, inst.project_id, kind="instance", id=server_id)
            if inst.host is None:
                return {"server_id": server_id, "memory": None}
            row = s.scalar(select(t.MemorySample).where(t.MemorySample.host == inst.host)
                           .order_by(t.MemorySample.at.desc()).limit(1))
            guest = None
            if row is not None:
                guest = next((g for g in row.data.get("guests", []) if g["instance_id"] == server_id), None)
            return {"server_id": server_id, "at": row.at.isoformat() if row else None, "memory": guest}
