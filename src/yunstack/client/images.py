"""Images (Glance v2) as the dashboard lists them."""

from __future__ import annotations

from dataclasses import dataclass

from yunstack.client.http import YunClient


@dataclass(frozen=True, kw_only=True)
class Image:
    id: str
    name: str
    status: str
    size: int
    visibility: str


def list_images(client: YunClient, *, active_only: bool = False) -> list[Image]:
    """The images the token's project can see (its own, shared and public), by name."""
    found = client.get("image", "/v2/images", params={"limit": 1000})["images"]
    images = [Image(id=str(i["id"]), name=str(i.get("name") or i["id"]), status=str(i.get("status", "")),
                    size=int(i.get("size") or 0), visibility=str(i.get("visibility", ""))) for i in found]
    return sorted((i for i in images if i.status == "active" or not active_only), key=lambda i: i.name)
