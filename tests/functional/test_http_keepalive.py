"""The API's HTTP server keeps an idle client connection open longer than clients poll.

openstackclient's ``--wait`` polls every 5 s on one keep-alive connection; with uvicorn's default
idle timeout (5 s) the server closed it just as the next poll went out, and the client failed with
"Connection reset by peer".  This test idles a real connection past that and uses it again.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from yunstack.config import Config, ServerConfig
from yunstack.server import KEEP_ALIVE_SECONDS, http_config

REQUEST = b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n"


async def ok(scope: dict[str, object], receive: object, send: object) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(REQUEST)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    await asyncio.wait_for(reader.readexactly(2), 5)
    return head.split(b"\r\n", 1)[0]


async def test_an_idle_connection_outlives_a_five_second_poll_interval() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config(server=ServerConfig(host="127.0.0.1", port=port))
    settings = http_config(ok, config)
    settings.lifespan = "off"
    server = uvicorn.Server(settings)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the server did not start"
            await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _ask(reader, writer) == b"HTTP/1.1 200 OK"
        await asyncio.sleep(6)  # the idle time is the stimulus: one poll interval and a bit
        assert await _ask(reader, writer) == b"HTTP/1.1 200 OK", "the server closed an idle connection"
        writer.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 15)
    assert KEEP_ALIVE_SECONDS >= 60
