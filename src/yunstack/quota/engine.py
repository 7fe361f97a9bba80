"""The quota engine: limits over defaults, usage counted from what exists, check and ``allowed_count``.

Nothing is reserved.  Usage is counted from the resources' own tables inside the transaction that
then creates the resources, after taking the project's lock (``db.locks.project_lock``): two
concurrent creates of one project, in one process or in two, check one after the other, and the
second counts what the first made.  So a quota can never drift from reality and there is nothing
to expire or repair.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from yunstack.db import locks
from yunstack.errors import YunError

UNLIMITED = -1
MAX_LIMIT = 0x7FFFFFFF

# What is in use of the resources a counter owns: (session, project_id, user_id) -> {resource: n}.
# ``user_id`` is None when the caller cannot name the user (per-user resources then count 0).
Counter = Callable[[Session, str, "str | None"], Mapping[str, int]]
# The service's own error for "adding ``requested`` of ``resource`` passes ``limit``".
OverLimit = Callable[[str, int, int, int], YunError]


@dataclass(frozen=True)
class _Registered:
    resources: tuple[str, ...]
    counter: Counter | None


class QuotaEngine:
    """The quotas of one service: its limits table (``project_id``, ``resource``, ``hard_limit``),
    its lock namespace and its resources."""

    def __init__(self, namespace: str, limits_table: Any, over: OverLimit) -> None:
        self.namespace = namespace
        self._table = limits_table
        self._over = over
        self._defaults: dict[str, int] = {}
        self._counters: list[_Registered] = []

    def register(self, defaults: Mapping[str, int], counter: Counter | None = None) -> None:
        """Add resources with their default limits; ``counter`` counts all of them in one go
        (None: a limit only, such as ``metadata_items``, that never counts usage)."""
        clash = set(defaults) & set(self._defaults)
        if clash:
            raise ValueError(f"quota resources registered twice: {sorted(clash)}")
        self._defaults.update(defaults)
        self._counters.append(_Registered(tuple(defaults), counter))

    @property
    def defaults(self) -> dict[str, int]:
        return dict(self._defaults)

    def knows(self, resource: str) -> bool:
        return resource in self._defaults

    # -- inside a caller's transaction ---------------------------------------------------------

    def lock(self, session: Session, project_id: str) -> None:
        """Serialise this project's checks until ``session``'s transaction ends."""
        locks.project_lock(session, self.namespace, project_id)

    def limits(self, session: Session, project_id: str) -> dict[str, int]:
        """The project's limit for every resource: its overrides over the defaults."""
        limits = dict(self._defaults)
        rows = session.execute(select(self._table.resource, self._table.hard_limit)
                               .where(self._table.project_id == project_id))
        for resource, hard_limit in rows:
            if resource in limits:
                limits[resource] = int(hard_limit)
        return limits

    def usage(self, session: Session, project_id: str, user_id: str | None = None,
              only: Collection[str] | None = None) -> dict[str, int]:
        """What is in use, every resource (0 for those never counted); ``only`` runs just the
        counters that own one of those resources."""
        used = dict.fromkeys(self._defaults, 0)
        for reg in self._counters:
            if reg.counter is None or (only is not None and not set(reg.resources) & set(only)):
                continue
            for resource, n in reg.counter(session, project_id, user_id).items():
                used[resource] = int(n)
        return used

    def check(self, session: Session, project_id: str, deltas: Mapping[str, int], *,
              user_id: str | None = None) -> None:
        """Raise the service's over-limit error if adding ``deltas`` would pass a limit; call it
        inside the transaction that then creates the resources (it takes the project lock)."""
        wanted = {r: d for r, d in deltas.items() if d > 0}
        if not wanted:
            return
        self.lock(session, project_id)
        limits = self.limits(session, project_id)
        used = self.usage(session, project_id, user_id, only=wanted)
        for resource, delta in wanted.items():
            limit = limits.get(resource, UNLIMITED)
            if limit != UNLIMITED and used[resource] + delta > limit:
                raise self._over(resource, delta, used[resource], limit)

    def allowed_count(self, session: Session, project_id: str, per_item: Mapping[str, int], low: int,
                      high: int) -> int:
        """How many items of ``per_item`` each fit, as many as possible between ``low`` and ``high``;
        raises the over-limit error (naming the resource) when not even ``low`` fit.

        One read of limits and usage whatever ``high`` is, so a huge ``high`` costs what 1 does.
        """
        self.lock(session, project_id)
        limits = self.limits(session, project_id)
        used = self.usage(session, project_id, only=per_item)
        room = high
        for resource, each in per_item.items():
            limit = limits.get(resource, UNLIMITED)
            if each > 0 and limit != UNLIMITED:
                room = min(room, max(0, limit - used[resource]) // each)
        if room < low:
            for resource, each in per_item.items():
                limit = limits.get(resource, UNLIMITED)
                if limit != UNLIMITED and used[resource] + each * low > limit:
                    raise self._over(resource, each * low, used[resource], limit)
        return max(room, low)

    def set_limits(self, session: Session, project_id: str, values: Mapping[str, int], *,
                   below_usage: OverLimit | None = None) -> dict[str, int]:
        """Write overrides (the caller validated names and ranges); with ``below_usage``, a limit
        under what is in use raises that error instead.  Returns the new limits."""
        self.lock(session, project_id)
        if below_usage is not None:
            used = self.usage(session, project_id, only=values)
            for resource, value in values.items():
                if value != UNLIMITED and value < used[resource]:
                    raise below_usage(resource, value, used[resource], value)
        for resource, value in values.items():
            row = session.get(self._table, (project_id, resource))
            if row is None:
                session.add(self._table(project_id=project_id, resource=resource, hard_limit=value))
            else:
                row.hard_limit = value
        session.flush()
        return self.limits(session, project_id)

    def reset(self, session: Session, project_id: str) -> None:
        """Drop the project's overrides: back to the defaults."""
        session.execute(delete(self._table).where(self._table.project_id == project_id))

    def overridden_projects(self, session: Session) -> list[str]:
        """Every project with at least one override, sorted."""
        return sorted(set(session.scalars(select(self._table.project_id))))
