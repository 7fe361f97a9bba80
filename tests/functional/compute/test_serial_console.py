"""Serial console URLs and the websocket bridge, with the real agent on the FakeDriver's fake shell."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_servers import action, boot, wait_for

world, host, qcow2 = servers.world, servers.host, servers.qcow2
SERIAL = {"remote_console": {"protocol": "serial", "type": "serial"}}


def console_url(world: dict[str, Any], sid: str, version: str = "2.6") -> str:
    r = world["alice"].at(version).post(f"/servers/{sid}/remote-consoles", SERIAL)
    assert r.status_code == 200, r.text
    body = r.json()["remote_console"]
    assert set(body) == {"protocol", "type", "url"} and body["protocol"] == body["type"] == "serial"
    return str(body["url"])


def ws_path(url: str) -> str:
    parts = urlsplit(url)
    assert parts.scheme == "ws" and parts.path == "/compute/console/serial"
    return f"{parts.path}?{parts.query}"


def test_the_websocket_carries_bytes_both_ways_and_its_token_works_once(world: dict[str, Any]) -> None:
    sid = boot(world)["id"]
    path = ws_path(console_url(world, sid))
    http = world["api"].http
    with http.websocket_connect(path, subprotocols=["binary", "base64"]) as ws:
        assert ws.accepted_subprotocol == "binary"
        ws.send_bytes(b"uname -a\n")
        assert ws.receive_bytes() == b"fake-serial: uname -a\r\n"
        ws.send_text("echo hi\n")
        assert ws.receive_bytes() == b"fake-serial: echo hi\r\n"
        ws.send_bytes(b"ls\r")  # a terminal's Enter
        assert ws.receive_bytes() == b"fake-serial: ls\r\n"
        ws.send_bytes(b"\x04")  # Ctrl-D: the fake shell logs out, and the websocket closes
        with pytest.raises(WebSocketDisconnect):
            ws.receive_bytes()
    with pytest.raises(WebSocketDisconnect), http.websocket_connect(path):
        pass  # spent
    with http.websocket_connect(ws_path(console_url(world, sid))) as ws:  # a new URL, a new shell
        ws.send_bytes(b"again\n")
        assert ws.receive_bytes() == b"fake-serial: again\r\n"
    with pytest.raises(WebSocketDisconnect), http.websocket_connect("/compute/console/serial?token=forged"):
        pass


def test_the_legacy_action_answers_below_2_6_only_and_other_console_types_are_400(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    r = action(nova, sid, {"os-getSerialConsole": {"type": "serial"}})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"console"} and r.json()["console"]["type"] == "serial"
    ws_path(r.json()["console"]["url"])
    assert action(nova.at("2.6"), sid, {"os-getSerialConsole": {"type": "serial"}}).status_code == 400
    for legacy in ({"os-getVNCConsole": {"type": "novnc"}}, {"os-getSerialConsole": {"type": "novnc"}},
                   {"os-getSerialConsole": {}}):
        assert action(nova, sid, legacy).status_code == 400, legacy
    assert nova.post(f"/servers/{sid}/remote-consoles", SERIAL).status_code == 404  # 2.1: no such resource
    for bad in ({"remote_console": {"protocol": "vnc", "type": "novnc"}},
                {"remote_console": {"protocol": "serial", "type": "novnc"}},
                {"remote_console": {"protocol": "telnet", "type": "serial"}},
                {"remote_console": {"protocol": "serial"}}, {"console": {}}):
        r = nova.at("2.6").post(f"/servers/{sid}/remote-consoles", bad)
        assert r.status_code == 400 and "badRequest" in r.json(), bad


def test_a_console_needs_an_active_server_in_the_callers_project(world: dict[str, Any]) -> None:
    sid = boot(world)["id"]
    assert world["bob"].at("2.6").post(f"/servers/{sid}/remote-consoles", SERIAL).status_code == 404
    url = console_url(world, sid)
    action(world["alice"], sid, {"os-stop": None})
    wait_for(world["alice"], sid, "SHUTOFF")
    r = world["alice"].at("2.6").post(f"/servers/{sid}/remote-consoles", SERIAL)
    assert r.status_code == 409
    with pytest.raises(WebSocketDisconnect), world["api"].http.websocket_connect(ws_path(url)):
        pass  # the token was issued while it ran; the server is stopped now
