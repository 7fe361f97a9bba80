"""Compute microversions: negotiated once per request, echoed on every response.

Clients send ``OpenStack-API-Version: compute 2.x`` and/or ``X-OpenStack-Nova-API-Version: 2.x``;
no header means 2.1, ``latest`` means our maximum.  We advertise only versions whose shapes we
implement exactly for every endpoint we serve (see docs/reference/compute-api.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from yunstack.api.faults import fault_body
from yunstack.api.middleware import ASGIApp, Message, Receive, Scope, Send

MIN = (2, 1)
MAX = (2, 47)
_VERSION = re.compile(r"^(\d+)\.(\d+)$")
SCOPE_KEY = "yun.compute_version"


@dataclass(frozen=True, order=True)
class APIVersion:
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def at_least(self, text: str) -> bool:
        major, minor = (int(x) for x in text.split("."))
        return (self.major, self.minor) >= (major, minor)


def _requested(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"openstack-api-version")
    if raw is not None:
        for part in raw.decode("latin-1").split(","):
            words = part.strip().split()
            if len(words) == 2 and words[0].lower() == "compute":
                return words[1]
    legacy = headers.get(b"x-openstack-nova-api-version")
    return legacy.decode("latin-1").strip() if legacy is not None else None


def parse(requested: str | None) -> APIVersion | str:
    """The version to serve, or an error message (for a 400 or 406)."""
    if requested is None:
        return APIVersion(*MIN)
    if requested.lower() == "latest":
        return APIVersion(*MAX)
    m = _VERSION.match(requested)
    if not m:
        return f"Invalid API version request: {requested!r}."
    version = (int(m.group(1)), int(m.group(2)))
    if not MIN <= version <= MAX:
        return (f"Version {requested} is not supported by the API. Minimum is {MIN[0]}.{MIN[1]} "
                f"and maximum is {MAX[0]}.{MAX[1]}.")
    return APIVersion(*version)


class Microversions:
    """ASGI middleware for the /compute prefix."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/compute"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        requested = _requested(headers)
        version = parse(requested)
        if isinstance(version, str):
            status = 406 if _VERSION.match(requested or "") else 400
            await _reply(send, scope["path"], status, version, str(APIVersion(*MIN)))
            return
        scope[SCOPE_KEY] = version

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"openstack-api-version", f"compute {version}".encode()),
                         (b"x-openstack-nova-api-version", str(version).encode()),
                         (b"vary", b"OpenStack-API-Version"),
                         (b"vary", b"X-OpenStack-Nova-API-Version")]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, send_with_version)


async def _reply(send: Send, path: str, status: int, message: str, version: str) -> None:
    body = json.dumps(fault_body(path, status, message)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"openstack-api-version", f"compute {version}".encode()),
        (b"x-openstack-nova-api-version", version.encode())]})
    await send({"type": "http.response.body", "body": body})


def current(request: Request) -> APIVersion:
    version: APIVersion = request.scope.get(SCOPE_KEY, APIVersion(*MIN))
    return version


Version = Annotated[APIVersion, Depends(current)]
