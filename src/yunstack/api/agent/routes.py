"""``/agent/v1``: the agent protocol over HTTP, for agents in other processes and on other hosts.

- ``POST /agent/v1/hosts`` (admin token): add a host, get its one-time join token;
- ``POST /agent/v1/join``: spend a join token for the host's credential;
- ``POST /agent/v1/hosts/{host}/calls/{method}``: one ``ControlPlane`` method, arguments and result
  in JSON as ``agent.wire`` makes them from the protocol's annotations (``api/agent/calls.py``:
  answered ahead of this router, it is most of a large cloud's requests);
- ``WS .../consoles/{session}``: the host's end of a serial console relay (``api/console_relay.py``);
- ``GET .../images/{image_id}`` and ``PUT .../instances/{id}/snapshots/{image_id}``: the two methods
  that move files, as streams.

Every host call carries ``Authorization: Bearer <credential>``.  A credential acts only as its own
host (the path's and any ``host`` argument, else 403), and only on that host's instances and on
the images they use (else 404, as for anything that is not there).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from yunstack.agent.wire import PREFIX
from yunstack.api.agent.calls import as_host, identify
from yunstack.api.console_relay import RELAYS, Inbox, pump
from yunstack.api.deps import Ctx, Svc
from yunstack.api.schemas import Strict
from yunstack.errors import NotFound, YunError

router = APIRouter(prefix=PREFIX, tags=["agent"])


class HostName(Strict):
    name: str


class HostAdd(Strict):
    host: HostName


class Join(Strict):
    join_token: str


async def host_identity(request: HTTPConnection) -> str:
    """The host whose credential the request (or websocket) carries (401 without a valid one)."""
    return await identify(request.app.state.services, request)


Me = Annotated[str, Depends(host_identity)]


@router.post("/hosts", status_code=201)
def add_host(body: HostAdd, ctx: Ctx, svc: Svc) -> JSONResponse:
    token = svc.hostauth.add_host(ctx, body.host.name)
    return JSONResponse({"host": {"name": token.host, "join_token": token.token,
                                  "expires_at": token.expires_at.isoformat()}}, status_code=201)


@router.post("/join")
def join(body: Join, svc: Svc) -> JSONResponse:
    joined = svc.hostauth.join(body.join_token)
    return JSONResponse({"host": joined.host, "credential": joined.credential})


@router.get("/hosts/{host}/images/{image_id}")
def fetch_image(host: str, image_id: str, me: Me, svc: Svc) -> StreamingResponse:
    as_host(me, host)
    if not svc.hostauth.may_read_image(me, image_id):
        raise NotFound("Image {id} could not be found.", id=image_id)
    disk_format, chunks = svc.host_link.image_data(image_id)
    return StreamingResponse(chunks, media_type="application/octet-stream",
                             headers={"X-Disk-Format": disk_format})


@router.put("/hosts/{host}/instances/{instance_id}/snapshots/{image_id}", status_code=204)
async def upload_snapshot(host: str, instance_id: str, image_id: str, request: Request, me: Me,
                          svc: Svc) -> Response:
    as_host(me, host)
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
        as_host(await host_identity(ws), host)
        theirs = RELAYS.pair(session, host, mine)
    except YunError:
        await ws.close(code=1008)  # before accept: the agent sees HTTP 403
        return
    await ws.accept()
    await pump(ws, mine, theirs)
