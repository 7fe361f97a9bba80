"""The dashboard through a browser's eyes (Starlette's TestClient), against the whole app on both DBs.

The dashboard reaches the API over HTTP through ``yunstack.client``; here its transport is a second
in-process client of the same app, so no socket is needed.  Servers run on the fake driver with the
real host agent (tests/functional/compute/test_servers.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_servers import body, wait_for
from tests.functional.identity.test_identity_api import make_member
from yunstack.api.app import create_app
from yunstack.wiring import Services

BASE = "http://127.0.0.1:8080"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
D = "/dashboard"
world, host, qcow2 = servers.world, servers.host, servers.qcow2


def bridge(client: TestClient) -> httpx.MockTransport:
    """An httpx transport that hands each request to ``client`` (the app in process)."""

    def handle(request: httpx.Request) -> httpx.Response:
        r = client.request(request.method, str(request.url), headers=dict(request.headers), content=request.read())
        headers = [(k, v) for k, v in r.headers.multi_items() if k.lower() not in ("content-encoding",
                                                                                   "content-length")]
        return httpx.Response(r.status_code, headers=headers, content=r.content)

    return httpx.MockTransport(handle)


class Browser:
    """One browser: its own cookies, HTML accepted, redirects shown (not followed)."""

    def __init__(self, app: Any) -> None:
        self.http = TestClient(app, base_url=BASE, follow_redirects=False, raise_server_exceptions=False,
                               headers={"Accept": BROWSER})

    def csrf(self, path: str = f"{D}/project/instances") -> str:
        r = self.http.get(path)
        assert r.status_code == 200, r.text
        found = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
        assert found, r.text
        return found.group(1)

    def sign_in(self, user: str, password: str, domain: str = "Default") -> httpx.Response:
        token = self.csrf(f"{D}/login")
        return self.http.post(f"{D}/login", data={"csrf_token": token, "domain": domain, "user": user,
                                                  "password": password})

    def signed_in(self, user: str) -> Browser:
        r = self.sign_in(user, f"{user}-pw")
        assert r.status_code == 303 and r.headers["location"] == f"{D}/project/instances", r.text
        return self


@pytest.fixture
def app(services: Services) -> Iterator[Any]:
    app = create_app(services)
    inner = TestClient(app, base_url=BASE)
    app.fastapi.state.dashboard.transport = bridge(inner)
    try:
        yield app
    finally:
        inner.close()


@pytest.fixture
def browser(app: Any) -> Iterator[Browser]:
    b = Browser(app)
    try:
        yield b
    finally:
        b.http.close()


@pytest.fixture
def people(api: Any) -> dict[str, Any]:
    admin = api.admin()
    return {"alice": make_member(api, admin, "alpha", "alice"), "bob": make_member(api, admin, "beta", "bob")}


def assert_secure_headers(r: httpx.Response) -> None:
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"]


# -- / for browsers and for API clients ---------------------------------------------------------

@pytest.mark.parametrize("accept", [None, "", "*/*", "application/json", "application/json, text/html"])
def test_api_clients_still_get_the_version_document_at_the_root(app: Any, accept: str | None) -> None:
    with TestClient(app, base_url=BASE) as client:  # httpx's default Accept is */*
        if accept is not None:
            client.headers["Accept"] = accept
        r = client.get("/")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "yunstack" and "compute" in r.json()["apis"]
    assert "Accept" in r.headers["vary"]


def test_a_browser_at_the_root_goes_to_the_dashboard_and_then_to_sign_in(browser: Browser) -> None:
    r = browser.http.get("/")
    assert r.status_code == 303 and r.headers["location"] == f"{D}/"
    assert_secure_headers(r)
    r = browser.http.get(f"{D}/")
    assert r.status_code == 303 and r.headers["location"] == f"{D}/login"


# -- sign-in, CSRF, sign-out ----------------------------------------------------------------------

def test_signing_in_opens_the_instances_page_with_a_safe_session_cookie(browser: Browser, people: Any) -> None:
    r = browser.sign_in("alice", "alice-pw")
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert "yun_session=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # plain HTTP here; over TLS it is Secure
    token = re.search(r"yun_session=([^;]+)", cookie)
    assert token and "gAAAA" not in token.group(1)  # a random id, not the (Fernet) Keystone token
    r = browser.http.get(f"{D}/project/instances")
    assert r.status_code == 200
    assert "alice" in r.text and "alpha" in r.text and "No servers in this project yet." in r.text
    assert_secure_headers(r)
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("over", ["an https request", "an https public URL"])
def test_behind_tls_both_cookies_are_secure(app: Any, people: Any, over: str) -> None:
    """Over TLS (the request's scheme, or the cloud's public URL when a TLS proxy sits in front and
    the plain hop behind it is all this process sees), no cookie may leave in clear text."""
    browser = Browser(app)
    if over == "an https request":
        browser.http.base_url = "https://cloud.example.org"  # type: ignore[assignment]
    else:
        app.fastapi.state.dashboard.api_url = "https://cloud.example.org"
    r = browser.http.get(f"{D}/login")
    assert "Secure" in r.headers["set-cookie"], r.headers["set-cookie"]
    token = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert token
    # A Secure cookie is not sent back over this test client's plain transport: send it by hand.
    signin = re.search(r"yun_sign_in=([^;]+)", r.headers["set-cookie"])
    assert signin
    browser.http.cookies.clear()
    r = browser.http.post(f"{D}/login", data={"csrf_token": token.group(1), "domain": "Default", "user": "alice",
                                               "password": "alice-pw"},
                          headers={"Cookie": f"yun_sign_in={signin.group(1)}"})
    assert r.status_code == 303, r.text
    assert "yun_session=" in r.headers["set-cookie"] and "Secure" in r.headers["set-cookie"]


def test_a_wrong_password_shows_the_apis_message_and_no_session(browser: Browser, people: Any) -> None:
    r = browser.sign_in("alice", "not-her-password")
    assert r.status_code == 401
    assert "yun_session" not in r.headers.get("set-cookie", "")
    assert 'class="error"' in r.text and "Sign in" in r.text
    assert_secure_headers(r)
    assert browser.http.get(f"{D}/project/instances").headers["location"] == f"{D}/login"


def test_sign_in_without_its_csrf_token_is_refused(browser: Browser, people: Any) -> None:
    browser.csrf(f"{D}/login")
    r = browser.http.post(f"{D}/login", data={"user": "alice", "password": "alice-pw", "domain": "Default"})
    assert r.status_code == 403
    assert "yun_session" not in r.headers.get("set-cookie", "")


@pytest.mark.parametrize("token", [None, "wrong"])
def test_a_form_post_without_the_right_csrf_token_is_refused(browser: Browser, people: Any, token: str | None) -> None:
    browser.signed_in("alice")
    data = {"csrf_token": token} if token else {}
    r = browser.http.post(f"{D}/logout", data=data)
    assert r.status_code == 403 and "CSRF" in r.text
    assert_secure_headers(r)
    assert browser.http.get(f"{D}/project/instances").status_code == 200  # still signed in


def test_htmx_sends_the_csrf_token_as_a_header(browser: Browser, people: Any) -> None:
    token = browser.signed_in("alice").csrf()
    r = browser.http.post(f"{D}/logout", headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert r.status_code == 200 and r.headers["hx-redirect"] == f"{D}/login?m=signed_out"


def test_after_sign_out_the_cookie_opens_nothing_and_the_token_is_revoked(
        app: Any, browser: Browser, people: Any) -> None:
    token = browser.signed_in("alice").csrf()
    cookie = browser.http.cookies["yun_session"]
    session = app.fastapi.state.dashboard.sessions.get(cookie)
    keystone_token = session.client.token
    r = browser.http.post(f"{D}/logout", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/login?m=signed_out"
    thief = Browser(app)
    thief.http.cookies.set("yun_session", cookie, path=f"{D}/")
    r = thief.http.get(f"{D}/project/instances")
    assert r.status_code == 303 and r.headers["location"] == f"{D}/login?m=expired"
    r = thief.http.get(f"{BASE}/identity/v3/auth/tokens", headers={"X-Auth-Token": keystone_token,
                                                                     "X-Subject-Token": keystone_token})
    assert r.status_code == 401


def test_signing_in_again_ends_the_browsers_previous_session(app: Any, browser: Browser, people: Any) -> None:
    first = browser.signed_in("alice").http.cookies["yun_session"]
    browser.signed_in("bob")
    assert browser.http.cookies["yun_session"] != first
    assert app.fastapi.state.dashboard.sessions.get(first) is None
    assert len(app.fastapi.state.dashboard.sessions) == 1
    assert "beta" in browser.http.get(f"{D}/project/instances").text


def test_an_expired_token_sends_the_browser_to_sign_in_with_a_message(app: Any, browser: Browser,
                                                                      people: Any) -> None:
    browser.signed_in("alice")
    session = app.fastapi.state.dashboard.sessions.get(browser.http.cookies["yun_session"])
    session.client.revoke()  # what Keystone answers for an expired token is the same 401
    r = browser.http.get(f"{D}/project/instances")
    assert r.status_code == 303 and r.headers["location"] == f"{D}/login?m=expired"
    r = browser.http.get(r.headers["location"])
    assert "Your session has ended" in r.text
    r = browser.http.get(f"{D}/project/instances/table", headers={"HX-Request": "true"})
    assert r.headers["hx-redirect"] == f"{D}/login"  # the session is gone now


def test_a_failure_in_the_dashboard_shows_no_traceback(browser: Browser, people: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    browser.signed_in("alice")

    def broken(client: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("yunstack.dashboard.views.list_servers", broken)
    r = browser.http.get(f"{D}/project/instances")
    assert r.status_code == 500
    assert "secret internals" not in r.text and "Traceback" not in r.text
    assert "the error is in the server&#39;s log" in r.text
    assert_secure_headers(r)


def test_static_files_are_cached_and_small(browser: Browser) -> None:
    page = browser.http.get(f"{D}/login")
    total = len(page.content)
    for url in re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page.text):
        r = browser.http.get(url)
        assert r.status_code == 200
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert_secure_headers(r)
        total += len(r.content)
    assert total < 150_000


def test_static_files_go_gzipped_to_browsers_and_pages_and_the_api_do_not(browser: Browser) -> None:
    page = browser.http.get(f"{D}/login", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in page.headers  # pages carry the CSRF token: never compressed (BREACH)
    url = re.findall(r'src="(/dashboard/static/htmx[^"]+)"', page.text)[0]
    zipped = browser.http.get(url, headers={"Accept-Encoding": "gzip, deflate, br"})
    plain = browser.http.get(url, headers={"Accept-Encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert zipped.content == plain.content  # the client decoded it: the same file
    assert int(zipped.headers["content-length"]) < len(plain.content) / 2
    assert zipped.headers["vary"] == plain.headers["vary"] == "Accept-Encoding"
    assert zipped.headers["etag"] != plain.headers["etag"]  # two representations, two tags
    for etag in (zipped.headers["etag"], plain.headers["etag"]):
        r = browser.http.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
        assert r.status_code == 304 and not r.content and r.headers["vary"] == "Accept-Encoding"
    api = browser.http.get("/identity/v3", headers={"Accept": "application/json", "Accept-Encoding": "gzip"})
    assert api.status_code == 200 and "content-encoding" not in api.headers


# -- the instances view ---------------------------------------------------------------------------

@pytest.fixture
def dash(world: dict[str, Any], services: Services) -> Iterator[dict[str, Any]]:
    app = create_app(services)
    inner = TestClient(app, base_url=BASE)
    app.fastapi.state.dashboard.transport = bridge(inner)
    browsers: list[Browser] = []

    def browser_for(user: str) -> Browser:
        browsers.append(Browser(app).signed_in(user))
        return browsers[-1]

    try:
        yield {**world, "browser": browser_for, "app": app}
    finally:
        for b in browsers:
            b.http.close()
        inner.close()


def test_a_server_named_like_a_script_is_shown_as_text(dash: dict[str, Any]) -> None:
    name = "<script>alert(1)</script>"
    r = dash["alice"].post("/servers", body(dash, name=name))
    assert r.status_code == 202, r.text
    page = dash["browser"]("alice").http.get(f"{D}/project/instances")
    assert page.status_code == 200
    assert name not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_a_member_sees_only_their_projects_servers_and_can_stop_one(dash: dict[str, Any]) -> None:
    mine = dash["alice"].post("/servers", body(dash, name="alpha-vm")).json()["server"]["id"]
    dash["bob"].post("/servers", body(dash, name="beta-vm"))
    wait_for(dash["alice"], mine, "ACTIVE")
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/instances").text
    assert "alpha-vm" in page and "beta-vm" not in page
    assert f"/project/instances/{mine}/stop" in page and "ACTIVE" in page
    r = alice.http.post(f"{D}/project/instances/{mine}/stop", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    wait_for(dash["alice"], mine, "SHUTOFF")
    table = alice.http.get(f"{D}/project/instances/table", headers={"HX-Request": "true"}).text
    assert "SHUTOFF" in table and f"/project/instances/{mine}/start" in table
    assert "<html" not in table  # a fragment


def test_the_apis_error_is_shown_as_its_message(dash: dict[str, Any]) -> None:
    sid = dash["alice"].post("/servers", body(dash, name="vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    alice = dash["browser"]("alice")
    r = alice.http.post(f"{D}/project/instances/{sid}/start", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    page = alice.http.get(f"{D}/project/instances").text
    shown = re.search(r"<p class=\"error\" role=\"status\">([^<]+)</p>", page)
    assert shown and shown.group(1).startswith("Cannot &#39;start&#39;"), page  # the API's message, escaped
    assert "Traceback" not in page


def test_a_reader_sees_no_buttons_and_is_refused_when_posting_anyway(dash: dict[str, Any]) -> None:
    sid = dash["alice"].post("/servers", body(dash, name="vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    rita = dash["browser"]("rita")
    page = rita.http.get(f"{D}/project/instances").text
    assert "vm" in page and "/stop" not in page and "/delete" not in page and "Actions" not in page
    r = rita.http.post(f"{D}/project/instances/{sid}/delete", data={"csrf_token": rita.csrf()})
    assert r.status_code == 403 and "reader" in r.text
    assert_secure_headers(r)
    assert dash["alice"].get(f"/servers/{sid}").json()["server"]["status"] == "ACTIVE"


def test_switching_projects_shows_the_other_projects_servers(dash: dict[str, Any], api: Any) -> None:
    h = api.headers(api.admin())
    role = api.http.get("/identity/v3/roles", params={"name": "member"}, headers=h).json()["roles"][0]["id"]
    assert api.http.put(f"/identity/v3/projects/{dash['b']['project_id']}/users/{dash['a']['user_id']}"
                        f"/roles/{role}", headers=h).status_code == 204
    dash["bob"].post("/servers", body(dash, name="beta-vm"))
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/instances").text
    assert "alpha" in page and "beta-vm" not in page
    beta = re.search(r'<option value="([^"]+)"[^>]*>beta</option>', page)
    assert beta, page
    r = alice.http.post(f"{D}/project", data={"csrf_token": alice.csrf(), "project_id": beta.group(1)})
    assert r.status_code == 303
    page = alice.http.get(f"{D}/project/instances").text
    assert "beta-vm" in page
    r = alice.http.post(f"{D}/project", data={"csrf_token": alice.csrf(), "project_id": "not-hers"})
    assert r.status_code == 403
