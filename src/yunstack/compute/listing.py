"""Server list in SQL: filters that map to columns, sort, and keyset paging (limit/marker).

A page costs a query of ``limit`` rows, whatever the project holds.  The filters that do not map
to a column (the RE2 ``name`` pattern, ``tags``, the ``ip``/``ip6`` patterns against the fixed
addresses, and the exact ``status``) run on the rows in batches, continuing from the last row
read, until the page is full: so they still page correctly, and a marker works the same with or
without them.

Paging is by the sort key and then the id (``WHERE (key, id) > (marker's key, marker's id)``),
not by offset, so a page never skips or repeats a server when others are created meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from yunstack.compute import states
from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest
from yunstack.identity.context import AuthContext

BATCH = 200  # rows read per round when a filter runs on the rows

# Keys Nova sorts by that we store; host is nullable, and NULLs sort differently per database,
# so it sorts as '' on both.
_SORT: dict[str, tuple[ColumnElement[Any], Callable[[t.Instance], Any]]] = {
    "created_at": (t.Instance.created_at.expression, lambda r: r.created_at),
    "updated_at": (t.Instance.updated_at.expression, lambda r: r.updated_at),
    "display_name": (t.Instance.name.expression, lambda r: r.name),
    "uuid": (t.Instance.id.expression, lambda r: r.id),
    "vm_state": (t.Instance.vm_state.expression, lambda r: r.vm_state),
    "host": (func.coalesce(t.Instance.host, ""), lambda r: r.host or ""),
}


@dataclass(frozen=True, kw_only=True)
class ServerFilters:
    name: str | None = None
    status: str | None = None
    host: str | None = None
    image: str | None = None
    flavor: str | None = None
    reservation_id: str | None = None
    changes_since: datetime | None = None
    all_tenants: bool = False
    project_id: str | None = None
    ip: str | None = None
    ip6: str | None = None
    limit: int | None = None
    marker: str | None = None
    sort_key: str = "created_at"
    sort_dir: str = "desc"
    tags: tuple[str, ...] = ()


# Decides on one row (with the page's addresses when a filter needs them) what SQL could not.
RowFilter = Callable[[t.Instance], bool]


def _scoped(ctx: AuthContext, f: ServerFilters) -> Select[t.Instance]:
    q = select(t.Instance)
    if not (ctx.is_admin and f.all_tenants):
        q = q.where(t.Instance.project_id == (ctx.project_id or "(unscoped)"))
    elif f.project_id:
        q = q.where(t.Instance.project_id == f.project_id)
    return q


def _filtered(q: Select[t.Instance], ctx: AuthContext, f: ServerFilters) -> Select[t.Instance]:
    q = q.where(t.Instance.vm_state != states.DELETED)
    if f.host and ctx.is_admin:
        q = q.where(t.Instance.host == f.host)
    if f.image:
        q = q.where(t.Instance.image_id == f.image)
    if f.reservation_id:
        q = q.where(t.Instance.reservation_id == f.reservation_id)
    if f.changes_since:
        q = q.where(t.Instance.updated_at >= f.changes_since)
    if f.flavor:
        q = q.where(t.Instance.flavor["id"].as_string() == f.flavor)
    if f.status:
        shown = states.vm_states_showing(f.status.upper())
        if shown is not None:  # a superset; the exact status (with the task) is checked per row
            q = q.where(t.Instance.vm_state.in_(sorted(shown)))
    return q


def _after(column: ColumnElement[Any], descending: bool, value: Any, row_id: str) -> ColumnElement[bool]:
    """Rows after (value, row_id) in the order ``column`` (asc or desc), then id ascending."""
    beyond = column < value if descending else column > value
    return or_(beyond, and_(column == value, t.Instance.id > row_id))


def rows(s: Session, ctx: AuthContext, f: ServerFilters, keep: RowFilter | None = None,
         prepare: Callable[[Sequence[t.Instance]], None] | None = None) -> list[t.Instance]:
    """One page of the servers ``ctx`` may see that match ``f``.

    ``keep`` decides the filters SQL cannot; ``prepare`` runs first on each batch (to fetch what
    ``keep`` needs for all its rows at once, such as addresses).
    """
    if f.sort_key not in _SORT:
        raise BadRequest("Invalid sort_key {key}.", key=f.sort_key)
    column, value_of = _SORT[f.sort_key]
    descending = f.sort_dir == "desc"
    q = _filtered(_scoped(ctx, f), ctx, f)
    q = q.order_by(column.desc() if descending else column.asc(), t.Instance.id.asc())
    if f.marker is not None:
        # The marker may be any server of the caller's scope, even one deleted since the last page.
        marker = s.scalar(_scoped(ctx, f).where(t.Instance.id == f.marker))
        if marker is None:
            raise BadRequest("marker [{marker}] not found", marker=f.marker)
        q = q.where(_after(column, descending, value_of(marker), marker.id))
    if f.limit == 0:
        return []
    if keep is None:
        return list(s.scalars(q if f.limit is None else q.limit(f.limit)))
    out: list[t.Instance] = []
    while True:
        batch = list(s.scalars(q.limit(BATCH)))
        if prepare is not None and batch:
            prepare(batch)
        for row in batch:
            if keep(row):
                out.append(row)
                if f.limit is not None and len(out) == f.limit:
                    return out
        if len(batch) < BATCH:
            return out
        last = batch[-1]
        q = q.where(_after(column, descending, value_of(last), last.id))
