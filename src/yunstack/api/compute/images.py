"""Nova's image proxy (``/compute/v2.1/images``), read through the image service, up to 2.35.

From microversion 2.36 Nova answers 404 for these paths (the proxy APIs were deprecated);
Tempest's snapshot tests still read snapshots here at lower versions: Glance's status becomes
Nova's (queued/saving -> SAVING with progress 25/50, active -> ACTIVE 100), and a snapshot links
the server it was taken from (its ``instance_uuid`` property).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from yunstack.api.compute.microversion import APIVersion, Version
from yunstack.api.compute.views_misc import next_links, paging
from yunstack.api.deps import Ctx, Svc
from yunstack.api.schemas import Strict
from yunstack.errors import BadRequest, NotFound, QuotaExceeded
from yunstack.image.models import Image, ImageFilters, PatchOp
from yunstack.types import isotime

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]
IMAGE = "/images/{image_id}"
MAX_PROXY = "2.35"
MAX_METADATA_ITEMS = 128
_STATUS = {"active": "ACTIVE", "queued": "SAVING", "saving": "SAVING", "importing": "SAVING",
           "deleted": "DELETED", "pending_delete": "DELETED", "killed": "ERROR"}
_PROGRESS = {"queued": 25, "saving": 50, "active": 100}


def _proxy(v: APIVersion) -> None:
    if v.at_least("2.36"):
        raise NotFound("The resource could not be found.")


def _links(base: str, kind: str, id: str) -> list[Json]:
    return [{"rel": "self", "href": f"{base}/compute/v2.1/{kind}/{id}"},
            {"rel": "bookmark", "href": f"{base}/compute/{kind}/{id}"}]


def _image_links(base: str, image_id: str) -> list[Json]:
    return [*_links(base, "images", image_id),
            {"rel": "alternate", "type": "application/vnd.openstack.image", "href": f"{base}/image/images/{image_id}"}]


def brief(base: str, im: Image) -> Json:
    return {"id": im.id, "name": im.name, "links": _image_links(base, im.id)}


def detail(base: str, im: Image) -> Json:
    props = {str(k): v for k, v in im.properties.items()}
    body: Json = {"id": im.id, "name": im.name, "minRam": int(im.min_ram or 0), "minDisk": int(im.min_disk or 0),
                  "metadata": props, "created": isotime(im.created_at), "updated": isotime(im.updated_at),
                  "status": _STATUS.get(im.status, "UNKNOWN"), "progress": _PROGRESS.get(im.status, 0),
                  "OS-EXT-IMG-SIZE:size": im.size, "links": _image_links(base, im.id)}
    server = props.get("instance_uuid")
    if server is not None:
        body["server"] = {"id": server, "links": _links(base, "servers", str(server))}
    auto = props.get("auto_disk_config")
    if auto is not None:
        body["OS-DCF:diskConfig"] = "AUTO" if str(auto).lower() in ("1", "true", "yes", "on", "y") else "MANUAL"
    return body


def _filters(request: Request) -> tuple[ImageFilters, int, str | None]:
    q = request.query_params
    props: dict[str, str] = {}
    for key, value in q.items():
        if key.startswith("property-"):
            props[key[len("property-"):]] = value
    if q.get("server"):
        props["instance_uuid"] = q["server"].rsplit("/", 1)[-1]
    if q.get("type"):
        props["image_type"] = q["type"]
    limit, marker = paging(q.get("limit"), q.get("marker"))
    return ImageFilters(name=(q["name"],) if q.get("name") else None,
                        status=(q["status"].lower(),) if q.get("status") else None, properties=props), limit, marker


def _list(request: Request, ctx: Ctx, svc: Svc, v: APIVersion, detailed: bool) -> Json:
    _proxy(v)
    filters, limit, marker = _filters(request)
    q = request.query_params
    images = svc.image.list_images(ctx, filters, limit=limit, marker=marker).images
    for key, attr in (("minRam", "min_ram"), ("minDisk", "min_disk")):
        if q.get(key):
            if not q[key].isdigit():
                raise BadRequest("Invalid {key} filter: {value}.", key=key, value=q[key])
            images = [im for im in images if int(getattr(im, attr) or 0) >= int(q[key])]
    base = svc.config.server.base_url
    body: Json = {"images": [detail(base, im) if detailed else brief(base, im) for im in images]}
    links = next_links(request, base, [im.id for im in images], limit)
    if links:
        body["images_links"] = links
    return body


def _get(ctx: Ctx, svc: Svc, image_id: str) -> Image:
    try:
        return svc.image.get(ctx, image_id)
    except NotFound:
        raise NotFound("Image not found.") from None


@router.get("/images")
def list_images(request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    return _list(request, ctx, svc, v, False)


@router.get("/images/detail")
def list_images_detail(request: Request, ctx: Ctx, svc: Svc, v: Version) -> Json:
    return _list(request, ctx, svc, v, True)


@router.get(IMAGE)
def show_image(image_id: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    _proxy(v)
    return {"image": detail(svc.config.server.base_url, _get(ctx, svc, image_id))}


@router.delete(IMAGE, status_code=204)
def delete_image(image_id: str, ctx: Ctx, svc: Svc, v: Version) -> Response:
    _proxy(v)
    _get(ctx, svc, image_id)
    svc.image.delete(ctx, image_id)
    return Response(status_code=204)


# -- image metadata (the image's extra properties) -------------------------------------------------

class MetadataBody(Strict):
    metadata: dict[str, str]


class MetaItemBody(Strict):
    meta: dict[str, str]


def _set(ctx: Ctx, svc: Svc, image: Image, items: dict[str, str], *, replace: bool) -> dict[str, Any]:
    current = {str(k): v for k, v in image.properties.items()}
    final = dict(items) if replace else {**current, **items}
    if len(final) > MAX_METADATA_ITEMS:
        raise QuotaExceeded("Quota exceeded for metadata_items: at most {n} items.", n=MAX_METADATA_ITEMS)
    ops = [PatchOp(op="remove", path="/" + _escape(k)) for k in current if replace and k not in items]
    ops += [PatchOp(op="replace" if k in current else "add", path="/" + _escape(k), value=val)
            for k, val in items.items()]
    updated = svc.image.update(ctx, image.id, ops)
    return {str(k): v for k, v in updated.properties.items()}


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


@router.get(IMAGE + "/metadata")
def get_image_metadata(image_id: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    _proxy(v)
    return {"metadata": dict(_get(ctx, svc, image_id).properties)}


@router.post(IMAGE + "/metadata")
def update_image_metadata(image_id: str, body: MetadataBody, ctx: Ctx, svc: Svc, v: Version) -> Json:
    _proxy(v)
    return {"metadata": _set(ctx, svc, _get(ctx, svc, image_id), body.metadata, replace=False)}


@router.put(IMAGE + "/metadata")
def replace_image_metadata(image_id: str, body: MetadataBody, ctx: Ctx, svc: Svc, v: Version) -> Json:
    _proxy(v)
    _set(ctx, svc, _get(ctx, svc, image_id), body.metadata, replace=True)
    return {"metadata": body.metadata}


@router.get(IMAGE + "/metadata/{key}")
def get_image_meta_item(image_id: str, key: str, ctx: Ctx, svc: Svc, v: Version) -> Json:
    _proxy(v)
    props = _get(ctx, svc, image_id).properties
    if key not in props:
        raise NotFound("Image not found.")
    return {"meta": {key: props[key]}}


@router.put(IMAGE + "/metadata/{key}")
def set_image_meta_item(image_id: str, key: str, body: MetaItemBody, ctx: Ctx, svc: Svc, v: Version) -> Json:
    _proxy(v)
    if list(body.meta) != [key]:
        raise BadRequest("Request body and URI mismatch")
    _set(ctx, svc, _get(ctx, svc, image_id), body.meta, replace=False)
    return {"meta": body.meta}


@router.delete(IMAGE + "/metadata/{key}", status_code=204)
def delete_image_meta_item(image_id: str, key: str, ctx: Ctx, svc: Svc, v: Version) -> Response:
    _proxy(v)
    image = _get(ctx, svc, image_id)
    if key not in image.properties:
        raise NotFound("Image not found.")
    svc.image.update(ctx, image.id, [PatchOp(op="remove", path="/" + _escape(key))])
    return Response(status_code=204)
