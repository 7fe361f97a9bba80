"""``POST /agent/v1/hosts/{host}/calls/{method}``: the agent protocol's calls, answered ahead of the
API's router.

Every agent calls this all the time (a long-poll held at all times, its reports), so a thousand
hosts make it most of the requests a cloud serves.  Through FastAPI's router, dependency solving
and exception middleware a call cost about half again as much CPU as its own work
(``bench/README.md``, the 1,000-host run); this pure ASGI component keeps the same rules at a
fraction of that (inside the body-size limit; a body nested too deep is refused by pydantic's
JSON parser, a 400):

- the credential (``Authorization: Bearer``) names the host, else 401;
- a host acts only as itself (the path's host and any ``host`` argument), else 403;
- and only on its own instances (any instance an argument names), else 404, as for one that is not there;
- faults in the one format (``api.faults.render``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from yunstack.agent.link import Wakeup
from yunstack.agent.wire import METHODS, PREFIX
from yunstack.api import faults
from yunstack.api.middleware import ASGIApp, Receive, Scope, Send
from yunstack.errors import BadRequest, Forbidden, NotFound, Unauthorized
from yunstack.wiring import Services

MAX_WAIT = 30.0  # longest long-poll; proxies commonly cut idle requests at 60 s (and see hosts.longest_wait)
_CALL = re.compile(re.escape(PREFIX) + r"/hosts/([^/]+)/calls/([^/]+)")


async def identify(svc: Services, request: HTTPConnection) -> str:
    """The host whose credential the request (or websocket) carries (401 without a valid one)."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("A host credential is required (Authorization: Bearer ...).")
    # A credential checked lately is answered here; only a new one costs a worker thread (a query).
    host = svc.hostauth.remembered(credential.strip())
    if host is None:
        host = await run_in_threadpool(svc.hostauth.authenticate, credential.strip())
    return host


def as_host(me: str, host: str) -> None:
    if host != me:
        raise Forbidden("Host {me} may not act as host {host}.", me=me, host=host)


class AgentCalls:
    """ASGI: the agent's calls; every other request goes on to ``app``."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _CALL.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if found is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self._answer(request, found.group(1), found.group(2))
        except Exception as exc:  # rendered as every other route's fault is
            response = faults.render(request, exc)
        await response(scope, receive, send)

    async def _answer(self, request: Request, host: str, method: str) -> Response:
        svc = self.services
        me = await identify(svc, request)
        as_host(me, host)
        spec = METHODS.get(method)
        if spec is None:
            raise NotFound("The agent protocol has no method {m}.", m=method)
        try:
            args = spec.decode_args(await request.body())
        except ValidationError as exc:
            raise BadRequest("Invalid arguments for {m}: {why}", m=method, why=str(exc)[:500]) from None
        named = _named(me, args)
        if named:  # (most calls name none: no thread hop, no query)
            await run_in_threadpool(_owns, svc, me, named)
        if method == "wait":
            result: object = await _wait(svc, me, args["busy"], float(args["timeout"]), str(args["owner"]))
        else:
            result = await run_in_threadpool(getattr(svc.host_link, method), **args)
        return Response(spec.encode_result(result), media_type="application/json")


def _named(me: str, args: dict[str, Any]) -> list[tuple[str, str]]:
    """The (resource type, id) of the instances and volumes a call names, in any argument (``Outcome``
    included), once any host it names is the caller itself (else 403)."""
    if "host" in args:
        as_host(me, str(args["host"]))
    ids = [("server", str(args["instance_id"]))] if "instance_id" in args else []
    # Any message naming an instance (an ``Outcome`` is a pydantic model, an ``Answer`` a dataclass);
    # an ``Outcome`` of a volume step names the volume.
    ids += [(str(getattr(v, "resource_type", "server")), str(v.instance_id)) for v in args.values()
            if (dataclasses.is_dataclass(v) or isinstance(v, BaseModel)) and hasattr(v, "instance_id")]
    return ids


def _owns(svc: Services, me: str, named: list[tuple[str, str]]) -> None:
    """A host touches only its own instances and volumes: another's is 404, as one that is not there."""
    for kind, resource_id in named:
        if kind == "volume":
            if not svc.hostauth.owns_volume(me, resource_id):
                raise NotFound("Volume {id} could not be found.", id=resource_id)
        elif not svc.hostauth.owns_instance(me, resource_id):
            raise NotFound("Instance {id} could not be found.", id=resource_id)


async def _wait(svc: Services, host: str, busy: list[str], timeout: float, owner: str) -> Wakeup:
    """The long-poll, on the event loop: no thread waits, and queueing work wakes it at once."""
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # this request's loop is gone
            loop.call_soon_threadsafe(woken.set)

    unsubscribe = svc.compute.hub.subscribe(host, wake)  # before looking: a wake in between is kept
    deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT, svc.hosts.longest_wait)
    held = frozenset(busy)
    link = svc.host_link
    try:
        found: Wakeup = await run_in_threadpool(link.first_look, host, held, owner)
        while True:
            left = deadline - time.monotonic()
            if found.work or found.calls or found.network or left <= 0 or svc.compute.hub.closing:
                return found
            try:
                await asyncio.wait_for(woken.wait(), left)
            except TimeoutError:
                return found  # nothing came: the agent's next wait, at once, looks again
            woken.clear()
            found = await run_in_threadpool(link.poll, host, held, owner)
    finally:
        unsubscribe()
