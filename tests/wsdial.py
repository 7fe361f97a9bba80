"""The agent's console relay dialled through Starlette's test client (no real socket in functional tests)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from yunstack.agent.http import AgentLinkError, Dialer
from yunstack.agent.link import ConsoleSocket


class TestConsole:
    __test__ = False  # not a test class

    def __init__(self, session: WebSocketTestSession) -> None:
        self._session = session

    def send(self, data: bytes) -> None:
        self._session.send_bytes(data)

    def recv(self) -> bytes | None:
        try:
            message = self._session.receive()
        except WebSocketDisconnect:
            return None
        if message["type"] == "websocket.close":
            return None
        return message.get("bytes") or (message.get("text") or "").encode()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._session.__exit__(None, None, None)


def test_client_dialer(client: TestClient) -> Dialer:
    def dial(path: str, headers: Mapping[str, str]) -> ConsoleSocket:
        session = client.websocket_connect(path, headers=dict(headers))
        try:
            session.__enter__()
        except WebSocketDisconnect as exc:
            raise AgentLinkError(why=f"console relay refused ({exc.code})") from exc
        return TestConsole(session)

    return dial


test_client_dialer.__test__ = False  # type: ignore[attr-defined]
