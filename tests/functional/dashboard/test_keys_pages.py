"""The key pairs page (the private key is a one-time download, kept nowhere) and the security
groups page (groups and rules); scope, readers, escaping and the API's messages."""

from __future__ import annotations

import re
from typing import Any

from tests.functional.compute.test_flavors_keypairs_quotas import ED25519
from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import D, assert_secure_headers

dash, world, host, qcow2 = base.dash, base.world, base.host, base.qcow2
N = "/networking/v2.0"


def test_creating_a_key_pair_downloads_its_private_key_once_and_keeps_no_copy(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/keypairs")
    assert page.status_code == 200 and "No key pairs yet." in page.text
    assert_secure_headers(page)
    r = alice.http.post(f"{D}/project/keypairs", data={"csrf_token": alice.csrf(f"{D}/project/keypairs"),
                                                       "name": "laptop"})
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'attachment; filename="laptop.pem"'
    assert r.headers["cache-control"] == "no-store"
    assert "PRIVATE KEY-----" in r.text
    secret = r.text.strip().splitlines()[1]
    session = dash["app"].fastapi.state.dashboard.sessions.get(alice.http.cookies["yun_session"])
    assert secret not in repr(vars(session))
    page = alice.http.get(f"{D}/project/keypairs").text
    assert "Created the key pair laptop" in page and "laptop" in page and secret not in page
    [kp] = dash["alice"].get("/os-keypairs").json()["keypairs"]
    assert kp["keypair"]["name"] == "laptop" and "private_key" not in kp["keypair"]


def test_importing_and_deleting_a_key_pair_and_the_apis_message(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    r = alice.http.post(f"{D}/project/keypairs/import", data={"csrf_token": alice.csrf(), "name": "kp 1",
                                                              "public_key": ED25519})
    assert r.status_code == 303
    page = alice.http.get(f"{D}/project/keypairs").text
    assert "Imported the key pair kp 1 (" in page and f"{D}/project/keypairs/kp%201/delete" in page
    r = alice.http.post(f"{D}/project/keypairs/import", data={"csrf_token": alice.csrf(), "name": "kp2",
                                                              "public_key": "not a key"})
    assert r.status_code == 303, r.text
    page = alice.http.get(f"{D}/project/keypairs").text
    assert re.search(r'<p class="error" role="status">[^<]+</p>', page), re.findall(r"<p class=.*", page)
    r = alice.http.post(f"{D}/project/keypairs/kp%201/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    assert dash["alice"].get("/os-keypairs").json()["keypairs"] == []
    r = alice.http.post(f"{D}/project/keypairs/nope/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 404


def test_a_reader_sees_no_key_forms_and_is_refused(dash: dict[str, Any]) -> None:
    rita = dash["browser"]("rita")
    page = rita.http.get(f"{D}/project/keypairs").text
    assert 'id="create-keypair"' not in page
    r = rita.http.post(f"{D}/project/keypairs", data={"csrf_token": rita.csrf(), "name": "x"})
    assert r.status_code == 403 and "PRIVATE KEY" not in r.text
    alice = dash["browser"]("alice")
    assert alice.http.post(f"{D}/project/keypairs", data={"name": "no-csrf"}).status_code == 403


def test_security_groups_and_their_rules(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/security-groups")
    assert page.status_code == 200 and "default" in page.text
    r = alice.http.post(f"{D}/project/security-groups", data={"csrf_token": alice.csrf(), "name": "<b>web</b>",
                                                              "description": "http"})
    assert r.status_code == 303
    page = alice.http.get(f"{D}/project/security-groups").text
    assert "&lt;b&gt;web&lt;/b&gt;" in page and "<b>web</b>" not in page
    h = {"X-Auth-Token": dash["alice"].token}
    [group] = [g for g in dash["api"].http.get(f"{N}/security-groups", headers=h).json()["security_groups"]
               if g["name"] == "<b>web</b>"]
    r = alice.http.post(f"{D}/project/security-groups/{group['id']}/rules", data={
        "csrf_token": alice.csrf(), "direction": "ingress", "protocol": "tcp", "port_min": "80", "port_max": "",
        "remote_ip_prefix": "0.0.0.0/0"})
    assert r.status_code == 303
    rules = dash["api"].http.get(f"{N}/security-group-rules", params={"security_group_id": group["id"]},
                                 headers=h).json()["security_group_rules"]
    [rule] = [x for x in rules if x["protocol"] == "tcp"]
    assert rule["port_range_min"] == rule["port_range_max"] == 80 and rule["remote_ip_prefix"] == "0.0.0.0/0"
    page = alice.http.get(f"{D}/project/security-groups").text
    assert "Added the rule." in page and "<td>80</td>" in page
    r = alice.http.post(f"{D}/project/security-group-rules/{rule['id']}/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303 and "Removed the rule." in alice.http.get(f"{D}/project/security-groups").text
    r = alice.http.post(f"{D}/project/security-groups/{group['id']}/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    assert "&lt;b&gt;web&lt;/b&gt;" not in alice.http.get(f"{D}/project/security-groups").text
    theirs = dash["api"].http.post(f"{N}/security-groups", json={"security_group": {"name": "beta-sg"}},
                                   headers={"X-Auth-Token": dash["bob"].token}).json()["security_group"]["id"]
    assert "beta-sg" not in alice.http.get(f"{D}/project/security-groups").text
    r = alice.http.post(f"{D}/project/security-groups/{theirs}/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 404
    rita = dash["browser"]("rita")
    assert 'id="create-group"' not in rita.http.get(f"{D}/project/security-groups").text
    r = rita.http.post(f"{D}/project/security-groups", data={"csrf_token": rita.csrf(), "name": "x"})
    assert r.status_code == 403
