"""Cinder's resource filters (3.31, 3.33, 3.34): which list filters a user may send.

Cinder reads them from ``resource_filters.json``; ours are the filters these lists serve (the
``~`` of a key allows its inexact form, ``name~=vol`` matching any name containing ``vol``).
Before 3.31 a key outside them is ignored, as it always was; from 3.31 a user's unknown key is
400 (``all_tenants`` is forgiven: clients send it unasked), and from 3.34 a key is also valid
when only its ``~`` form is configured.  Admins may send any key (Cinder hands it to the
database, where a key that is no filter matches nothing), so one we do not serve lists nothing.
"""

from __future__ import annotations

from starlette.datastructures import QueryParams

from yunstack.api.volume.microversion import LIKE_FILTER, RESOURCE_FILTER, SUPPORT_COUNT_INFO
from yunstack.api.volume.schemas import bool_of
from yunstack.errors import BadRequest
from yunstack.identity.context import AuthContext

RESOURCE_FILTERS: dict[str, tuple[str, ...]] = {
    "volume": ("name", "name~", "status", "metadata", "bootable", "availability_zone", "group_id",
               "glance_metadata"),
    "snapshot": ("name", "name~", "status", "volume_id", "metadata"),
    "attachment": ("volume_id", "status", "instance_id", "attach_status"),
}
# What is not a filter: paging, sorting, and the admin's project scope.
NOT_FILTERS = frozenset({"limit", "marker", "offset", "sort", "sort_key", "sort_dir"})
ADMIN_SCOPE = frozenset({"all_tenants", "project_id"})


def filter_keys(params: QueryParams, version: tuple[int, int]) -> list[str]:
    # with_count is read (and so is no filter) from 3.45; before, it is a key like any other.
    counted = {"with_count"} if version >= SUPPORT_COUNT_INFO else set()
    return [key for key in dict.fromkeys(params.keys()) if key not in NOT_FILTERS | counted]


def served(params: QueryParams, resource: str, ctx: AuthContext, version: tuple[int, int]) -> bool:
    """Whether the list can answer these filters: ``BadRequest`` for a user's unknown key from 3.31;
    ``False`` when an admin names a key we do not filter on (the list is empty, as Cinder's)."""
    if version < RESOURCE_FILTER:
        return True
    keys = filter_keys(params, version)
    for key in keys:
        if not key.isascii():
            raise BadRequest("Invalid input received: Filter keys can only contain ASCII characters.")
    configured = RESOURCE_FILTERS[resource]
    like = version >= LIKE_FILTER

    def valid(key: str) -> bool:
        return key in configured or (like and f"{key}~" in configured)

    if ctx.is_admin:
        return all(valid(key) or key in ADMIN_SCOPE or key == "display_name" for key in keys)
    invalid = [key for key in keys if not valid(key) and key != "all_tenants"]
    if invalid:
        raise BadRequest(f"Invalid input received: Invalid filters {','.join(invalid)} are found in query options.")
    return True


def with_count(params: QueryParams, version: tuple[int, int]) -> bool:
    """Whether a volume or snapshot list should say how many match (``with_count``, read from 3.45)."""
    return version >= SUPPORT_COUNT_INFO and bool_of(params.get("with_count", "false"), "with_count")


def like(params: QueryParams, key: str, version: tuple[int, int]) -> str | None:
    """The value of ``key~`` (an inexact filter), read from 3.31 on (where it can be valid)."""
    return params.get(f"{key}~") if version >= RESOURCE_FILTER else None


def listing(resource: str | None) -> list[dict[str, object]]:
    """``GET /resource_filters`` (3.33): every resource's filters, or one (none when it has none)."""
    chosen = RESOURCE_FILTERS if resource is None else {k: v for k, v in RESOURCE_FILTERS.items() if k == resource}
    return [{"resource": name, "filters": list(keys)} for name, keys in chosen.items()]
