"""Serial console relays: the user's websocket joined to the host agent's, through the control plane.

A user opens ``/compute/console/serial?token=...``.  The API opens a relay session, asks the
server's host over the agent protocol to connect the guest's serial port to it, and the host's
agent dials back: a websocket to ``/agent/v1/hosts/{host}/consoles/{session}`` carrying its host
credential.  The two websockets are paired here, and bytes flow user <-> control plane <-> agent
<-> the guest's serial socket.  Hosts never accept connections: a compute host behind NAT or a
firewall that only lets it reach the control plane still gets consoles, and the all-in-one cloud
takes the very same path.

Each websocket handler may run on its own event loop (Starlette's test client gives every
websocket one; uvicorn serves them all on one), so the two ends talk through ``Inbox``es: a queue
owned by the reading side's loop, fed thread-safely by the other side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import secrets
import threading
from dataclasses import dataclass, field

from starlette.websockets import WebSocket

from yunstack.errors import NotFound

PAIR_TIMEOUT = 10.0  # after the host said its end is connected, its websocket is here or lost


@dataclass
class Inbox:
    """What one end of a relay reads: bytes from the other end, ``None`` when it has gone."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)

    @classmethod
    def here(cls) -> Inbox:
        return cls(asyncio.get_running_loop())

    def put(self, data: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # that end's loop has closed: nobody reads any more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, data)


@dataclass(frozen=True)
class _Waiting:
    host: str
    inbox: Inbox
    agent: concurrent.futures.Future[Inbox]


class Relays:
    """Relay sessions waiting for their host's agent to connect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}

    def open(self, host: str, inbox: Inbox) -> tuple[str, concurrent.futures.Future[Inbox]]:
        """A new session only ``host`` may connect to, and the agent's inbox once it has."""
        session = secrets.token_urlsafe(24)
        waiting = _Waiting(host, inbox, concurrent.futures.Future())
        with self._lock:
            self._waiting[session] = waiting
        return session, waiting.agent

    def forget(self, session: str) -> None:
        with self._lock:
            self._waiting.pop(session, None)

    def pair(self, session: str, host: str, inbox: Inbox) -> Inbox:
        """The user's inbox for ``host``'s agent arriving with ``inbox``; each session pairs once.

        An unknown session, one already paired, or one opened for another host is NotFound: a
        host cannot attach to a console of a guest it does not run.
        """
        with self._lock:
            waiting = self._waiting.get(session)
            if waiting is None or waiting.host != host:
                raise NotFound("No console relay {session} is waiting for this host.", session=session)
            del self._waiting[session]
        waiting.agent.set_result(inbox)
        return waiting.inbox


async def pump(ws: WebSocket, mine: Inbox, theirs: Inbox) -> None:
    """Carry ``ws``'s messages to ``theirs`` and ``mine`` to ``ws`` until either end goes."""

    async def receive() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            theirs.put(message.get("bytes") or (message.get("text") or "").encode())

    async def send() -> None:
        while (data := await mine.queue.get()) is not None:
            await ws.send_bytes(data)

    tasks = [asyncio.create_task(receive()), asyncio.create_task(send())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        theirs.put(None)
        with contextlib.suppress(Exception):
            await ws.close()


# One registry per process, shared by every app instance in it (a test runs the user's app and the
# agent's client app side by side); like the host hub's long-polls, relays live in the API process.
RELAYS = Relays()
