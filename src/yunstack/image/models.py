"""Image entities as the service hands them out: plain frozen data, no database session behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

VISIBILITIES = ("public", "private", "shared", "community")
MEMBER_STATUSES = ("pending", "accepted", "rejected")
CONTAINER_FORMATS = ("bare",)


@dataclass(frozen=True, kw_only=True)
class Image:
    id: str
    name: str | None
    owner: str | None
    status: str
    disk_format: str | None
    container_format: str | None
    visibility: str
    protected: bool
    os_hidden: bool
    size: int | None
    virtual_size: int | None
    checksum: str | None
    os_hash_algo: str | None
    os_hash_value: str | None
    min_disk: int
    min_ram: int
    tags: tuple[str, ...]
    properties: dict[str, Any] = field(default_factory=dict)
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class Member:
    image_id: str
    member_id: str
    status: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class ImageFilters:
    """List filters; ``None`` means "do not filter".  ``properties`` match extra properties exactly."""

    name: tuple[str, ...] | None = None
    status: tuple[str, ...] | None = None
    visibility: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    disk_format: tuple[str, ...] | None = None
    container_format: tuple[str, ...] | None = None
    member_status: str = "accepted"
    protected: bool | None = None
    os_hidden: bool = False
    ids: tuple[str, ...] | None = None
    size_min: int | None = None
    size_max: int | None = None
    properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PatchOp:
    """One JSON-patch operation: ``op`` is add/replace/remove, ``path`` a JSON pointer."""

    op: str
    path: str
    value: Any = None
    # The v2.0 media type (JSON-patch draft 4 in Glance): ``add`` refuses an attribute that is
    # already there (409) instead of replacing it as v2.1 does.
    add_must_be_new: bool = False


@dataclass(frozen=True, kw_only=True)
class Page:
    images: list[Image]
    more: bool
