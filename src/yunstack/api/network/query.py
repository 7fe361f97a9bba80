"""Neutron list semantics over rendered objects: filters, tags, sorting, pagination and ``fields``.

Any attribute may be a filter (repeated parameters mean OR; unknown attributes are ignored, as
Neutron does without the filter-validation extension).  Lists are produced per caller's scope by
the service and narrowed here, so every collection behaves the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from yunstack.errors import BadRequest

Json = dict[str, Any]
CONTROL = frozenset({"fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir", "tags", "tags-any",
                     "not-tags", "not-tags-any"})


def _matches(value: Any, wanted: str) -> bool:
    if isinstance(value, bool):
        return wanted.lower() in (("true", "1") if value else ("false", "0"))
    if value is None:
        return wanted in ("", "None", "null")
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                key, _, expected = wanted.partition("=")
                if str(item.get(key)) == expected:
                    return True
            elif _matches(item, wanted):
                return True
        return False
    if isinstance(value, dict):
        return False
    return str(value) == wanted


def _tags(params: QueryParams, key: str) -> set[str]:
    return {tag for raw in params.getlist(key) for tag in raw.split(",") if tag}


def _keep(item: Json, params: QueryParams) -> bool:
    for key in set(params.keys()) - CONTROL:
        if key not in item:
            continue
        if not any(_matches(item[key], wanted) for wanted in params.getlist(key)):
            return False
    tags = set(item.get("tags", ()))
    if "tags" in params and not _tags(params, "tags") <= tags:
        return False
    if "tags-any" in params and not _tags(params, "tags-any") & tags:
        return False
    if "not-tags" in params and _tags(params, "not-tags") <= tags:
        return False
    return not ("not-tags-any" in params and _tags(params, "not-tags-any") & tags)


def _sort_value(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, (bool, int, float)):
        return (1, value)
    return (2, str(value))


def _sorted(items: list[Json], params: QueryParams) -> list[Json]:
    keys, dirs = params.getlist("sort_key"), params.getlist("sort_dir")
    if len(dirs) > len(keys) or (keys and dirs and len(dirs) != len(keys)):
        raise BadRequest("The number of sort_keys and sort_dirs must be same")
    for d in dirs:
        if d not in ("asc", "desc"):
            raise BadRequest("{d} is an invalid value for sort_dir, valid values are 'asc' and 'desc'", d=d)
    for k in keys:
        if items and k not in items[0]:
            raise BadRequest("{k} is an invalid attribute for sort_key", k=k)
    out = sorted(items, key=lambda i: _sort_value(i.get("id")))
    for key, direction in reversed(list(zip(keys, dirs or ["asc"] * len(keys), strict=False))):
        out.sort(key=_by(key), reverse=direction == "desc")
    return out


def _by(key: str) -> Callable[[Json], tuple[int, Any]]:
    return lambda item: _sort_value(item.get(key))


def _int(params: QueryParams, key: str) -> int | None:
    raw = params.get(key)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as e:
        raise BadRequest("Invalid input for {key}. Reason: '{raw}' is not an integer.", key=key, raw=raw) from e


def _link(base: str, params: QueryParams, rel: str, marker: str, reverse: bool) -> Json:
    query = [(k, v) for k, v in params.multi_items() if k not in ("marker", "page_reverse")]
    query.append(("marker", marker))
    if reverse:
        query.append(("page_reverse", "True"))
    return {"href": f"{base}?{urlencode(query)}", "rel": rel}


def collection(name: str, items: Sequence[Json], params: QueryParams, base: str) -> Json:
    """``{name: [...], name_links: [...]}`` narrowed, sorted, paged and cut to ``fields``."""
    chosen = _sorted([i for i in items if _keep(i, params)], params)
    limit, marker = _int(params, "limit"), params.get("marker")
    reverse = params.get("page_reverse", "false").lower() in ("true", "1")
    links: list[Json] = []
    if (limit is not None and limit > 0) or marker:
        index = next((n for n, i in enumerate(chosen) if i.get("id") == marker), None) if marker else None
        if marker and index is None:
            raise BadRequest("Marker {marker} not found", marker=marker)
        if not reverse:
            start = index + 1 if index is not None else 0
            end = start + limit if limit and limit > 0 else len(chosen)
            page = chosen[start:end]
            if page and end < len(chosen):
                links.append(_link(base, params, "next", page[-1]["id"], False))
            if page and marker:
                links.append(_link(base, params, "previous", page[0]["id"], True))
        else:
            end = index if index is not None else len(chosen)
            start = max(0, end - limit) if limit and limit > 0 else 0
            page = chosen[start:end]
            if page and marker:
                links.append(_link(base, params, "next", page[-1]["id"], False))
            if page and start > 0:
                links.append(_link(base, params, "previous", page[0]["id"], True))
        chosen = page
    body: Json = {name: [only(i, params) for i in chosen]}
    if links:
        body[f"{name}_links"] = links
    return body


def only(item: Json, params: QueryParams) -> Json:
    """The item cut to the ``fields`` asked for (all of it when none are)."""
    fields = [f for raw in params.getlist("fields") for f in raw.split(",") if f]
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}
