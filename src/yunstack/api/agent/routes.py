"""``/agent/v1``: the agent protocol over HTTP, for agents in other processes and on other hosts.

- ``POST /agent/v1/hosts`` (admin token): add a host, get its one-time join token;
- ``POST /agent/v1/join``: spend a join token for the host's credential;
- ``POST /agent/v1/hosts/{host}/calls/{method}``: one ``ControlPlane`` method, arguments and result
  in JSON as ``agent.wire`` makes them from the protocol's annotations;
- ``WS .../consoles/{session}``: the host's end of a serial console relay (``api/console_relay.py``);
- ``GET .../images/{image_id}`` and ``PUT .../instances/{id}/snapshots/{image_id}``: the two methods
  that move files, as streams.

Every host call carries ``Authorization: Bearer <credential>``.  A credential acts only as its own
host (the path's and any ``host`` argument, else 403), and only on that host's instances and on
the images they use (else 404, as for anything that is not there).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from yunstack.agent.link import Wakeup
from yunstack.agent.wire import METHODS, PREFIX
from yunstack.api.console_relay import RELAYS, Inbox, pump
from yunstack.api.deps import Ctx, Svc
from yunstack.api.schemas import Strict
from yunstack.errors import BadRequest, Forbidden, NotFound, Unauthorized, YunError
from yunstack.wiring import Services

router = APIRouter(prefix=PREFIX, tags=["agent"])
MAX_WAIT = 30.0  # longest long-poll; proxies commonly cut idle requests at 60 s (and see hosts.longest_wait)


class HostName(Strict):
    name: str


class HostAdd(Strict):
    host: HostName


class Join(Strict):
    join_token: str


async def host_identity(request: HTTPConnection) -> str:
    """The host whose credential the request (or websocket) carries (401 without a valid one)."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("A host credential is required (Authorization: Bearer ...).")
    svc: Services = request.app.state.services
    # A credential checked lately is answered here; only a new one costs a worker thread (a query).
    host = svc.hostauth.remembered(credential.strip())
    if host is None:
        host = await run_in_threadpool(svc.hostauth.authenticate, credential.strip())
    return host


Me = Annotated[str, Depends(host_identity)]


def _as(me: str, host: str) -> None:
    if host != me:
        raise Forbidden("Host {me} may not act as host {host}.", me=me, host=host)


def _named(me: str, args: dict[str, Any]) -> list[str]:
    """The instances a call names, in any argument (``Outcome`` included), once any host it names
    is the caller itself (else 403)."""
    if "host" in args:
        _as(me, str(args["host"]))
    ids = [args["instance_id"]] if "instance_id" in args else []
    # Any message naming an instance (an ``Outcome`` is a pydantic model, an ``Answer`` a dataclass).
    ids += [v.instance_id for v in args.values()
            if (dataclasses.is_dataclass(v) or isinstance(v, BaseModel)) and hasattr(v, "instance_id")]
    return [str(i) for i in ids]


def _owns(svc: Services, me: str, ids: list[str]) -> None:
    """A host touches only its own instances: another's is 404, as one that is not there."""
    for instance_id in ids:
        if not svc.hostauth.owns_instance(me, instance_id):
            raise NotFound("Instance {id} could not be found.", id=instance_id)


@router.post("/hosts", status_code=201)
def add_host(body: HostAdd, ctx: Ctx, svc: Svc) -> JSONResponse:
    token = svc.hostauth.add_host(ctx, body.host.name)
    return JSONResponse({"host": {"name": token.host, "join_token": token.token,
                                  "expires_at": token.expires_at.isoformat()}}, status_code=201)


@router.post("/join")
def join(body: Join, svc: Svc) -> JSONResponse:
    joined = svc.hostauth.join(body.join_token)
    return JSONResponse({"host": joined.host, "credential": joined.credential})


@router.post("/hosts/{host}/calls/{method}")
async def call(host: str, method: str, request: Request, me: Me, svc: Svc) -> Response:
    _as(me, host)
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
            if found.work or found.calls or left <= 0 or svc.compute.hub.closing:
                return found
            try:
                await asyncio.wait_for(woken.wait(), left)
            except TimeoutError:
                return found  # nothing came: the agent's next wait, at once, looks again
            woken.clear()
            found = await run_in_threadpool(link.poll, host, held, owner)
    finally:
        unsubscribe()


@router.get("/hosts/{host}/images/{image_id}")
def fetch_image(host: str, image_id: str, me: Me, svc: Svc) -> StreamingResponse:
    _as(me, host)
    if not svc.hostauth.may_read_image(me, image_id):
        raise NotFound("Image {id} could not be found.", id=image_id)
    disk_format, chunks = svc.host_link.image_data(image_id)
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"X-Disk-Format": disk_format})


@router.put("/hosts/{host}/instances/{instance_id}/snapshots/{image_id}", status_code=204)
async def upload_snapshot(host: str, instance_id: str, image_id: str, request: Request, me: Me,
                          svc: Svc) -> Response:
    _as(me, host)
    if not await run_in_threadpool(svc.hostauth.may_upload, me, instance_id, image_id):
        raise NotFound("Image {id} could not be found.", id=image_id)
    spool = svc.config.server.state_path / "agent-uploads"
    spool.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=spool, suffix=".qcow2") as fh:
        async for chunk in request.stream():
            await run_in_threadpool(fh.write, chunk)
        await run_in_threadpool(fh.flush)
        await run_in_threadpool(svc.host_link.upload_snapshot, instance_id, image_id, Path(fh.name))
    return Response(status_code=204)


@router.websocket("/hosts/{host}/consoles/{session}")
async def console_relay(ws: WebSocket, host: str, session: str) -> None:
    """The host's end of a serial console: only the host the session was opened for may connect."""
    mine = Inbox.here()
    try:
        _as(await host_identity(ws), host)
        theirs = RELAYS.pair(session, host, mine)
    except YunError:
        await ws.close(code=1008)  # before accept: the agent sees HTTP 403
        return
    await ws.accept()
    await pump(ws, mine, theirs)
