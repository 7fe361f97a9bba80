"""The ``os-yunstack-memory-balancer`` extension: the cluster memory balancer's plan, and applying it.

Admins only (live migration is).  ``GET`` shows the plan in every mode but ``off``: its moves
(advisory ones flagged), every guest and host it left alone with the reason, and each host's use
before and after.  ``POST .../apply`` plans again and queues the applicable moves as live
migrations; in mode ``advise`` nothing is applicable.  ``GET .../history`` lists the recorded
passes (the control plane's own, every ``[compute] memory_balancer_interval``, and the admins'
applies) that queued a move or whose plan changed, newest first.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from yunstack.api.compute.memory import since_time
from yunstack.api.deps import Ctx, Svc
from yunstack.api.middleware import request_id
from yunstack.compute.balancer import plan_json

router = APIRouter(prefix="/compute/v2.1", tags=["compute", "memory"])
Json = dict[str, Any]


@router.get("/os-yunstack-memory-balancer")
def balancer_plan(ctx: Ctx, svc: Svc) -> Json:
    """What the balancer would move where now, and why nothing else moves."""
    return {"memory_balancer": plan_json(svc.balancer.plan(ctx), svc.balancer.mode)}


@router.post("/os-yunstack-memory-balancer/apply", status_code=202)
def balancer_apply(ctx: Ctx, svc: Svc) -> Json:
    """Plan, then queue the applicable moves as live migrations (202; each one's result in ``applied``)."""
    plan, applied = svc.balancer.apply(ctx, request_id.get())
    return {"memory_balancer": plan_json(plan, svc.balancer.mode, applied)}


@router.get("/os-yunstack-memory-balancer/history")
def balancer_history(ctx: Ctx, svc: Svc, since: str | None = None,
                     limit: int = Query(default=100, ge=1, le=1000)) -> Json:
    """The passes that moved a guest or changed the plan, newest first (``since``: ISO 8601)."""
    return {"passes": svc.balancer.history(ctx, since=since_time(since), limit=limit)}
