"""QMP sessions against a scripted QMP server on a unix socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from yunstack.compute.qemu import qmp
from yunstack.errors import DriverUnavailable

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": ["oob"]}}
EVENT = {"event": "RESET", "data": {"guest": False, "reason": "host-qmp-system-reset"},
         "timestamp": {"seconds": 1, "microseconds": 0}}


class ScriptedQmp:
    """Answers like QEMU; the first ``early_events`` sessions get an event before the handshake's answer."""

    def __init__(self, early_events: int) -> None:
        self.early_events = early_events
        self.sessions = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        early = self.sessions <= self.early_events
        writer.write(json.dumps(GREETING).encode() + b"\r\n")
        try:
            # Clients send bare JSON objects, not lines (QEMU parses a stream).
            async for msg in _messages(reader):
                if msg["execute"] == "qmp_capabilities" and early:
                    writer.write(json.dumps(EVENT).encode() + b"\r\n")
                answer: object = {"status": "running", "running": True} if msg["execute"] == "query-status" else {}
                reply = {"return": answer, **({"id": msg["id"]} if "id" in msg else {})}
                writer.write(json.dumps(reply).encode() + b"\r\n")
                await writer.drain()
        except ConnectionError:
            pass  # the client gave up on this session
        finally:
            writer.close()


async def _messages(reader: asyncio.StreamReader) -> AsyncIterator[dict[str, object]]:
    decoder = json.JSONDecoder()
    pending = ""
    while chunk := await reader.read(4096):
        pending += chunk.decode()
        while pending.strip():
            try:
                msg, end = decoder.raw_decode(pending.lstrip())
            except json.JSONDecodeError:
                break  # the rest of it is still on its way
            pending = pending.lstrip()[end:]
            yield msg


async def _serve(path: Path, script: ScriptedQmp) -> asyncio.Server:
    return await asyncio.start_unix_server(script.serve, str(path))


async def test_an_event_ahead_of_the_handshakes_answer_costs_one_more_handshake(tmp_path: Path) -> None:
    script = ScriptedQmp(early_events=1)
    server = await _serve(tmp_path / "q.sock", script)
    async with server:
        async with qmp.open_session(tmp_path / "q.sock", "guest") as session:
            assert (await session.execute("query-status"))["status"] == "running"
    assert script.sessions == 2


async def test_a_handshake_that_keeps_failing_is_unavailable_after_a_few_tries(tmp_path: Path) -> None:
    script = ScriptedQmp(early_events=100)
    server = await _serve(tmp_path / "q.sock", script)
    async with server:
        with pytest.raises(DriverUnavailable, match="Negotiation failed"):
            async with qmp.open_session(tmp_path / "q.sock", "guest"):
                pass
    assert script.sessions == qmp.HANDSHAKE_TRIES
