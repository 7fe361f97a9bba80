"""Block-storage quotas on the one quota engine (``yunstack.quota``), and Cinder's per-type ones.

Cinder's resources: ``volumes``, ``gigabytes``, ``snapshots`` (counted from what exists, as every
quota here: nothing is reserved), ``per_volume_gigabytes`` (a cap on one volume's size, never
"used"), and ``backups``/``backup_gigabytes``/``groups`` (limits only: yunstack has no backups or
groups yet, so they always count 0).  Each volume type adds ``volumes_<type>``,
``gigabytes_<type>`` and ``snapshots_<type>``, unlimited unless set; they are not engine resources
(types come and go at run time) but rows of the same table, checked under the same project lock.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from yunstack.db.tables import volume as t
from yunstack.errors import BadRequest, YunError
from yunstack.quota import MAX_LIMIT, UNLIMITED, QuotaEngine

DEFAULTS: dict[str, int] = {"volumes": 10, "snapshots": 10, "gigabytes": 1000, "backups": 10,
                            "backup_gigabytes": 1000, "groups": 10, "per_volume_gigabytes": UNLIMITED}
PER_TYPE = ("volumes", "gigabytes", "snapshots")


class OverQuota(YunError):
    """A create that would pass a quota (Cinder's ``OverQuota``/``VolumeLimitExceeded``: 413)."""

    status = 413
    message = ("VolumeLimitExceeded: Maximum number of {resource} allowed ({limit}) exceeded for quota "
               "'{resource}'.")


class VolumeSizeExceedsLimit(YunError):
    status = 413
    message = "Requested volume size {size}G is larger than maximum allowed limit {limit}G."


def _over(resource: str, _requested: int, _used: int, limit: int) -> OverQuota:
    if resource.startswith("gigabytes"):
        return OverQuota(f"VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed "
                         f"{resource} quota. Requested {_requested}G, quota is {limit}G and {_used}G has been "
                         f"consumed.")
    return OverQuota(resource=resource, limit=limit)


def _below_usage(resource: str, value: int, used: int, _limit: int) -> BadRequest:
    return BadRequest(f"Quota limit invalid for project: quota value ({value}) for {resource} is less than "
                      f"in use ({used}).")


def _volumes(s: Session, project_id: str, _user: str | None) -> dict[str, int]:
    count, size = s.execute(select(func.count(), func.coalesce(func.sum(t.Volume.size), 0))
                            .where(t.Volume.project_id == project_id)).one()
    return {"volumes": int(count), "gigabytes": int(size) + _snapshot_gigabytes(s, project_id)}


def _snapshot_gigabytes(s: Session, project_id: str) -> int:
    # Cinder counts snapshots' sizes against ``gigabytes`` too (no_snapshot_gb_quota is off by default).
    return int(s.scalar(select(func.coalesce(func.sum(t.Snapshot.size), 0))
                        .where(t.Snapshot.project_id == project_id)) or 0)


def _snapshots(s: Session, project_id: str, _user: str | None) -> dict[str, int]:
    return {"snapshots": int(s.scalar(select(func.count()).select_from(t.Snapshot)
                                      .where(t.Snapshot.project_id == project_id)) or 0)}


def engine() -> QuotaEngine:
    quota = QuotaEngine("volquota", t.VolumeQuota, _over)
    quota.register({"volumes": DEFAULTS["volumes"], "gigabytes": DEFAULTS["gigabytes"]}, _volumes)
    quota.register({"snapshots": DEFAULTS["snapshots"]}, _snapshots)
    quota.register({k: v for k, v in DEFAULTS.items() if k not in ("volumes", "gigabytes", "snapshots")})
    return quota


class VolumeQuotas:
    """Limits, usage and the check, always inside the caller's transaction."""

    def __init__(self) -> None:
        self.engine = engine()

    def type_usage(self, s: Session, project_id: str, type_id: str) -> dict[str, int]:
        count, size = s.execute(select(func.count(), func.coalesce(func.sum(t.Volume.size), 0)).where(
            t.Volume.project_id == project_id, t.Volume.volume_type_id == type_id)).one()
        snaps, snap_size = s.execute(
            select(func.count(), func.coalesce(func.sum(t.Snapshot.size), 0)).join(
                t.Volume, t.Volume.id == t.Snapshot.volume_id).where(
                t.Snapshot.project_id == project_id, t.Volume.volume_type_id == type_id)).one()
        return {"volumes": int(count), "gigabytes": int(size) + int(snap_size), "snapshots": int(snaps)}

    def type_limits(self, s: Session, project_id: str, type_name: str) -> dict[str, int]:
        names = {f"{r}_{type_name}": r for r in PER_TYPE}
        limits = dict.fromkeys(PER_TYPE, UNLIMITED)
        for resource, hard in s.execute(select(t.VolumeQuota.resource, t.VolumeQuota.hard_limit).where(
                t.VolumeQuota.project_id == project_id, t.VolumeQuota.resource.in_(list(names)))):
            limits[names[resource]] = int(hard)
        return limits

    def check(self, s: Session, project_id: str, deltas: Mapping[str, int], *, type_id: str,
              type_name: str, size: int | None = None) -> None:
        """Raise if adding ``deltas`` (of a volume or snapshot of that type) passes a limit.

        Takes the project's lock (the engine's), so the creates of one project count one after the other.
        """
        self.engine.check(s, project_id, deltas)
        limits = self.engine.limits(s, project_id)
        cap = limits.get("per_volume_gigabytes", UNLIMITED)
        if size is not None and cap != UNLIMITED and size > cap:
            raise VolumeSizeExceedsLimit(size=size, limit=cap)
        typed = self.type_limits(s, project_id, type_name)
        if all(v == UNLIMITED for v in typed.values()):
            return
        used = self.type_usage(s, project_id, type_id)
        for resource, delta in deltas.items():
            limit = typed.get(resource, UNLIMITED)
            if delta > 0 and limit != UNLIMITED and used[resource] + delta > limit:
                raise _over(f"{resource}_{type_name}", delta, used[resource], limit)

    def limits(self, s: Session, project_id: str, type_names: list[str]) -> dict[str, int]:
        """Every limit of the project: the engine's and each type's three."""
        out = self.engine.limits(s, project_id)
        for name in type_names:
            out.update({f"{r}_{name}": v for r, v in self.type_limits(s, project_id, name).items()})
        return out

    def usage(self, s: Session, project_id: str, types: list[tuple[str, str]]) -> dict[str, int]:
        """What is in use of every resource ((type id, type name) pairs for the per-type ones)."""
        out = self.engine.usage(s, project_id)
        out["per_volume_gigabytes"] = 0
        for type_id, name in types:
            out.update({f"{r}_{name}": v for r, v in self.type_usage(s, project_id, type_id).items()})
        return out

    def set_limits(self, s: Session, project_id: str, values: Mapping[str, int], type_names: list[str]) -> None:
        known = set(DEFAULTS) | {f"{r}_{n}" for n in type_names for r in PER_TYPE}
        for resource, value in values.items():
            if resource not in known:
                raise BadRequest(f"Bad key(s) in quota set: {resource}")
            if not UNLIMITED <= value <= MAX_LIMIT:
                raise BadRequest(f"Invalid input received: Quota limit {value} for {resource} must be -1 or "
                                 f"between 0 and {MAX_LIMIT}.")
        engine_values = {k: v for k, v in values.items() if self.engine.knows(k)}
        self.engine.set_limits(s, project_id, engine_values, below_usage=_below_usage)
        for resource, value in values.items():
            if self.engine.knows(resource):
                continue
            row = s.get(t.VolumeQuota, (project_id, resource))
            if row is None:
                s.add(t.VolumeQuota(project_id=project_id, resource=resource, hard_limit=value))
            else:
                row.hard_limit = value

    def reset(self, s: Session, project_id: str) -> None:
        self.engine.reset(s, project_id)
