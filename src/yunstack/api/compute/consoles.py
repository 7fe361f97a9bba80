"""Serial console URLs (``remote-consoles`` from 2.6, ``os-getSerialConsole`` below) and the websocket.

The URL is a websocket on this same port, ``/compute/console/serial?token=...``; the token is
one-time and short-lived (``compute.consoles``).  The websocket carries the guest's serial bytes
both ways, in binary frames (text frames are accepted as UTF-8 input), and speaks the ``binary``
subprotocol when the client offers it, as Nova's serial proxy does.  The guest's host joins it by a
relay it dials back to the control plane (``api/console_relay.py``).  Only the serial console
exists: VNC, SPICE, RDP and MKS are 400 "unavailable", as Nova answers when they are disabled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from yunstack.api.compute.microversion import APIVersion, Version
from yunstack.api.console_relay import PAIR_TIMEOUT, RELAYS, Inbox, pump
from yunstack.api.deps import Ctx, Svc
from yunstack.errors import BadRequest, NotFound, YunError
from yunstack.wiring import Services

log = logging.getLogger(__name__)
router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
socket_router = APIRouter(tags=["compute"])
Json = dict[str, Any]
WS_PATH = "/compute/console/serial"
PROTOCOLS = ("vnc", "spice", "rdp", "serial", "mks")
TYPES = ("novnc", "xvpvnc", "rdp-html5", "spice-html5", "serial", "webmks")
LEGACY = {"os-getSerialConsole": "serial", "os-getVNCConsole": "vnc", "os-getSPICEConsole": "spice",
          "os-getRDPConsole": "rdp"}


def _url(svc: Services, token: str) -> str:
    base = svc.config.server.base_url
    scheme, _, rest = base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{WS_PATH}?token={token}"


def _unavailable(kind: str) -> BadRequest:
    return BadRequest("Unavailable console type {kind}.", kind=kind)


@router.post("/servers/{server_id}/remote-consoles")
def create_remote_console(server_id: str, body: Json, ctx: Ctx, svc: Svc, v: Version) -> JSONResponse:
    if not v.at_least("2.6"):
        raise NotFound("The resource could not be found.")
    console = body.get("remote_console") if set(body) == {"remote_console"} else None
    if not isinstance(console, dict) or set(console) != {"protocol", "type"}:
        raise BadRequest("Invalid input: a 'remote_console' with exactly 'protocol' and 'type' is required.")
    protocol, kind = console["protocol"], console["type"]
    if protocol not in PROTOCOLS or kind not in TYPES:
        raise BadRequest("Invalid input for field/attribute remote_console: unknown protocol or type.")
    if protocol != "serial" or kind != "serial":
        raise _unavailable(kind)
    url = _url(svc, svc.compute.serial_console_token(ctx, server_id))
    return JSONResponse({"remote_console": {"protocol": "serial", "type": "serial", "url": url}})


def console_action(svc: Services, ctx: Any, v: APIVersion, server_id: str, name: str, args: Any) -> JSONResponse:
    """The legacy ``os-get*Console`` actions (microversions 2.1 to 2.5)."""
    if v.at_least("2.6"):
        raise BadRequest("There is no such action: {name}", name=name)
    if not isinstance(args, dict) or set(args) != {"type"}:
        raise BadRequest("{name} needs exactly a console 'type'.", name=name)
    if LEGACY[name] != "serial":
        raise _unavailable(str(args["type"]))
    if args["type"] != "serial":
        raise BadRequest("Invalid console type {kind}: the serial console's type is 'serial'.", kind=args["type"])
    url = _url(svc, svc.compute.serial_console_token(ctx, server_id))
    return JSONResponse({"console": {"type": "serial", "url": url}})


@socket_router.websocket(WS_PATH)
async def serial_console(ws: WebSocket) -> None:
    svc: Services = ws.app.state.services
    relays = RELAYS
    mine = Inbox.here()
    session = ""
    try:
        host, instance_id = await run_in_threadpool(svc.compute.serial_console_target,
                                                    ws.query_params.get("token", ""))
        session, agent_end = relays.open(host, mine)
        await run_in_threadpool(svc.compute.relay_serial_console, host, instance_id, session)
        theirs = await asyncio.wait_for(asyncio.wrap_future(agent_end), PAIR_TIMEOUT)
    except (YunError, TimeoutError) as exc:
        relays.forget(session)
        log.warning("serial console not opened: %s", exc)
        await ws.close(code=1008)  # before accept: the client sees HTTP 403
        return
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="binary" if "binary" in offered else None)
    await pump(ws, mine, theirs)
