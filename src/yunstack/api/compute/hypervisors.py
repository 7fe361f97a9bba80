"""Nova os-hypervisors (admin only) and os-availability-zone (host aggregates: ``aggregates``).

A host's zone is the one its aggregates give it, else the one its agent reports.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from yunstack.api.compute import views_misc as v
from yunstack.api.compute.microversion import APIVersion, Version
from yunstack.api.deps import Ctx, Svc

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]


def _list(request: Request, ctx: Ctx, svc: Svc, version: APIVersion, detail: bool) -> Json:
    limit: int | None = None
    marker: str | None = None
    if version.at_least("2.33"):  # paging arrived in 2.33
        q = request.query_params
        limit, marker = v.paging(q.get("limit"), q.get("marker"))
    found = svc.hosts.list_hypervisors(ctx, limit=limit, marker=marker)
    body: Json = {"hypervisors": [v.hypervisor(h, version, detail=detail) for h in found]}
    if limit is not None:
        links = v.next_links(request, svc.config.server.base_url, [str(h.api_id) for h in found], limit)
        if links:
            body["hypervisors_links"] = links
    return body


@router.get("/os-hypervisors")
def list_hypervisors(request: Request, ctx: Ctx, svc: Svc, version: Version) -> Json:
    return _list(request, ctx, svc, version, False)


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(request: Request, ctx: Ctx, svc: Svc, version: Version) -> Json:
    return _list(request, ctx, svc, version, True)


@router.get("/os-hypervisors/statistics")
def hypervisor_statistics(ctx: Ctx, svc: Svc) -> Json:
    return {"hypervisor_statistics": svc.hosts.statistics(ctx)}


@router.get("/os-hypervisors/{hypervisor_id}")
def show_hypervisor(hypervisor_id: str, ctx: Ctx, svc: Svc, version: Version) -> Json:
    return {"hypervisor": v.hypervisor(svc.hosts.get_hypervisor(ctx, hypervisor_id), version, detail=True)}


@router.get("/os-hypervisors/{hypervisor_id}/uptime")
def hypervisor_uptime(hypervisor_id: str, ctx: Ctx, svc: Svc, version: Version) -> Json:
    h = svc.hosts.get_hypervisor(ctx, hypervisor_id)
    return {"hypervisor": v.hypervisor(h, version, detail=False, uptime=h.uptime)}


@router.get("/os-hypervisors/{pattern}/search")
def search_hypervisors(pattern: str, ctx: Ctx, svc: Svc, version: Version) -> Json:
    return {"hypervisors": [v.hypervisor(h, version, detail=False) for h in svc.hosts.search(ctx, pattern)]}


@router.get("/os-hypervisors/{pattern}/servers")
def hypervisor_servers(pattern: str, ctx: Ctx, svc: Svc, version: Version) -> Json:
    found = []
    for h, servers in svc.hosts.servers(ctx, pattern):
        extra = {"servers": [{"name": n, "uuid": i} for n, i in servers]} if servers else {}
        found.append(v.hypervisor(h, version, detail=False, **extra))
    return {"hypervisors": found}


@router.get("/os-availability-zone")
def list_availability_zones(ctx: Ctx, svc: Svc) -> Json:
    return v.zones(svc.hosts.availability_zones(ctx), detail=False)


@router.get("/os-availability-zone/detail")
def list_availability_zones_detail(ctx: Ctx, svc: Svc) -> Json:
    return v.zones(svc.hosts.availability_zones(ctx, detail=True), detail=True)
