"""Nova os-aggregates (admin only): host aggregates, their hosts, metadata and availability zone.

As Nova: create, update and delete answer 200 (delete with no body); create's body has no ``hosts``
and no ``metadata``; microversion 2.41 adds ``uuid``.  The rules (zones, the memory balancer key)
are the service's (``compute.aggregates``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field, ValidationError
from starlette.concurrency import run_in_threadpool

from yunstack.api.compute.microversion import APIVersion, Version
from yunstack.api.deps import Ctx, Svc
from yunstack.api.schemas import Strict
from yunstack.compute.aggregates import Aggregate
from yunstack.errors import BadRequest

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]
_META_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")  # Nova's metadata key pattern
_ZONE = r"^[^:]*$"  # a zone name never holds ':' (``AZ:HOST`` names a host at create)


class AggregateCreate(Strict):
    name: str = Field(min_length=1, max_length=255)
    availability_zone: str | None = Field(default=None, min_length=1, max_length=255, pattern=_ZONE)


class AggregateUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    availability_zone: str | None = Field(default=None, min_length=1, max_length=255, pattern=_ZONE)


class HostArg(Strict):
    host: str = Field(min_length=1, max_length=255)


def _naive(value: datetime | None) -> str | None:
    """Nova's rendering of aggregate times: ISO 8601 with microseconds and no zone."""
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


def view(agg: Aggregate, v: APIVersion, *, created: bool = False) -> Json:
    body: Json = {"availability_zone": agg.availability_zone, "created_at": _naive(agg.created_at),
                  "deleted": False, "deleted_at": None, "id": agg.id, "name": agg.name,
                  "updated_at": _naive(agg.updated_at)}
    if not created:
        body["hosts"] = list(agg.hosts)
        body["metadata"] = dict(agg.metadata)
    if v.at_least("2.41"):
        body["uuid"] = agg.uuid
    return body


def _parse(model: type[Strict], raw: object, what: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        raise BadRequest("Invalid input for field/attribute {where}: {why}", where=where, why=first["msg"]) from None


def _wrapped(raw: object, key: str) -> object:
    if not isinstance(raw, dict) or set(raw) != {key}:
        raise BadRequest("Invalid input: the body must be an object with exactly the key '{key}'.", key=key)
    return raw[key]


def _trimmed(name: str, field: str) -> str:
    if name != name.strip():
        raise BadRequest("Invalid input for field/attribute {field}: leading or trailing whitespace.", field=field)
    return name


def _metadata(args: object) -> dict[str, str | None]:
    if not isinstance(args, dict) or set(args) != {"metadata"} or not isinstance(args["metadata"], dict):
        raise BadRequest("Invalid input for field/attribute set_metadata: it must be an object with exactly "
                         "the key 'metadata', an object.")
    metadata: dict[str, str | None] = {}
    for key, value in args["metadata"].items():
        if not _META_KEY.match(key):
            raise BadRequest("Invalid input for field/attribute metadata: invalid key {key!r}.", key=key)
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise BadRequest("Invalid input for field/attribute metadata.{key}: a string of at most 255 "
                             "characters, or null to delete the key.", key=key)
        metadata[key] = value
    return metadata


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise BadRequest("Malformed request body: not JSON.") from None


@router.get("/os-aggregates")
def list_aggregates(ctx: Ctx, svc: Svc, v: Version) -> Json:
    return {"aggregates": [view(x, v) for x in svc.compute.aggregates.list_aggregates(ctx)]}


@router.post("/os-aggregates")
async def create_aggregate(request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    body = _parse(AggregateCreate, _wrapped(await _json(request), "aggregate"), "aggregate")
    name = _trimmed(body.name, "name")
    zone = None if body.availability_zone is None else _trimmed(body.availability_zone, "availability_zone")
    agg = await run_in_threadpool(svc.compute.aggregates.create, ctx, name, zone)
    return {"aggregate": view(agg, v, created=True)}


@router.get("/os-aggregates/{aggregate_id}")
def show_aggregate(aggregate_id: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    return {"aggregate": view(svc.compute.aggregates.get(ctx, aggregate_id), v)}


@router.put("/os-aggregates/{aggregate_id}")
async def update_aggregate(aggregate_id: str, request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    inner = _wrapped(await _json(request), "aggregate")
    body = _parse(AggregateUpdate, inner, "aggregate")
    updates: dict[str, str | None] = {}
    if body.name is not None:
        updates["name"] = body.name.strip()  # Nova normalises an update's name
    if "availability_zone" in body.model_fields_set:
        updates["availability_zone"] = None if body.availability_zone is None else body.availability_zone.strip()
    if not updates or (isinstance(inner, dict) and inner.get("name", "") is None):
        raise BadRequest("Invalid input for field/attribute aggregate: 'name' or 'availability_zone' is required.")
    agg = await run_in_threadpool(svc.compute.aggregates.update, ctx, aggregate_id, updates)
    return {"aggregate": view(agg, v)}


@router.delete("/os-aggregates/{aggregate_id}")
def delete_aggregate(aggregate_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.compute.aggregates.delete(ctx, aggregate_id)
    return Response(status_code=200)


@router.post("/os-aggregates/{aggregate_id}/action")
async def aggregate_action(aggregate_id: str, request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    raw = await _json(request)
    if not isinstance(raw, dict) or len(raw) != 1:
        raise BadRequest("An action body must be an object with exactly one action.")
    name, args = next(iter(raw.items()))
    service = svc.compute.aggregates
    if name in ("add_host", "remove_host"):
        host = _parse(HostArg, args, name).host
        method = service.add_host if name == "add_host" else service.remove_host
        agg = await run_in_threadpool(method, ctx, aggregate_id, host)
    elif name == "set_metadata":
        agg = await run_in_threadpool(service.set_metadata, ctx, aggregate_id, _metadata(args))
    else:
        raise BadRequest("There is no such action: {name}", name=name)
    return {"aggregate": view(agg, v)}
