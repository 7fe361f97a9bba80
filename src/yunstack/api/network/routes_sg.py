"""Neutron v2.0 routes: security groups, security group rules and quotas."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from yunstack.api.deps import Ctx, Svc
from yunstack.api.network import schemas as s
from yunstack.api.network import views as v
from yunstack.api.network.routes import V2, created, listing, one

router = APIRouter(prefix="/networking", tags=["network"])
Json = dict[str, Any]


@router.post(V2 + "/security-groups", status_code=201)
def create_security_group(body: s.SecurityGroupCreateBody, ctx: Ctx, svc: Svc) -> JSONResponse:
    g = body.security_group
    made = svc.network.create_security_group(ctx, name=g.name, description=g.description or "",
                                             project_id=g.owner)
    return created("security_group", v.security_group(made))


@router.get(V2 + "/security-groups")
def list_security_groups(request: Request, ctx: Ctx, svc: Svc) -> Json:
    found = svc.network.list_security_groups(ctx)
    return listing("security_groups", [v.security_group(g) for g in found], request, svc)


@router.get(V2 + "/security-groups/{group_id}")
def show_security_group(group_id: str, request: Request, ctx: Ctx, svc: Svc) -> Json:
    return one("security_group", v.security_group(svc.network.get_security_group(ctx, group_id)), request)


@router.put(V2 + "/security-groups/{group_id}")
def update_security_group(group_id: str, body: s.SecurityGroupUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    g = body.security_group
    return {"security_group": v.security_group(svc.network.update_security_group(
        ctx, group_id, name=g.name, description=g.description))}


@router.delete(V2 + "/security-groups/{group_id}", status_code=204)
def delete_security_group(group_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.delete_security_group(ctx, group_id)
    return Response(status_code=204)


@router.post(V2 + "/security-group-rules", status_code=201)
def create_security_group_rule(body: s.RuleCreateBody, ctx: Ctx, svc: Svc) -> JSONResponse:
    r = body.security_group_rule
    made = svc.network.create_security_group_rule(
        ctx, security_group_id=r.security_group_id, direction=r.direction, ethertype=r.ethertype,
        protocol=None if r.protocol is None else str(r.protocol), port_range_min=r.port_range_min,
        port_range_max=r.port_range_max, remote_ip_prefix=r.remote_ip_prefix, remote_group_id=r.remote_group_id,
        description=r.description or "", project_id=r.owner)
    return created("security_group_rule", v.rule(made))


@router.get(V2 + "/security-group-rules")
def list_security_group_rules(request: Request, ctx: Ctx, svc: Svc) -> Json:
    found = svc.network.list_security_group_rules(ctx)
    return listing("security_group_rules", [v.rule(r) for r in found], request, svc)


@router.get(V2 + "/security-group-rules/{rule_id}")
def show_security_group_rule(rule_id: str, request: Request, ctx: Ctx, svc: Svc) -> Json:
    return one("security_group_rule", v.rule(svc.network.get_security_group_rule(ctx, rule_id)), request)


@router.delete(V2 + "/security-group-rules/{rule_id}", status_code=204)
def delete_security_group_rule(rule_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.delete_security_group_rule(ctx, rule_id)
    return Response(status_code=204)


# -- quotas ------------------------------------------------------------------------------------

@router.get(V2 + "/quotas")
def list_quotas(ctx: Ctx, svc: Svc) -> Json:
    return {"quotas": [{**limits, "project_id": p, "tenant_id": p}
                       for p, limits in svc.network.quotas.overridden(ctx).items()]}


@router.get(V2 + "/quotas/project")
@router.get(V2 + "/quotas/tenant", include_in_schema=False)
def quota_project(ctx: Ctx) -> Json:
    return {"project": {"project_id": ctx.project_id}, "tenant": {"tenant_id": ctx.project_id}}


@router.get(V2 + "/quotas/{project_id}")
def show_quota(project_id: str, ctx: Ctx, svc: Svc) -> Json:
    return v.quota(svc.network.quotas.show(ctx, project_id))


@router.get(V2 + "/quotas/{project_id}/default")
def show_quota_default(project_id: str, ctx: Ctx, svc: Svc) -> Json:
    return v.quota(svc.network.quotas.defaults(ctx, project_id))


@router.get(V2 + "/quotas/{project_id}/details.json")
@router.get(V2 + "/quotas/{project_id}/details", include_in_schema=False)
def show_quota_details(project_id: str, ctx: Ctx, svc: Svc) -> Json:
    return v.quota_details(svc.network.quotas.details(ctx, project_id))


@router.put(V2 + "/quotas/{project_id}")
def update_quota(project_id: str, body: s.QuotaUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    values = body.quota.model_dump(exclude_none=True, exclude={"check_limit"})
    return v.quota(svc.network.quotas.update(ctx, project_id, values, check_limit=body.quota.check_limit))


@router.delete(V2 + "/quotas/{project_id}", status_code=204)
def delete_quota(project_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.network.quotas.reset(ctx, project_id)
    return Response(status_code=204)
