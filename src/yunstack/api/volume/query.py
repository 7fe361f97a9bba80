"""A Cinder list call's query string: filters, sort and paging (``?name=&status=&sort=name:asc&limit=``)."""

from __future__ import annotations

from starlette.datastructures import QueryParams

from yunstack.api.volume.schemas import bool_of
from yunstack.errors import BadRequest
from yunstack.volume.service import ListQuery


def _int(params: QueryParams, key: str, low: int) -> int | None:
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


def list_query(params: QueryParams, *, snapshots: bool) -> ListQuery:
    bootable = params.get("bootable")
    return ListQuery(
        name=params.get("name", params.get("display_name")), status=params.get("status"),
        metadata=params.get("metadata"), availability_zone=None if snapshots else params.get("availability_zone"),
        bootable=None if bootable is None or snapshots else bool_of(bootable, "bootable"),
        volume_id=params.get("volume_id") if snapshots else None,
        all_projects=bool_of(params.get("all_tenants", "false"), "all_tenants"), project_id=params.get("project_id"),
        sort=_sort(params), limit=_int(params, "limit", 0), marker=params.get("marker"),
        offset=_int(params, "offset", 0) or 0)
