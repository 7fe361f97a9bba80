"""The ``os-memory`` extension: the memory ledger (what overcommit saves, per host and per server).

Admins see every host's balance and every server; other callers see only their own servers' rows
(host-wide numbers would tell them about other tenants' guests).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query

from yunstack.api.deps import Ctx, Svc
from yunstack.errors import BadRequest

router = APIRouter(prefix="/compute/v2.1", tags=["compute", "memory"])
Json = dict[str, Any]


@router.get("/os-memory")
def memory_now(ctx: Ctx, svc: Svc) -> Json:
    """The latest ledger entry of every host."""
    return {"memory": svc.memory.latest(ctx)}


@router.get("/os-memory/history")
def memory_history(ctx: Ctx, svc: Svc, host: str | None = None, since: str | None = None,
                   limit: int = Query(default=360, ge=1, le=8640)) -> Json:
    """Ledger samples (about one per 10 s per host, kept 24 h), oldest first."""
    return {"history": svc.memory.history(ctx, host=host if ctx.is_admin else None, since=since_time(since),
                                          limit=limit)}


def since_time(since: str | None) -> datetime | None:
    """A history's ``since`` query parameter (ISO 8601), or None; a bad one is 400."""
    if since is None:
        return None
    try:
        return datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest("since must be an ISO 8601 time.") from exc


@router.get("/servers/{server_id}/os-memory")
def server_memory(server_id: str, ctx: Ctx, svc: Svc) -> Json:
    """Where one server's memory is: configured, resident, ballooned, shared, swapped, working set."""
    return {"memory": svc.memory.for_server(ctx, server_id)}
