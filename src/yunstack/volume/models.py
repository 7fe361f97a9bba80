"""What the volume service hands out: volumes, snapshots and volume types as immutable records.

Rows never leave a session; the API renders these (``api/volume/views.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, kw_only=True)
class VolumeType:
    id: str
    name: str
    description: str | None
    is_public: bool
    extra_specs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Attachment:
    """A volume in a server's guest, as Cinder lists it on the volume."""

    id: str
    volume_id: str
    server_id: str
    host_name: str
    device: str | None
    attached_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class Volume:
    id: str
    project_id: str
    user_id: str
    name: str | None
    description: str | None
    size: int
    status: str
    status_reason: str | None
    availability_zone: str
    volume_type: VolumeType
    host: str
    backend: str
    bootable: bool
    read_only: bool | None  # None: never set
    multiattach: bool
    snapshot_id: str | None
    source_volid: str | None
    metadata: dict[str, str]
    image_metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    launched_at: datetime | None
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    id: str
    volume_id: str
    project_id: str
    user_id: str
    name: str | None
    description: str | None
    size: int
    status: str
    status_reason: str | None
    progress: str
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, kw_only=True)
class QuotaUsage:
    limit: int
    in_use: int
    reserved: int = 0
    allocated: int = 0
