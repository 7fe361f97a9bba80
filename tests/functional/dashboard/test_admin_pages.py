"""The admin pages: hosts (enable, disable with a reason, drain), a host's servers, the migrations,
the memory ledger's charts and the balancer; and the same pages and forms as a member tries them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.functional.compute.test_servers import body, wait_for
from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import Browser, D, assert_secure_headers

dash, world, host, qcow2 = base.dash, base.world, base.host, base.qcow2


@pytest.fixture
def admin(dash: dict[str, Any]) -> Iterator[Browser]:
    b = Browser(dash["app"])
    r = b.sign_in("admin", "adminpw")
    assert r.status_code == 303, r.text
    try:
        yield b
    finally:
        b.http.close()


def services(dash: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = dash["admin"].get("/os-services").json()["services"]
    return found


def test_the_hosts_page_shows_each_host_with_its_state_and_use(dash: dict[str, Any], admin: Browser) -> None:
    name = dash["host"].driver.hostname
    sid = dash["alice"].post("/servers", body(dash, name="alpha-vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    page = admin.http.get(f"{D}/admin/hosts")
    assert page.status_code == 200, page.text
    assert_secure_headers(page)
    assert f'href="{D}/admin/hosts" aria-current="page">Admin</a>' in page.text  # the nav's one entry
    row = re.search(rf'<tr id="host-{re.escape(name)}">(.*?)</tr>', page.text, re.S)
    assert row, page.text
    cells = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(1)))
    assert " up " in cells and " enabled " in cells and " 1 / " in cells  # one vCPU of the flavor in use
    assert f"/admin/hosts/{name}/disable" in row.group(1) and f"/admin/hosts/{name}/drain" in row.group(1)
    servers = admin.http.get(f"{D}/admin/hosts/{name}").text
    assert "alpha-vm" in servers and f"/admin/servers/{sid}/live-migrate" in servers


def test_disabling_a_host_with_a_reason_and_enabling_it_again(dash: dict[str, Any], admin: Browser) -> None:
    name = dash["host"].driver.hostname
    r = admin.http.post(f"{D}/admin/hosts/{name}/disable", data={"csrf_token": admin.csrf(f"{D}/admin/hosts"),
                                                                 "reason": "new <RAM> sticks"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/admin/hosts"
    [svc] = services(dash)
    assert (svc["status"], svc["disabled_reason"]) == ("disabled", "new <RAM> sticks")
    page = admin.http.get(f"{D}/admin/hosts").text
    assert "new &lt;RAM&gt; sticks" in page and "new <RAM>" not in page
    assert f"/admin/hosts/{name}/enable" in page
    r = admin.http.post(f"{D}/admin/hosts/{name}/enable", data={"csrf_token": admin.csrf(f"{D}/admin/hosts")})
    assert r.status_code == 303
    assert services(dash)[0]["status"] == "enabled" and services(dash)[0]["disabled_reason"] is None
    assert f"Enabled {name}" in admin.http.get(f"{D}/admin/hosts").text


def test_an_unknown_host_is_a_404_page(admin: Browser) -> None:
    r = admin.http.get(f"{D}/admin/hosts/no-such-host")
    assert r.status_code == 404 and "There is no compute host named no-such-host." in r.text


def test_an_admin_form_without_its_csrf_token_changes_nothing(dash: dict[str, Any], admin: Browser) -> None:
    name = dash["host"].driver.hostname
    r = admin.http.post(f"{D}/admin/hosts/{name}/disable", data={"reason": "x"})
    assert r.status_code == 403
    assert services(dash)[0]["status"] == "enabled"


# -- the same pages and forms as a member tries them ----------------------------------------------

ADMIN_PAGES = ["/admin/hosts", "/admin/hosts/{host}", "/admin/migrations"]
ADMIN_FORMS = ["/admin/hosts/{host}/disable", "/admin/hosts/{host}/enable", "/admin/hosts/{host}/drain",
               "/admin/servers/{sid}/live-migrate", "/admin/servers/{sid}/evacuate"]


def test_a_member_sees_no_admin_entry_and_every_admin_page_and_form_refuses_her(dash: dict[str, Any]) -> None:
    name = dash["host"].driver.hostname
    sid = dash["alice"].post("/servers", body(dash, name="alpha-vm")).json()["server"]["id"]
    wait_for(dash["alice"], sid, "ACTIVE")
    alice = dash["browser"]("alice")
    token = alice.csrf()  # her own, valid CSRF token: the refusal is for who she is
    assert "/admin/" not in alice.http.get(f"{D}/project/instances").text
    for path in ADMIN_PAGES:
        r = alice.http.get(D + path.format(host=name))
        assert r.status_code == 403 and "This page is for administrators" in r.text, path
        assert name not in r.text.replace(f"/admin/hosts/{name}", "")  # nothing about the host leaks
    for path in ADMIN_FORMS:
        r = alice.http.post(D + path.format(host=name, sid=sid), data={"csrf_token": token, "reason": "mine",
                                                                      "host": name})
        assert r.status_code == 403, path
    [svc] = services(dash)
    assert (svc["status"], svc["disabled_reason"]) == ("enabled", None)
    server = wait_for(dash["admin"], sid, "ACTIVE")
    assert server["OS-EXT-SRV-ATTR:host"] == name
    assert dash["admin"].get("/os-migrations").json()["migrations"] == []
