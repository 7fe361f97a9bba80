"""Cinder's microversion header, and the project id that Cinder URLs may carry.

Clients send ``OpenStack-API-Version: volume 3.x``; no header means 3.0, ``latest`` our maximum,
and a version outside ours is 406 (Cinder's ``InvalidGlobalAPIVersion``).  We advertise only the
versions whose shapes we implement exactly (the table of ``docs/reference/volume-api.md``); the
version a request asked for is in its scope (``version_of``) for the views and routes to follow.

Cinder's endpoints name the project (``/volume/v3/{project_id}/volumes``) while the SDK strips
it; both reach the same routes here, which take the project from the token, so a project id in
the path is dropped before routing.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode

from starlette.requests import Request

from yunstack.api.faults import fault_body
from yunstack.api.middleware import ASGIApp, Message, Receive, Scope, Send

MIN = (3, 0)
MAX = (3, 48)
PREFIX = "/volume/v3"
SENT_PATH = "yun.volume_path"
VERSION = "yun.volume_version"
# The versions whose deltas touch what we serve (Cinder's names, cinder/api/microversions.py).
UPLOAD_IMAGE_PARAMS = (3, 1)
VOLUME_LIST_BOOTABLE = (3, 2)
VOLUME_LIST_GLANCE_METADATA = (3, 4)
VOLUME_LIST_GROUP = (3, 10)
VOLUME_SUMMARY = (3, 12)
GROUP_VOLUME = (3, 13)
GROUP_SNAPSHOTS = (3, 14)
ETAGS = (3, 15)
VOLUME_DETAIL_PROVIDER_ID = (3, 21)
SNAPSHOT_LIST_METADATA_FILTER = (3, 22)
VOLUME_DELETE_FORCE = (3, 23)
NEW_ATTACH = (3, 27)
SNAPSHOT_SORT = (3, 30)
RESOURCE_FILTER = (3, 31)  # the filters themselves are in api/volume/filters.py
RESOURCE_FILTER_CONFIG = (3, 33)
LIKE_FILTER = (3, 34)
VOLUME_SUMMARY_METADATA = (3, 36)
LIMITS_ADMIN_FILTER = (3, 39)
VOLUME_REVERT = (3, 40)
SNAPSHOT_LIST_USER_ID = (3, 41)
VOLUME_EXTEND_INUSE = (3, 42)
NEW_ATTACH_COMPLETION = (3, 44)
SUPPORT_COUNT_INFO = (3, 45)
SUPPORT_NOVA_IMAGE = (3, 46)  # read in api/volume/schemas.py
VOLUME_CREATE_FROM_BACKUP = (3, 47)  # read in api/volume/schemas.py
SHARED_TARGETS_AND_SERVICE_FIELDS = (3, 48)
_VERSION = re.compile(r"^(\d+)\.(\d+)$")
# The first path segments of our collections: anything else after /volume/v3/ is a project id.
COLLECTIONS = frozenset({"volumes", "snapshots", "types", "os-availability-zone", "limits", "os-quota-sets",
                         "extensions", "attachments", "messages", "os-volume-transfer", "backups",
                         "scheduler-stats", "os-services", "qos-specs", "capabilities", "groups",
                         "group_types", "group_snapshots", "volume-transfers", "manageable_volumes",
                         "manageable_snapshots", "resource_filters", "workers", "clusters", "os-hosts",
                         "default-types", "os-quota-class-sets", "os-snapshot-manage", "os-volume-manage"})


def _requested(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"openstack-api-version")
    if raw is None:
        return None
    for part in raw.decode("latin-1").split(","):
        words = part.strip().split()
        if len(words) == 2 and words[0].lower() == "volume":
            return words[1]
    return None


def parse(requested: str | None) -> tuple[int, int] | str:
    if requested is None:
        return MIN
    if requested.lower() == "latest":
        return MAX
    m = _VERSION.match(requested)
    if not m:
        return f"Invalid API version request: {requested!r}."
    version = (int(m.group(1)), int(m.group(2)))
    if not MIN <= version <= MAX:
        return (f"Version {requested} is not supported by the API. Minimum is {MIN[0]}.{MIN[1]} and maximum is "
                f"{MAX[0]}.{MAX[1]}.")
    return version


def version_of(request: Request) -> tuple[int, int]:
    """The microversion the request asked for (3.0 when it named none)."""
    version: tuple[int, int] = request.scope.get(VERSION, MIN)
    return version


def at_least(request: Request, version: tuple[int, int]) -> bool:
    return version_of(request) >= version


def sent_path(request: Request) -> str:
    """The request's path as the client sent it (with the project id, if it gave one)."""
    return str(request.scope.get(SENT_PATH, request.url.path))


def next_href(request: Request, base: str, marker: str) -> str:
    """The URL of a list's next page: the request as the client sent it, its marker the page's last id."""
    params = {k: v for k, v in request.query_params.items() if k != "marker"}
    params["marker"] = marker
    return f"{base}{sent_path(request)}?{urlencode(params)}"


def strip_project(path: str) -> str:
    """``/volume/v3/<project>/volumes/...`` -> ``/volume/v3/volumes/...`` (other paths unchanged)."""
    if not path.startswith(PREFIX + "/"):
        return path
    first, sep, rest = path[len(PREFIX) + 1:].partition("/")
    if not first or first in COLLECTIONS:
        return path
    return f"{PREFIX}/{rest}" if sep else f"{PREFIX}/"


class VolumeVersions:
    """ASGI middleware for the /volume prefix."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/volume"):
            await self.app(scope, receive, send)
            return
        path = strip_project(scope["path"])
        # The path as the client sent it: a list's next link repeats it (Tempest compares them).
        scope = {**scope, SENT_PATH: scope["path"]}
        if path != scope["path"]:
            scope = {**scope, "path": path, "raw_path": path.encode()}
        requested = _requested(dict(scope.get("headers", [])))
        version = parse(requested)
        if isinstance(version, str):
            status = 406 if _VERSION.match(requested or "") else 400
            body = json.dumps(fault_body("/volume", status, version)).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        scope = {**scope, VERSION: version}
        text = f"{version[0]}.{version[1]}"

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"openstack-api-version", f"volume {text}".encode()))
                headers.append((b"vary", b"OpenStack-API-Version"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_version)
