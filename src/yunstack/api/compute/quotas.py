"""Nova quota sets (os-quota-sets) and limits."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from yunstack.api.compute import schemas_misc as s
from yunstack.api.compute import views_misc as v
from yunstack.api.compute.microversion import Version
from yunstack.api.deps import Ctx, Svc
from yunstack.compute.quotas import NETWORK_PROXY
from yunstack.errors import BadRequest

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]

# user_id (per-user quotas) is accepted and the project's quota is applied: we keep no user quotas.


@router.get("/os-quota-sets/{project_id}")
def show_quota_set(project_id: str, ctx: Ctx, svc: Svc, version: Version, user_id: str | None = None) -> Json:
    return v.quota_set(svc.quotas.show(ctx, project_id), version, project_id)


@router.get("/os-quota-sets/{project_id}/detail")
def show_quota_set_detail(project_id: str, ctx: Ctx, svc: Svc, version: Version,
                          user_id: str | None = None) -> Json:
    return v.quota_set(svc.quotas.detail(ctx, project_id), version, project_id)


@router.get("/os-quota-sets/{project_id}/defaults")
def show_quota_defaults(project_id: str, ctx: Ctx, svc: Svc, version: Version) -> Json:
    return v.quota_set(svc.quotas.defaults(ctx, project_id), version, project_id)


@router.put("/os-quota-sets/{project_id}")
def update_quota_set(project_id: str, body: s.QuotaSetUpdateBody, ctx: Ctx, svc: Svc, version: Version,
                     user_id: str | None = None) -> Json:
    values = body.quota_set.model_dump(exclude_none=True, exclude={"force"})
    if version.at_least("2.36"):
        refused = sorted(set(values) & set(NETWORK_PROXY))
        if refused:
            raise BadRequest("Invalid input for field/attribute quota_set. Additional properties are not "
                             "allowed ({names} were unexpected)", names=", ".join(refused))
    updated = svc.quotas.update(ctx, project_id, values, force=body.quota_set.force)
    # Nova answers an update without the id.
    return v.quota_set(updated, version, None)


@router.delete("/os-quota-sets/{project_id}", status_code=202)
def delete_quota_set(project_id: str, ctx: Ctx, svc: Svc, user_id: str | None = None) -> Response:
    svc.quotas.reset(ctx, project_id)
    return Response(status_code=202)


@router.get("/limits")
def show_limits(ctx: Ctx, svc: Svc, version: Version, tenant_id: str | None = None,
                reserved: str | None = None) -> Json:
    return v.limits(svc.quotas.absolute(ctx, tenant_id), version)
