"""Nova os-server-groups, and the ``group`` scheduler hint of a server create.

Up to our maximum microversion (2.47) a group has ``policies`` (one item) and an always-empty
``metadata``; 2.13 adds ``project_id`` and ``user_id``; 2.15 allows the soft policies.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from yunstack.api.compute.microversion import APIVersion, Version
from yunstack.api.deps import Ctx, Svc
from yunstack.api.schemas import Strict
from yunstack.compute.servergroups import ServerGroup
from yunstack.errors import BadRequest

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]
HARD = ("affinity", "anti-affinity")
SOFT = ("soft-affinity", "soft-anti-affinity")


class ServerGroupCreate(Strict):
    name: str = Field(min_length=1, max_length=255)
    policies: list[str]


class ServerGroupCreateBody(Strict):
    server_group: ServerGroupCreate


def view(group: ServerGroup, v: APIVersion) -> Json:
    body: Json = {"id": group.id, "name": group.name, "policies": [group.policy],
                  "members": list(group.members), "metadata": {}}
    if v.at_least("2.13"):
        body["project_id"] = group.project_id
        body["user_id"] = group.user_id
    return body


def group_hint(hints: dict[str, Any] | None) -> str | None:
    """The server group a create asks to join (``os:scheduler_hints: {"group": id}``); 400 if not a UUID."""
    value = (hints or {}).get("group")
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # the CLI may send a one-item list
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise BadRequest("Invalid input for field/attribute group. Value: {v}. It is not a UUID.",
                         v=str(value)) from None


def _non_negative(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise BadRequest("Invalid input for query parameters {name}: {value} is not a non-negative integer.",
                         name=name, value=value)
    return int(value)


@router.post("/os-server-groups")
def create_server_group(body: ServerGroupCreateBody, ctx: Ctx, svc: Svc, v: Version) -> Json:
    policies = body.server_group.policies
    allowed = HARD + SOFT if v.at_least("2.15") else HARD
    if len(policies) != 1 or policies[0] not in allowed:
        raise BadRequest("Invalid input for field/attribute policies: exactly one of {ok} is required.",
                         ok=", ".join(allowed))
    group = svc.compute.groups.create(ctx, body.server_group.name, policies[0])
    return {"server_group": view(group, v)}


@router.get("/os-server-groups")
def list_server_groups(request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    q = request.query_params
    groups = svc.compute.groups.list_groups(
        ctx, all_projects="all_projects" in q, limit=_non_negative(q.get("limit"), "limit"),
        offset=_non_negative(q.get("offset"), "offset") or 0)
    return {"server_groups": [view(x, v) for x in groups]}


@router.get("/os-server-groups/{group_id}")
def show_server_group(group_id: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    return {"server_group": view(svc.compute.groups.get(ctx, group_id), v)}


@router.delete("/os-server-groups/{group_id}", status_code=204)
def delete_server_group(group_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.compute.groups.delete(ctx, group_id)
    return Response(status_code=204)
