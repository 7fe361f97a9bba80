"""Nova os-services and os-simple-tenant-usage (operator views of the cloud; os-migrations: ``migrations``).

``os-services`` lists one ``nova-compute`` per host: its state is the agent's heartbeat, its
status the operator's enable/disable, which the scheduler honours.  Nothing else is listed because
nothing else runs as a service (the scheduler and conductor are functions of the API process).
Below microversion 2.53 services are named by the same integer as their hypervisor; from 2.53 by
the hypervisor's UUID, and ``PUT``/``DELETE /os-services/{id}`` take that id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field, ValidationError
from starlette.concurrency import run_in_threadpool

from yunstack.api.compute.microversion import APIVersion, Version
from yunstack.api.compute.views_misc import next_links, paging
from yunstack.api.deps import Ctx, Svc
from yunstack.api.schemas import Strict
from yunstack.compute.hosts import HostUsage
from yunstack.compute.usage import ServerUsage, TenantUsage
from yunstack.errors import BadRequest, NotFound

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]
COMPUTE = "nova-compute"


def _naive(value: datetime | None) -> str | None:
    """Nova's rendering of these times: ISO 8601 with microseconds and no zone."""
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


# -- os-services ---------------------------------------------------------------------------------

def service_view(h: HostUsage, v: APIVersion) -> Json:
    body: Json = {"id": h.id if v.at_least("2.53") else h.api_id, "binary": COMPUTE, "host": h.host,
                  "zone": h.availability_zone,
                  "status": "disabled" if h.disabled else "enabled", "state": "up" if h.up else "down",
                  "updated_at": _naive(h.updated_at), "disabled_reason": h.disabled_reason}
    if v.at_least("2.11"):
        body["forced_down"] = False
    return body


@router.get("/os-services")
def list_services(request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    q = request.query_params
    found = svc.hosts.list_services(ctx, host=q.get("host") or None, binary=q.get("binary") or None)
    return {"services": [service_view(h, v) for h in found]}


class ServiceUpdate(Strict):
    host: str = Field(min_length=1, max_length=255)
    binary: str = Field(min_length=1, max_length=255)
    disabled_reason: str | None = Field(default=None, min_length=1, max_length=255)


class ServiceStatus(Strict):
    """The 2.53 body of ``PUT /os-services/{service_id}``."""

    status: str | None = Field(default=None, pattern="^(enabled|disabled)$")
    disabled_reason: str | None = Field(default=None, min_length=1, max_length=255)
    forced_down: bool | None = None


def _body(model: type[Strict], raw: object) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest("Invalid input for the service update: {why}", why=str(exc)[:300]) from None


@router.put("/os-services/{action}")
async def update_service(action: str, request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    """By service id from 2.53; before, ``enable``, ``disable`` and ``disable-log-reason`` by host and binary."""
    try:
        raw = await request.json()
    except ValueError:
        raise BadRequest("Malformed request body") from None
    if v.at_least("2.53"):
        return await run_in_threadpool(_update_by_id, action, _body(ServiceStatus, raw), ctx, svc, v)
    return await run_in_threadpool(_update_by_host, action, _body(ServiceUpdate, raw), ctx, svc)


def _update_by_id(service_id: str, body: ServiceStatus, ctx: Ctx, svc: Svc, v: APIVersion) -> Json:
    if body.status is None and body.forced_down is None:
        raise BadRequest("At least one of 'status' or 'forced_down' must be specified in the request body.")
    if body.forced_down:
        raise BadRequest("forced_down is not supported: a host is down when its agent stops heartbeating.")
    if body.disabled_reason is not None and body.status != "disabled":
        raise BadRequest("Specifying 'disabled_reason' with status '{status}' is invalid.", status=body.status)
    host = svc.hosts.service_host(ctx, service_id)
    if body.status is not None:
        svc.hosts.set_disabled(ctx, host, body.status == "disabled", body.disabled_reason)
    return {"service": service_view(svc.hosts.list_services(ctx, host=host)[0], v)}


@router.delete("/os-services/{service_id}", status_code=204)
def delete_service(service_id: str, ctx: Ctx, svc: Svc) -> Response:
    """Forget a host with no servers (its agent must join again to come back)."""
    svc.hosts.delete_service(ctx, service_id)
    return Response(status_code=204)


def _update_by_host(action: str, body: ServiceUpdate, ctx: Ctx, svc: Svc) -> Json:
    if action not in ("enable", "disable", "disable-log-reason"):
        raise NotFound("Unknown action")
    if action == "disable-log-reason" and body.disabled_reason is None:
        raise BadRequest("Missing disabled reason field")
    if body.binary != COMPUTE:
        raise BadRequest("Updating a {binary} service is not supported. Only nova-compute services can be "
                         "updated.", binary=body.binary)
    disabled = action != "enable"
    reason = body.disabled_reason if action == "disable-log-reason" else None
    svc.hosts.set_disabled(ctx, body.host, disabled, reason)
    out: Json = {"host": body.host, "binary": body.binary, "status": "disabled" if disabled else "enabled"}
    if reason:
        out["disabled_reason"] = reason
    return {"service": out}


# -- os-simple-tenant-usage ----------------------------------------------------------------------

def _when(text: str | None) -> datetime:
    """Nova's accepted formats; no value means now."""
    if not text:
        return datetime.now(UTC)
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.%f"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise BadRequest("Invalid datetime string: Datetime is in invalid format")


def _server_usage(u: ServerUsage) -> Json:
    return {"instance_id": u.instance_id, "name": u.name, "tenant_id": u.tenant_id, "flavor": u.flavor,
            "hours": u.hours, "memory_mb": u.memory_mb, "local_gb": u.local_gb, "vcpus": u.vcpus,
            "started_at": _naive(u.started_at), "ended_at": _naive(u.ended_at), "state": u.state,
            "uptime": u.uptime}


def _tenant_usage(u: TenantUsage, detailed: bool) -> Json:
    body: Json = {"tenant_id": u.tenant_id, "start": _naive(u.start), "stop": _naive(u.stop),
                  "total_hours": u.total_hours, "total_memory_mb_usage": u.total_memory_mb_usage,
                  "total_vcpus_usage": u.total_vcpus_usage, "total_local_gb_usage": u.total_local_gb_usage}
    if detailed:
        body["server_usages"] = [_server_usage(s) for s in u.server_usages]
    return body


def _period(request: Request, v: APIVersion) -> tuple[datetime, datetime, int | None, str | None]:
    q = request.query_params
    start, stop = _when(q.get("start")), _when(q.get("end"))
    limit, marker = None, None
    if v.at_least("2.40"):  # paging over servers arrived in 2.40
        limit, marker = paging(q.get("limit"), q.get("marker"))
    return start, stop, limit, marker


def _links(request: Request, svc: Svc, usages: list[TenantUsage], limit: int | None) -> list[Json]:
    if limit is None:
        return []
    ids = [s.instance_id for u in usages for s in u.server_usages]
    return next_links(request, svc.config.server.base_url, ids, limit)


@router.get("/os-simple-tenant-usage")
def list_usage(request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    start, stop, limit, marker = _period(request, v)
    usages = svc.compute.usage.usages(ctx, start, stop, limit=limit, marker=marker)
    detailed = request.query_params.get("detailed") == "1"
    body: Json = {"tenant_usages": [_tenant_usage(u, detailed) for u in usages]}
    links = _links(request, svc, usages, limit)
    if links:
        body["tenant_usages_links"] = links
    return body


@router.get("/os-simple-tenant-usage/{project_id}")
def show_usage(project_id: str, request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    start, stop, limit, marker = _period(request, v)
    usages = svc.compute.usage.usages(ctx, start, stop, project_id=project_id, limit=limit, marker=marker)
    body: Json = {"tenant_usage": _tenant_usage(usages[0], True) if usages else {}}
    links = _links(request, svc, usages, limit)
    if links:
        body["tenant_usage_links"] = links
    return body
