"""Glance v2 request bodies.

Image creation takes arbitrary extra string properties as top-level keys (Glance's schema has
``additionalProperties: {"type": "string"}``), so ``ImageCreate`` allows extras and the service
checks them (strings only; read-only and ``os_glance*`` keys are 403).  Every other body is strict.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, TypeAdapter

from yunstack.api.schemas import Strict, StrictNonNegativeInt32


class ImageCreate(BaseModel):
    model_config = ConfigDict(extra="allow", str_max_length=65535)

    id: str | None = None
    name: str | None = Field(default=None, max_length=255)
    visibility: Literal["public", "private", "shared", "community"] = "shared"
    protected: StrictBool = False
    os_hidden: StrictBool = False
    min_disk: StrictNonNegativeInt32 = 0
    min_ram: StrictNonNegativeInt32 = 0
    tags: list[str] = Field(default_factory=list, max_length=128)
    disk_format: str | None = None
    container_format: str | None = None
    owner: str | None = Field(default=None, max_length=64)

    def properties(self) -> dict[str, Any]:
        """The extra (non-core) top-level keys."""
        return dict(self.model_extra or {})


class PatchItem(Strict):
    op: Literal["add", "replace", "remove"]
    path: str = Field(max_length=1024)
    value: Any = None


Patch = TypeAdapter(list[PatchItem])
# The v2.0 media type predates RFC 6902: the operation is the member's name and its value the path,
# ``{"replace": "/name", "value": "x"}`` (JSON-patch draft 4, as Glance reads it).
PatchV20 = TypeAdapter(list[dict[str, Any]])

V21_PATCH = "application/openstack-images-v2.1-json-patch"
V20_PATCH = "application/openstack-images-v2.0-json-patch"
PATCH_MEDIA_TYPES = (V21_PATCH, V20_PATCH, "application/json-patch+json")
OPERATIONS = ("add", "remove", "replace")


class MemberCreate(Strict):
    member: str = Field(min_length=1, max_length=64)


class MemberUpdate(Strict):
    status: Literal["pending", "accepted", "rejected"]
