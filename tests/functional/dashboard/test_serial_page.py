"""A server's serial console page: the terminal's page, the one-time URL it asks for (CSRF, readers,
another project's server, a server that is not ACTIVE), and that URL carrying typed lines."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from tests.functional.compute.test_servers import body, wait_for
from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import D, assert_secure_headers

dash, world, host, qcow2 = base.dash, base.world, base.host, base.qcow2


def active(dash: dict[str, Any], who: str = "alice", name: str = "vm") -> str:
    sid = str(dash[who].post("/servers", body(dash, name)).json()["server"]["id"])
    wait_for(dash[who], sid, "ACTIVE")
    return sid


def test_a_member_opens_the_terminal_page_and_types_a_line_over_its_url(dash: dict[str, Any]) -> None:
    sid = active(dash, name="<b>vm</b>")
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/instances/{sid}").text
    assert f'href="{D}/project/instances/{sid}/serial"' in page
    r = alice.http.get(f"{D}/project/instances/{sid}/serial")
    assert r.status_code == 200, r.text
    assert_secure_headers(r)
    assert "&lt;b&gt;vm&lt;/b&gt;: serial console" in r.text and "<b>vm" not in r.text
    assert re.search(r'<script src="/dashboard/static/xterm-5\.5\.0\.min\.js\?v=\w+" defer>', r.text)
    assert re.search(r'<script src="/dashboard/static/serial\.js\?v=\w+" defer>', r.text)
    assert "<script>" not in r.text and " style=" not in r.text  # nothing inline: the CSP would block it
    assert 'hx-boost="true"' not in r.text  # leaving is a full load, which closes the websocket
    assert f'data-url="{D}/project/instances/{sid}/serial/url"' in r.text
    assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', r.text)
    assert len(assets) == 6  # the stylesheet, htmx, images.js (every page), xterm's stylesheet and script, serial.js
    assert sum(len(alice.http.get(a).content) for a in assets) < 400_000
    csrf = re.search(r'data-csrf="([^"]+)"', r.text)
    assert csrf and csrf.group(1) == alice.csrf()

    answer = alice.http.post(f"{D}/project/instances/{sid}/serial/url", headers={"X-CSRF-Token": csrf.group(1)})
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store", answer.text
    url = urlsplit(answer.json()["url"])
    assert url.scheme == "ws" and url.path == "/compute/console/serial"
    with alice.http.websocket_connect(f"{url.path}?{url.query}", subprotocols=["binary"]) as ws:
        ws.send_bytes(b"hello\r")  # Enter in a terminal is a carriage return
        assert ws.receive_bytes() == b"fake-serial: hello\r\n"


def test_the_url_needs_the_csrf_header(dash: dict[str, Any]) -> None:
    sid = active(dash)
    alice = dash["browser"]("alice")
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        r = alice.http.post(f"{D}/project/instances/{sid}/serial/url", headers=headers)
        assert r.status_code == 403 and "CSRF" in r.json()["error"] and "url" not in r.json()
    # As a form field it does not do either: only the page's script asks, and it sends the header.
    r = alice.http.post(f"{D}/project/instances/{sid}/serial/url", data={"csrf_token": alice.csrf()})
    assert r.status_code == 403


def test_another_projects_server_is_a_404(dash: dict[str, Any]) -> None:
    theirs = active(dash, "bob", "beta-vm")
    alice = dash["browser"]("alice")
    r = alice.http.get(f"{D}/project/instances/{theirs}/serial")
    assert r.status_code == 404 and "beta-vm" not in r.text
    r = alice.http.post(f"{D}/project/instances/{theirs}/serial/url", headers={"X-CSRF-Token": alice.csrf()})
    assert r.status_code == 404 and "could not be found" in r.json()["error"] and "url" not in r.json()


def test_a_reader_sees_no_terminal_and_is_refused_the_url(dash: dict[str, Any]) -> None:
    sid = active(dash)
    rita = dash["browser"]("rita")
    assert f"{sid}/serial" not in rita.http.get(f"{D}/project/instances/{sid}").text
    r = rita.http.get(f"{D}/project/instances/{sid}/serial")
    assert r.status_code == 200 and "reader" in r.text
    assert 'id="serial"' not in r.text and "xterm" not in r.text
    r = rita.http.post(f"{D}/project/instances/{sid}/serial/url", headers={"X-CSRF-Token": rita.csrf()})
    assert r.status_code == 403 and "reader" in r.json()["error"]
    # The API refuses a reader too (os_compute_api:os-remote-consoles is for members).
    r = dash["rita"].at("2.6").post(f"/servers/{sid}/remote-consoles",
                                    {"remote_console": {"protocol": "serial", "type": "serial"}})
    assert r.status_code == 403


def test_a_server_that_is_shut_off_says_why(dash: dict[str, Any]) -> None:
    sid = active(dash)
    assert dash["alice"].post(f"/servers/{sid}/action", {"os-stop": None}).status_code == 202
    wait_for(dash["alice"], sid, "SHUTOFF")
    alice = dash["browser"]("alice")
    r = alice.http.post(f"{D}/project/instances/{sid}/serial/url", headers={"X-CSRF-Token": alice.csrf()})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": f"Instance {sid} is not ready: its serial console is available while it is ACTIVE."}


def test_without_a_session_the_url_is_a_401_that_says_so(dash: dict[str, Any]) -> None:
    sid = active(dash)
    alice = dash["browser"]("alice")
    csrf = alice.csrf()
    assert alice.http.post(f"{D}/logout", data={"csrf_token": csrf}).status_code == 303
    r = alice.http.post(f"{D}/project/instances/{sid}/serial/url", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 401 and "Sign in again" in r.json()["error"]
