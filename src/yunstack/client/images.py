"""Images (Glance v2) as the dashboard lists, registers, uploads, edits and deletes them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from yunstack.client.http import YunClient

# Glance's JSON-patch media type for PATCH /v2/images/{id}.
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


@dataclass(frozen=True, kw_only=True)
class Image:
    id: str
    name: str
    status: str
    size: int
    visibility: str
    disk_format: str = ""
    container_format: str = ""
    min_disk: int = 0
    min_ram: int = 0
    owner: str = ""
    protected: bool = False
    checksum: str = ""
    created: str = ""


def _image(i: dict[str, Any]) -> Image:
    return Image(id=str(i["id"]), name=str(i.get("name") or i["id"]), status=str(i.get("status", "")),
                 size=int(i.get("size") or 0), visibility=str(i.get("visibility", "")),
                 disk_format=str(i.get("disk_format") or ""), container_format=str(i.get("container_format") or ""),
                 min_disk=int(i.get("min_disk") or 0), min_ram=int(i.get("min_ram") or 0),
                 owner=str(i.get("owner") or ""), protected=bool(i.get("protected")),
                 checksum=str(i.get("checksum") or ""), created=str(i.get("created_at") or ""))


def list_images(client: YunClient, *, active_only: bool = False) -> list[Image]:
    """The images the token's project can see (its own, shared and public), by name."""
    found = client.get("image", "/v2/images", params={"limit": 1000})["images"]
    images = [_image(i) for i in found]
    return sorted((i for i in images if i.status == "active" or not active_only), key=lambda i: i.name)


def get_image(client: YunClient, image_id: str) -> Image:
    """One image the token's project can see (another project's private one is a 404 ``ApiError``)."""
    return _image(client.get("image", f"/v2/images/{image_id}"))


def register_image(client: YunClient, name: str, *, disk_format: str, visibility: str = "private",
                   min_disk: int = 0, min_ram: int = 0, protected: bool = False) -> Image:
    """A queued image record (no data yet: ``upload_image_data`` sends it); the API decides whether
    this user may choose ``visibility`` (``public`` is for admins)."""
    body = {"name": name, "disk_format": disk_format, "container_format": "bare", "visibility": visibility,
            "min_disk": min_disk, "min_ram": min_ram, "protected": protected}
    return _image(client.post("image", "/v2/images", json=body))


def upload_image_data(client: YunClient, image_id: str, chunks: Iterable[bytes], *, size: int | None = None) -> Image:
    """Stream ``chunks`` as the image's data (``PUT /v2/images/{id}/file``), one chunk at a time: the
    body is never held whole.  ``size`` (when known) is sent as the Content-Length, so the API can
    refuse an image over its limits before reading it.  The chunks are read once: this is not retried.
    Answers the image as it is afterwards (active, with its size and checksum)."""
    headers = {"Content-Type": "application/octet-stream"}
    if size is not None:
        headers["Content-Length"] = str(size)  # httpx would otherwise send an iterable chunked
    client.request("PUT", "image", f"/v2/images/{image_id}/file", content=chunks, headers=headers)
    return get_image(client, image_id)


def update_image(client: YunClient, image_id: str, **changes: object) -> Image:
    """Replace the given attributes (name, visibility, min_disk, min_ram, protected) with one JSON patch."""
    ops = [{"op": "replace", "path": f"/{key}", "value": value} for key, value in changes.items()]
    return _image(client.request("PATCH", "image", f"/v2/images/{image_id}", json=ops, headers=PATCH).json())


def delete_image(client: YunClient, image_id: str) -> None:
    """Delete an image of the token's project; a protected one is refused (403, the API's reason)."""
    client.delete("image", f"/v2/images/{image_id}")
