"""Nova keypairs (os-keypairs)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from yunstack.api.compute import schemas_misc as s
from yunstack.api.compute import views_misc as v
from yunstack.api.compute.microversion import APIVersion, Version
from yunstack.api.deps import Ctx, Svc
from yunstack.errors import BadRequest

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]


def _user(user_id: str | None, version: APIVersion) -> str | None:
    # The user_id parameter exists from 2.10; before that it is ignored, as in Nova.
    return user_id if version.at_least("2.10") else None


@router.get("/os-keypairs")
def list_keypairs(request: Request, ctx: Ctx, svc: Svc, version: Version, user_id: str | None = None) -> Json:
    limit: int | None = None
    marker: str | None = None
    if version.at_least("2.35"):
        q = request.query_params
        limit, marker = v.paging(q.get("limit"), q.get("marker"))
    found = svc.keypairs.list(ctx, user_id=_user(user_id, version), limit=limit, marker=marker)
    body: Json = {"keypairs": [v.keypair_listed(k, version) for k in found]}
    if limit is not None:
        links = v.next_links(request, svc.config.server.base_url, [k.name for k in found], limit)
        if links:
            body["keypairs_links"] = links
    return body


@router.post("/os-keypairs", status_code=201)
def create_keypair(body: s.KeyPairCreateBody, ctx: Ctx, svc: Svc, version: Version) -> JSONResponse:
    k = body.keypair
    if k.type is not None and not version.at_least("2.2"):
        raise BadRequest("Invalid input for field/attribute keypair. Additional properties are not "
                         "allowed ('type' was unexpected)")
    if k.user_id is not None and not version.at_least("2.10"):
        raise BadRequest("Invalid input for field/attribute keypair. Additional properties are not "
                         "allowed ('user_id' was unexpected)")
    made = svc.keypairs.create(ctx, name=k.name, public_key=k.public_key, key_type=k.type or "ssh",
                               user_id=k.user_id)
    return JSONResponse(v.keypair_created(made, version), status_code=201 if version.at_least("2.2") else 200)


@router.get("/os-keypairs/{name}")
def show_keypair(name: str, ctx: Ctx, svc: Svc, version: Version, user_id: str | None = None) -> Json:
    return v.keypair(svc.keypairs.get(ctx, name, user_id=_user(user_id, version)), version)


@router.delete("/os-keypairs/{name}", status_code=204)
def delete_keypair(name: str, ctx: Ctx, svc: Svc, version: Version, user_id: str | None = None) -> Response:
    svc.keypairs.delete(ctx, name, user_id=_user(user_id, version))
    return Response(status_code=204 if version.at_least("2.2") else 202)
