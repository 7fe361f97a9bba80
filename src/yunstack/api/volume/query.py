"""A Cinder list call's query string: filters, sort and paging (``?name=&status=&sort=name:asc&limit=``),
as the requested microversion reads it."""

from __future__ import annotations

from starlette.datastructures import QueryParams

from yunstack.api.volume import filters
from yunstack.api.volume import microversion as mv
from yunstack.api.volume.schemas import bool_of
from yunstack.errors import BadRequest
from yunstack.volume.service import ListQuery


def int_param(params: QueryParams, key: str, low: int) -> int | None:
    raw = params.get(key)
    if raw is None:
        return None
    if not raw.strip().lstrip("-").isdigit() or int(raw) < low:
        raise BadRequest(f"Invalid input received: {key} must be an integer of at least {low}, not {raw!r}.")
    return int(raw)


def _sort(params: QueryParams) -> list[tuple[str, str]]:
    """``sort=key1:dir,key2`` or ``sort_key``/``sort_dir`` (not both, as Cinder)."""
    if "sort" in params and ("sort_key" in params or "sort_dir" in params):
        raise BadRequest("Invalid input received: the sort parameter cannot be used with sort_key or sort_dir.")
    out = []
    if "sort" in params:
        for part in params["sort"].split(","):
            key, _, direction = part.strip().partition(":")
            out.append((key.strip(), (direction or "desc").strip().lower()))
    elif "sort_key" in params or "sort_dir" in params:
        out.append((params.get("sort_key", "created_at"), params.get("sort_dir", "desc").lower()))
    return out


def _bootable(raw: str | None, version: tuple[int, int]) -> bool | None:
    """Cinder's ``check_volume_filters``: strict from 3.2; before, anything but a spelling of false is true."""
    if raw is None:
        return None
    if version >= mv.VOLUME_LIST_BOOTABLE:
        return bool_of(raw, "bootable")
    return False if raw in ("False", "false", "FALSE") else bool(raw)


def list_query(params: QueryParams, *, snapshots: bool, version: tuple[int, int] = mv.MIN) -> ListQuery:
    sort = _sort(params)
    if snapshots and version < mv.SNAPSHOT_SORT and any(key == "name" for key, _ in sort):
        # Before 3.30 Cinder hands "name" to the database, where a snapshot has only display_name.
        raise BadRequest("Invalid input received: Invalid sort key name")
    metadata = params.get("metadata")
    if snapshots and version < mv.SNAPSHOT_LIST_METADATA_FILTER:
        metadata = None  # Cinder drops it before 3.22
    glance = params.get("glance_metadata") if not snapshots and version >= mv.VOLUME_LIST_GLANCE_METADATA else None
    group = params.get("group_id") if not snapshots and version >= mv.VOLUME_LIST_GROUP else None
    return ListQuery(
        name=params.get("name", params.get("display_name")), name_like=filters.like(params, "name", version),
        status=params.get("status"),
        metadata=metadata, availability_zone=None if snapshots else params.get("availability_zone"),
        bootable=None if snapshots else _bootable(params.get("bootable"), version),
        glance_metadata=glance, group_id=group,
        volume_id=params.get("volume_id") if snapshots else None,
        all_projects=bool_of(params.get("all_tenants", "false"), "all_tenants"), project_id=params.get("project_id"),
        sort=sort, limit=int_param(params, "limit", 0), marker=params.get("marker"),
        offset=int_param(params, "offset", 0) or 0)
