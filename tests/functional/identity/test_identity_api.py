"""Keystone v3 through the whole in-process API, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import Api

ID = "/identity/v3"


def make_member(api: Api, admin: str, project: str, user: str, role: str = "member") -> dict[str, str]:
    h = api.headers(admin)
    p = api.http.get(f"{ID}/projects", params={"name": project}, headers=h).json()["projects"]
    if p:
        pid = p[0]["id"]
    else:
        r = api.http.post(f"{ID}/projects", json={"project": {"name": project}}, headers=h)
        assert r.status_code == 201, r.text
        pid = r.json()["project"]["id"]
    r = api.http.post(f"{ID}/users", json={"user": {"name": user, "password": f"{user}-pw",
                                                     "default_project_id": pid}}, headers=h)
    assert r.status_code == 201, r.text
    uid = r.json()["user"]["id"]
    rid = api.http.get(f"{ID}/roles", params={"name": role}, headers=h).json()["roles"][0]["id"]
    assert api.http.put(f"{ID}/projects/{pid}/users/{uid}/roles/{rid}", headers=h).status_code == 204
    return {"project_id": pid, "user_id": uid, "role_id": rid}


@pytest.fixture
def world(api: Api) -> dict[str, Any]:
    admin = api.admin()
    a = make_member(api, admin, "alpha", "alice")
    b = make_member(api, admin, "beta", "bob")
    r = make_member(api, admin, "alpha", "rita", role="reader")
    return {"admin": admin, "a": a, "b": b, "r": r,
            "alice": api.login("alice", "alice-pw", "alpha"),
            "bob": api.login("bob", "bob-pw", "beta"),
            "rita": api.login("rita", "rita-pw", "alpha")}


def test_version_documents_are_shaped_like_keystone(api: Api) -> None:
    r = api.http.get("/identity")
    assert r.status_code == 300
    values = r.json()["versions"]["values"]
    assert values[0]["id"] == "v3.14" and values[0]["status"] == "stable"
    assert values[0]["links"][0]["href"] == "http://127.0.0.1:8080/identity/v3/"
    v = api.http.get(f"{ID}").json()["version"]
    assert v["id"] == "v3.14"
    assert r.headers["x-openstack-request-id"].startswith("req-")


def test_password_token_carries_user_project_roles_and_catalog(api: Api) -> None:
    r = api.http.post(f"{ID}/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"name": "Default"}, "password": "adminpw"}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
    assert r.status_code == 201
    assert r.headers["x-subject-token"]
    tok = r.json()["token"]
    assert tok["methods"] == ["password"]
    assert tok["user"]["name"] == "admin" and tok["user"]["domain"] == {"id": "default", "name": "Default"}
    assert tok["project"]["name"] == "admin"
    assert {x["name"] for x in tok["roles"]} == {"admin"}
    assert tok["expires_at"].endswith("Z") and len(tok["audit_ids"][0]) == 22
    types = {c["type"] for c in tok["catalog"]}
    assert "identity" in types
    ep = tok["catalog"][0]["endpoints"]
    assert {e["interface"] for e in ep} == {"public", "internal", "admin"}


def test_unscoped_token_then_rescope_with_token_method(api: Api) -> None:
    r = api.http.post(f"{ID}/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": "adminpw"}}},
        "scope": "unscoped"}})
    assert r.status_code == 201
    assert "project" not in r.json()["token"] and "catalog" not in r.json()["token"]
    unscoped = r.headers["x-subject-token"]
    projects = api.http.get(f"{ID}/auth/projects", headers=api.headers(unscoped)).json()["projects"]
    assert [p["name"] for p in projects] == ["admin"]
    r = api.http.post(f"{ID}/auth/tokens", json={"auth": {
        "identity": {"methods": ["token"], "token": {"id": unscoped}},
        "scope": {"project": {"id": projects[0]["id"]}}}})
    assert r.status_code == 201
    tok = r.json()["token"]
    assert tok["project"]["id"] == projects[0]["id"]
    assert len(tok["audit_ids"]) == 2


def test_password_auth_by_user_id(api: Api) -> None:
    admin = api.admin()
    uid = api.http.get(f"{ID}/auth/tokens", headers={**api.headers(admin), "X-Subject-Token": admin}
                       ).json()["token"]["user"]["id"]
    r = api.http.post(f"{ID}/auth/tokens", json={"auth": {"identity": {"methods": ["password"],
                      "password": {"user": {"id": uid, "password": "adminpw"}}}}})
    assert r.status_code == 201
    # The default project scopes the token when no scope is given, as in Keystone.
    assert r.json()["token"]["project"]["name"] == "admin"


@pytest.mark.parametrize("user,password", [("admin", "wrong"), ("nobody", "adminpw")])
def test_wrong_password_or_user_is_401_without_saying_which(api: Api, user: str, password: str) -> None:
    r = api.http.post(f"{ID}/auth/tokens", json={"auth": {"identity": {"methods": ["password"],
                      "password": {"user": {"name": user, "domain": {"id": "default"},
                                            "password": password}}}}})
    assert r.status_code == 401
    assert r.json() == {"error": {"code": 401, "title": "Unauthorized",
                                  "message": "The request you have made requires authentication."}}
    assert r.headers["www-authenticate"].startswith("Keystone uri=")


def test_validate_head_and_revoke_token(api: Api) -> None:
    admin = api.admin()
    other = api.admin()
    h = {**api.headers(admin), "X-Subject-Token": other}
    r = api.http.get(f"{ID}/auth/tokens", headers=h)
    assert r.status_code == 200 and r.headers["x-subject-token"] == other
    assert api.http.head(f"{ID}/auth/tokens", headers=h).status_code == 200
    assert api.http.delete(f"{ID}/auth/tokens", headers=h).status_code == 204
    assert api.http.get(f"{ID}/auth/tokens", headers=h).status_code == 404
    assert api.http.get(f"{ID}/projects", headers=api.headers(other)).status_code == 401
    # Revoking one token leaves the caller's own token alone.
    assert api.http.get(f"{ID}/projects", headers=api.headers(admin)).status_code == 200


def test_expired_token_is_refused(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    auth = api.services.auth
    # Expiry is kept to whole seconds (floored), so a 1 s lifetime can end at once: give it 4 s and
    # wait for the moment the token itself names.
    monkeypatch.setattr(auth, "_config", replace(auth._config, token_expiration=4))
    token = api.admin()
    assert api.http.get(f"{ID}/projects", headers=api.headers(token)).status_code == 200
    shown = api.http.get(f"{ID}/auth/tokens", headers={**api.headers(token), "X-Subject-Token": token})
    expires = datetime.fromisoformat(shown.json()["token"]["expires_at"].replace("Z", "+00:00"))
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)
    r = api.http.get(f"{ID}/projects", headers=api.headers(token))
    assert r.status_code == 401


def test_catalog_and_auth_projects(api: Api) -> None:
    token = api.admin()
    cat = api.http.get(f"{ID}/auth/catalog", headers=api.headers(token)).json()["catalog"]
    assert cat[0]["endpoints"][0]["url"].startswith("http://127.0.0.1:8080/")


def test_member_sees_only_its_project_and_gets_403_on_admin_calls(api: Api, world: dict[str, Any]) -> None:
    alice = api.headers(world["alice"])
    names = [p["name"] for p in api.http.get(f"{ID}/auth/projects", headers=alice).json()["projects"]]
    assert names == ["alpha"]
    assert api.http.get(f"{ID}/projects/{world['a']['project_id']}", headers=alice).status_code == 200
    r = api.http.get(f"{ID}/projects/{world['b']['project_id']}", headers=alice)
    assert r.status_code == 404 and "error" in r.json()
    assert api.http.get(f"{ID}/users/{world['b']['user_id']}", headers=alice).status_code == 404
    r = api.http.post(f"{ID}/projects", json={"project": {"name": "x"}}, headers=alice)
    assert r.status_code == 403
    assert api.http.post(f"{ID}/users", json={"user": {"name": "x"}}, headers=alice).status_code == 403
    r = api.http.put(f"{ID}/projects/{world['a']['project_id']}/users/{world['a']['user_id']}"
                     f"/roles/{world['a']['role_id']}", headers=alice)
    assert r.status_code == 403


def test_reader_cannot_write(api: Api, world: dict[str, Any]) -> None:
    rita = api.headers(world["rita"])
    uid = world["r"]["user_id"]
    r = api.http.post(f"{ID}/users/{uid}/application_credentials",
                      json={"application_credential": {"name": "x"}}, headers=rita)
    # A reader may hold an app credential limited to reading; the roles it carries are still 'reader'.
    assert r.status_code == 201
    assert [x["name"] for x in r.json()["application_credential"]["roles"]] == ["reader"]
    assert api.http.patch(f"{ID}/projects/{world['a']['project_id']}", json={"project": {"name": "z"}},
                          headers=rita).status_code == 403


def test_password_change_revokes_old_tokens(api: Api, world: dict[str, Any]) -> None:
    uid = world["a"]["user_id"]
    r = api.http.post(f"{ID}/users/{uid}/password", headers=api.headers(world["alice"]),
                      json={"user": {"original_password": "alice-pw", "password": "new-pw"}})
    assert r.status_code == 204
    assert api.http.get(f"{ID}/projects", headers=api.headers(world["alice"])).status_code == 401
    api.login("alice", "new-pw", "alpha")


def test_admin_sets_password(api: Api, world: dict[str, Any]) -> None:
    uid = world["b"]["user_id"]
    r = api.http.patch(f"{ID}/users/{uid}", json={"user": {"password": "bob2"}},
                       headers=api.headers(world["admin"]))
    assert r.status_code == 200
    assert "password" not in r.json()["user"]
    api.login("bob", "bob2", "beta")


def test_role_assignments_listing(api: Api, world: dict[str, Any]) -> None:
    h = api.headers(world["admin"])
    r = api.http.get(f"{ID}/role_assignments", params={"scope.project.id": world["a"]["project_id"],
                                                        "include_names": "True"}, headers=h)
    rows = r.json()["role_assignments"]
    assert {(x["user"]["name"], x["role"]["name"]) for x in rows} == {("alice", "member"),
                                                                        ("rita", "reader")}
    # Keystone's default policy: listing assignments is for admins, even one's own.
    assert api.http.get(f"{ID}/role_assignments", headers=api.headers(world["bob"])).status_code == 403


def test_application_credential_lifecycle_and_login(api: Api, world: dict[str, Any]) -> None:
    uid = world["a"]["user_id"]
    h = api.headers(world["alice"])
    r = api.http.post(f"{ID}/users/{uid}/application_credentials",
                      json={"application_credential": {"name": "ci", "description": "for CI"}}, headers=h)
    assert r.status_code == 201, r.text
    cred = r.json()["application_credential"]
    assert cred["secret"] and cred["project_id"] == world["a"]["project_id"]
    listed = api.http.get(f"{ID}/users/{uid}/application_credentials", headers=h).json()
    assert [c["name"] for c in listed["application_credentials"]] == ["ci"]
    assert "secret" not in listed["application_credentials"][0]
    r = api.http.post(f"{ID}/auth/tokens", json={"auth": {"identity": {
        "methods": ["application_credential"],
        "application_credential": {"id": cred["id"], "secret": cred["secret"]}}}})
    assert r.status_code == 201
    tok = r.json()["token"]
    assert tok["project"]["id"] == world["a"]["project_id"]
    assert tok["methods"] == ["application_credential"]
    by_name = api.http.post(f"{ID}/auth/tokens", json={"auth": {"identity": {
        "methods": ["application_credential"], "application_credential": {
            "name": "ci", "secret": cred["secret"], "user": {"name": "alice", "domain": {"id": "default"}}}}}})
    assert by_name.status_code == 201
    bad = api.http.post(f"{ID}/auth/tokens", json={"auth": {"identity": {
        "methods": ["application_credential"],
        "application_credential": {"id": cred["id"], "secret": "nope"}}}})
    assert bad.status_code == 401
    ac_token = r.headers["x-subject-token"]
    assert api.http.delete(f"{ID}/users/{uid}/application_credentials/{cred['id']}",
                           headers=h).status_code == 204
    assert api.http.get(f"{ID}/projects", headers=api.headers(ac_token)).status_code == 401


def test_project_delete_revokes_its_tokens(api: Api, world: dict[str, Any]) -> None:
    h = api.headers(world["admin"])
    assert api.http.delete(f"{ID}/projects/{world['b']['project_id']}", headers=h).status_code == 204
    assert api.http.get(f"{ID}/projects", headers=api.headers(world["bob"])).status_code == 401
    assert api.http.get(f"{ID}/projects/{world['b']['project_id']}", headers=h).status_code == 404


def test_duplicate_names_conflict(api: Api) -> None:
    h = api.headers(api.admin())
    assert api.http.post(f"{ID}/projects", json={"project": {"name": "dup"}}, headers=h).status_code == 201
    r = api.http.post(f"{ID}/projects", json={"project": {"name": "dup"}}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == 409


@pytest.mark.parametrize("body,content_type", [
    (b"{not json", "application/json"),
    (b'{"project": {"name": "x", "bogus": 1}}', "application/json"),
    (b'{"project": {"name": 12}}', "application/json"),
    (b'{"project": {"name": ""}}', "application/json"),
    (b'{"project": {"name": "x", "enabled": "maybe"}}', "application/json"),
    (b"[]", "application/json"),
    (b"", "application/json"),
])
def test_bad_input_is_400_with_a_fault_body(api: Api, body: bytes, content_type: str) -> None:
    h = {**api.headers(api.admin()), "Content-Type": content_type}
    r = api.http.post(f"{ID}/projects", content=body, headers=h)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == 400
    assert r.json()["error"]["message"]


def test_huge_body_is_413(api: Api) -> None:
    h = {**api.headers(api.admin()), "Content-Type": "application/json"}
    body = b'{"project": {"name": "' + b"x" * (2 << 20) + b'"}}'
    r = api.http.post(f"{ID}/projects", content=body, headers=h)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == 413


@pytest.mark.parametrize("path", ["/projects/not-a-real-id", "/users/%00%01", "/roles/" + "x" * 300,
                                  "/domains/nope", "/nothing/here"])
def test_bad_ids_are_404(api: Api, path: str) -> None:
    r = api.http.get(f"{ID}{path}", headers=api.headers(api.admin()))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == 404


def test_missing_and_garbage_tokens_are_401(api: Api) -> None:
    assert api.http.get(f"{ID}/projects").status_code == 401
    for bad in (b"garbage", b"gAAAAA" + b"x" * 200, "\u00e9".encode("latin-1")):
        r = api.http.get(f"{ID}/projects", headers={"X-Auth-Token": bad})
        assert r.status_code == 401


def test_healthz_and_openapi(api: Api) -> None:
    assert api.http.get("/healthz").json()["status"] == "ok"
    spec = api.http.get("/openapi.json").json()
    assert "/identity/v3/auth/tokens" in spec["paths"]
