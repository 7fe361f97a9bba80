"""Glance v2 routes: one table, handlers that parse, call the service and render."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from yunstack.api.deps import Ctx, Svc
from yunstack.api.image import schemas as s
from yunstack.api.image import views as v
from yunstack.api.schemas import INT64_MAX
from yunstack.errors import BadRequest, NotFound, UnsupportedMediaType, ValidationFailed
from yunstack.image.models import ImageFilters, PatchOp

router = APIRouter(prefix="/image", tags=["image"])
Json = dict[str, Any]

MAX_LIMIT = 1000
DEFAULT_LIMIT = 25
# Query parameters with a meaning; anything else filters on an extra property.
_PARAMS = frozenset({"name", "status", "visibility", "owner", "tag", "disk_format", "container_format",
                     "member_status", "protected", "os_hidden", "id", "size_min", "size_max", "sort_key",
                     "sort_dir", "sort", "limit", "marker"})
_IN_FILTERS = ("id", "name", "status", "disk_format", "container_format")
STORE_HEADERS = {"OpenStack-image-import-methods": "", "OpenStack-image-store-ids": "local"}


def _versions(svc: Svc) -> JSONResponse:
    return JSONResponse(v.versions(svc.config.server.base_url), status_code=300)


# -- query parsing ---------------------------------------------------------------------------

def _bool(name: str, value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise BadRequest("Invalid value for {name}: {value!r}; expected true or false.", name=name, value=value)


def _int(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    # Sizes are 64-bit columns; int() itself refuses strings of over 4,300 digits.
    if not (value.isascii() and value.isdigit()) or len(value) > 20 or int(value) > INT64_MAX:
        raise BadRequest("Invalid value for {name}: {value!r}; expected an integer from 0 to {high}.",
                         name=name, value=value, high=INT64_MAX)
    return int(value)


def _any_of(name: str, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if value.startswith("in:"):
        return tuple(x.strip().strip('"') for x in value[3:].split(","))
    return (value,)


def _sort(params: Any) -> list[tuple[str, str]]:
    keys, dirs = params.getlist("sort_key"), params.getlist("sort_dir")
    if "sort" in params:
        if keys or dirs:
            raise BadRequest("The sort parameter cannot be combined with sort_key or sort_dir.")
        pairs = []
        for item in ",".join(params.getlist("sort")).split(","):
            key, _, direction = item.strip().partition(":")
            pairs.append((key, direction or "desc"))
        return pairs
    if not keys:
        return [("created_at", dirs[0] if dirs else "desc")]
    if len(dirs) > 1 and len(dirs) != len(keys):
        raise BadRequest("Give one sort_dir for all sort_keys, or one per sort_key.")
    return [(k, dirs[i] if len(dirs) > 1 else (dirs[0] if dirs else "desc")) for i, k in enumerate(keys)]


def _filters(params: Any) -> ImageFilters:
    g = params.get
    return ImageFilters(
        name=_any_of("name", g("name")), status=_any_of("status", g("status")), visibility=g("visibility"),
        owner=g("owner"), tags=tuple(params.getlist("tag")), disk_format=_any_of("disk_format", g("disk_format")),
        container_format=_any_of("container_format", g("container_format")),
        member_status=g("member_status", "accepted"), protected=_bool("protected", g("protected")),
        os_hidden=bool(_bool("os_hidden", g("os_hidden"))), ids=_any_of("id", g("id")),
        size_min=_int("size_min", g("size_min")), size_max=_int("size_max", g("size_max")),
        properties={k: val for k, val in params.items() if k not in _PARAMS})


# -- table -------------------------------------------------------------------------------------

@router.get("", status_code=300)
@router.get("/", status_code=300, include_in_schema=False)
@router.get("/versions", status_code=300, include_in_schema=False)
@router.get("/v2", status_code=300)
@router.get("/v2/", status_code=300, include_in_schema=False)
def versions(svc: Svc) -> JSONResponse:
    return _versions(svc)


@router.get("/v2/schemas/image")
def schema_image(ctx: Ctx) -> Json:
    return v.image_schema()


@router.get("/v2/schemas/images")
def schema_images(ctx: Ctx) -> Json:
    return v.images_schema()


@router.get("/v2/schemas/member")
def schema_member(ctx: Ctx) -> Json:
    return v.member_schema()


@router.get("/v2/schemas/members")
def schema_members(ctx: Ctx) -> Json:
    return v.members_schema()


@router.post("/v2/images", status_code=201)
def create_image(body: s.ImageCreate, ctx: Ctx, svc: Svc) -> JSONResponse:
    made = svc.image.create(ctx, name=body.name, image_id=body.id, disk_format=body.disk_format,
                            container_format=body.container_format, visibility=body.visibility,
                            protected=body.protected, os_hidden=body.os_hidden, min_disk=body.min_disk,
                            min_ram=body.min_ram, tags=body.tags, properties=body.properties(), owner=body.owner)
    headers = {**STORE_HEADERS, "Location": f"{svc.config.server.base_url}/image/v2/images/{made.id}"}
    return JSONResponse(v.image(made), status_code=201, headers=headers)


@router.get("/v2/images")
def list_images(ctx: Ctx, svc: Svc, request: Request) -> Json:
    params = request.query_params
    limit = _int("limit", params.get("limit"))
    limit = DEFAULT_LIMIT if limit is None else min(limit, MAX_LIMIT)
    page = svc.image.list_images(ctx, _filters(params), sort=_sort(params), limit=limit,
                                 marker=params.get("marker"))
    body: Json = {"images": [v.image(i) for i in page.images], "first": "/v2/images",
                  "schema": "/v2/schemas/images"}
    if page.more and page.images:
        query = [(k, val) for k, val in params.multi_items() if k != "marker"]
        body["next"] = "/v2/images?" + urlencode([*query, ("marker", page.images[-1].id)])
    return body


@router.get("/v2/images/{image_id}")
def show_image(image_id: str, ctx: Ctx, svc: Svc) -> Json:
    return v.image(svc.image.get(ctx, image_id))


@router.patch("/v2/images/{image_id}")
async def update_image(image_id: str, request: Request, ctx: Ctx, svc: Svc) -> Json:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in s.PATCH_MEDIA_TYPES:
        raise UnsupportedMediaType(detail=f"PATCH needs Content-Type {s.PATCH_MEDIA_TYPES[0]}, got {ctype!r}.")
    raw = await request.body()
    try:
        if ctype == s.V20_PATCH:
            ops = [_v20_op(item) for item in s.PatchV20.validate_json(raw)]
        else:
            ops = [PatchOp(op=i.op, path=i.path, value=i.value) for i in s.Patch.validate_json(raw)]
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValidationFailed(detail=f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}") from exc
    return v.image(await run_in_threadpool(svc.image.update, ctx, image_id, ops))


def _v20_op(item: dict[str, Any]) -> PatchOp:
    """One v2.0 operation object: exactly one member named add, remove or replace, holding the path."""
    named = [key for key in s.OPERATIONS if key in item]
    if len(named) != 1:
        raise BadRequest('Operation objects must contain exactly one member named "add", "remove", '
                         'or "replace".')
    op = named[0]
    path = item[op]
    if not isinstance(path, str):
        raise BadRequest("The {op} member must be a JSON pointer string.", op=op)
    if op != "remove" and "value" not in item:
        raise BadRequest('Operation "{op}" requires a member named "value".', op=op)
    return PatchOp(op=op, path=path, value=item.get("value"), add_must_be_new=True)


_EMPTY_ID_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@router.api_route("/v2/images/", methods=_EMPTY_ID_METHODS, include_in_schema=False)
@router.api_route("/v2/images/{image_id}/members/", methods=_EMPTY_ID_METHODS, include_in_schema=False)
@router.api_route("/v2/images/{image_id}/tags/", methods=_EMPTY_ID_METHODS, include_in_schema=False)
def empty_id(request: Request, ctx: Ctx) -> Response:
    # An empty id names nothing: 404 as in Glance, not a redirect to the collection (whose other
    # methods would then answer 405). Authentication still comes first (401 without a token).
    raise NotFound("The resource could not be found: {path}", path=request.url.path)


@router.delete("/v2/images/{image_id}", status_code=204)
def delete_image(image_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.image.delete(ctx, image_id)
    return Response(status_code=204)


@router.put("/v2/images/{image_id}/file", status_code=204)
async def upload_file(image_id: str, request: Request, ctx: Ctx, svc: Svc) -> Response:
    ctype = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
    if ctype != "application/octet-stream":
        raise UnsupportedMediaType(detail=f"image data must be application/octet-stream, not {ctype!r}.")
    size = _int("X-OpenStack-Image-Size",
                request.headers.get("x-openstack-image-size") or request.headers.get("content-length"))
    stream: AsyncIterator[bytes] = request.stream()

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    def chunks() -> Iterator[bytes]:
        # Runs in the worker thread: pull one chunk at a time from the event loop, so the body is
        # never held whole in memory.
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            if chunk:
                yield chunk

    await anyio.to_thread.run_sync(functools.partial(svc.image.upload, ctx, image_id, chunks(), size=size))
    return Response(status_code=204)


@router.get("/v2/images/{image_id}/file", response_model=None)
def download_file(image_id: str, ctx: Ctx, svc: Svc) -> Response:
    image, data = svc.image.download(ctx, image_id)
    if data is None:
        return Response(status_code=204)
    headers = {"Content-MD5": image.checksum or "", "Content-Length": str(image.size or 0)}
    return StreamingResponse(data, media_type="application/octet-stream", headers=headers)


@router.put("/v2/images/{image_id}/tags/{tag}", status_code=204)
def add_tag(image_id: str, tag: str, ctx: Ctx, svc: Svc) -> Response:
    svc.image.add_tag(ctx, image_id, tag)
    return Response(status_code=204)


@router.delete("/v2/images/{image_id}/tags/{tag}", status_code=204)
def remove_tag(image_id: str, tag: str, ctx: Ctx, svc: Svc) -> Response:
    svc.image.remove_tag(ctx, image_id, tag)
    return Response(status_code=204)


@router.get("/v2/images/{image_id}/members")
def list_members(image_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"members": [v.member(m) for m in svc.image.list_members(ctx, image_id)],
            "schema": "/v2/schemas/members"}


@router.post("/v2/images/{image_id}/members")
def add_member(image_id: str, body: s.MemberCreate, ctx: Ctx, svc: Svc) -> Json:
    return v.member(svc.image.add_member(ctx, image_id, body.member))


@router.get("/v2/images/{image_id}/members/{member_id}")
def show_member(image_id: str, member_id: str, ctx: Ctx, svc: Svc) -> Json:
    return v.member(svc.image.get_member(ctx, image_id, member_id))


@router.put("/v2/images/{image_id}/members/{member_id}")
def update_member(image_id: str, member_id: str, body: s.MemberUpdate, ctx: Ctx, svc: Svc) -> Json:
    return v.member(svc.image.update_member(ctx, image_id, member_id, body.status))


@router.delete("/v2/images/{image_id}/members/{member_id}", status_code=204)
def remove_member(image_id: str, member_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.image.remove_member(ctx, image_id, member_id)
    return Response(status_code=204)

