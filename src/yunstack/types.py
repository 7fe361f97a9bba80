"""Small shared value types; a leaf module that imports nothing of ours."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import NewType

ProjectId = NewType("ProjectId", str)
UserId = NewType("UserId", str)
InstanceId = NewType("InstanceId", str)
HostName = NewType("HostName", str)


def new_id() -> str:
    """A new resource id: 32 hex digits, the Keystone style (Nova/Glance format it as a UUID)."""
    return uuid.uuid4().hex


def new_uuid() -> str:
    """A new dashed UUID, for Nova, Glance, Neutron and Cinder resources."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """Timezone-aware now; the database stores naive UTC."""
    return datetime.now(UTC)


def isotime(value: datetime | None, *, micro: bool = False) -> str | None:
    """OpenStack timestamp: ``2026-01-01T00:00:00Z`` or with ``.000000Z`` microseconds."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    if micro:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
