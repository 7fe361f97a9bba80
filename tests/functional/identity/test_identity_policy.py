"""Keystone's default policies and token rules, each written as the attack or the bug it stops."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.functional.identity.test_identity_api import make_member

ID = "/identity/v3"


@pytest.fixture
def world(api: Api) -> dict[str, Any]:
    admin = api.admin()
    a = make_member(api, admin, "alpha", "alice")
    b = make_member(api, admin, "beta", "bob")
    m = make_member(api, admin, "alpha", "mona", role="manager")
    return {"admin": admin, "a": a, "b": b, "m": m,
            "alice": api.login("alice", "alice-pw", "alpha"),
            "bob": api.login("bob", "bob-pw", "beta"),
            "mona": api.login("mona", "mona-pw", "alpha")}


def issue(api: Api, user: str, password: str, project: str) -> tuple[str, dict[str, Any]]:
    r = api.http.post(f"{ID}/auth/tokens", json={"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})
    assert r.status_code == 201, r.text
    return r.headers["x-subject-token"], r.json()["token"]


# -- tokens ----------------------------------------------------------------------------------------

def test_expires_at_and_issued_at_are_the_same_string_on_issue_and_on_validation(api: Api) -> None:
    for _ in range(3):  # the old code lost the microseconds on validation: any try shows it
        token, issued = issue(api, "admin", "adminpw", "admin")
        r = api.http.get(f"{ID}/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
        assert r.status_code == 200
        assert r.json()["token"]["expires_at"] == issued["expires_at"]
        assert r.json()["token"]["issued_at"] == issued["issued_at"]
        assert issued["expires_at"].endswith(".000000Z")  # Keystone's whole seconds


def test_a_token_issued_right_after_a_password_change_works(api: Api, world: dict[str, Any]) -> None:
    uid = world["a"]["user_id"]
    r = api.http.post(f"{ID}/users/{uid}/password", headers=api.headers(world["alice"]),
                      json={"user": {"original_password": "alice-pw", "password": "new-pw"}})
    assert r.status_code == 204
    # Issued within the same second as the revocation event: it must not be caught by it.
    fresh = api.login("alice", "new-pw", "alpha")
    assert api.http.get(f"{ID}/auth/projects", headers=api.headers(fresh)).status_code == 200
    assert api.http.get(f"{ID}/auth/projects", headers=api.headers(world["alice"])).status_code == 401


def test_a_token_issued_right_after_a_role_change_works(api: Api, world: dict[str, Any]) -> None:
    a, h = world["a"], api.headers(world["admin"])
    grant = f"{ID}/projects/{a['project_id']}/users/{a['user_id']}/roles/{a['role_id']}"
    assert api.http.delete(grant, headers=h).status_code == 204
    assert api.http.put(grant, headers=h).status_code == 204
    fresh = api.login("alice", "alice-pw", "alpha")
    assert api.http.get(f"{ID}/auth/projects", headers=api.headers(fresh)).status_code == 200
    assert api.http.get(f"{ID}/auth/projects", headers=api.headers(world["alice"])).status_code == 401


def test_a_member_cannot_validate_check_or_revoke_someone_elses_token(api: Api,
                                                                      world: dict[str, Any]) -> None:
    as_alice = {**api.headers(world["alice"]), "X-Subject-Token": world["bob"]}
    assert api.http.get(f"{ID}/auth/tokens", headers=as_alice).status_code == 403
    assert api.http.head(f"{ID}/auth/tokens", headers=as_alice).status_code == 403
    assert api.http.delete(f"{ID}/auth/tokens", headers=as_alice).status_code == 403
    # Bob's token survived the attempt.
    assert api.http.get(f"{ID}/auth/projects", headers=api.headers(world["bob"])).status_code == 200
    # A subject that is no valid token is 404 whoever asks.
    garbage = {**api.headers(world["alice"]), "X-Subject-Token": "gAAAAAnotatoken"}
    assert api.http.get(f"{ID}/auth/tokens", headers=garbage).status_code == 404


def test_own_tokens_validate_and_admins_validate_anyones(api: Api, world: dict[str, Any]) -> None:
    second = api.login("alice", "alice-pw", "alpha")
    own = {**api.headers(world["alice"]), "X-Subject-Token": second}
    assert api.http.get(f"{ID}/auth/tokens", headers=own).status_code == 200
    assert api.http.head(f"{ID}/auth/tokens", headers=own).status_code == 200
    admin = {**api.headers(world["admin"]), "X-Subject-Token": world["bob"]}
    assert api.http.get(f"{ID}/auth/tokens", headers=admin).json()["token"]["user"]["name"] == "bob"


def test_the_service_role_validates_tokens_but_does_not_check_them(api: Api, world: dict[str, Any]) -> None:
    admin = world["admin"]
    svc = make_member(api, admin, "service", "glance-svc", role="service")
    assert svc["user_id"]
    token = api.login("glance-svc", "glance-svc-pw", "service")
    h = {**api.headers(token), "X-Subject-Token": world["bob"]}
    assert api.http.get(f"{ID}/auth/tokens", headers=h).status_code == 200
    assert api.http.head(f"{ID}/auth/tokens", headers=h).status_code == 403  # identity:check_token


# -- application credentials -----------------------------------------------------------------------

def app_cred_token(api: Api, world: dict[str, Any], name: str, **extra: Any) -> tuple[str, str]:
    uid = world["a"]["user_id"]
    r = api.http.post(f"{ID}/users/{uid}/application_credentials", headers=api.headers(world["alice"]),
                      json={"application_credential": {"name": name, **extra}})
    assert r.status_code == 201, r.text
    cred = r.json()["application_credential"]
    r = api.http.post(f"{ID}/auth/tokens", json={"auth": {"identity": {
        "methods": ["application_credential"],
        "application_credential": {"id": cred["id"], "secret": cred["secret"]}}}})
    assert r.status_code == 201
    return r.headers["x-subject-token"], cred["id"]


def test_a_restricted_application_credential_cannot_mint_or_delete_credentials(
        api: Api, world: dict[str, Any]) -> None:
    uid = world["a"]["user_id"]
    token, cred_id = app_cred_token(api, world, "restricted")
    h = api.headers(token)
    check = api.http.get(f"{ID}/auth/tokens", headers={**h, "X-Subject-Token": token}).json()["token"]
    assert check["application_credential"] == {"id": cred_id, "name": "restricted", "restricted": True}
    r = api.http.post(f"{ID}/users/{uid}/application_credentials", headers=h,
                      json={"application_credential": {"name": "successor"}})
    assert r.status_code == 403 and "application_credential" in r.json()["error"]["message"]
    r = api.http.delete(f"{ID}/users/{uid}/application_credentials/{cred_id}", headers=h)
    assert r.status_code == 403
    listed = api.http.get(f"{ID}/users/{uid}/application_credentials", headers=h).json()
    assert [c["name"] for c in listed["application_credentials"]] == ["restricted"]


def test_an_unrestricted_application_credential_may_manage_credentials(api: Api,
                                                                         world: dict[str, Any]) -> None:
    uid = world["a"]["user_id"]
    token, _ = app_cred_token(api, world, "free", unrestricted=True)
    r = api.http.post(f"{ID}/users/{uid}/application_credentials", headers=api.headers(token),
                      json={"application_credential": {"name": "child"}})
    assert r.status_code == 201, r.text


def test_an_application_credential_expiry_without_a_timezone_is_utc(api: Api, world: dict[str, Any]) -> None:
    uid = world["a"]["user_id"]
    r = api.http.post(f"{ID}/users/{uid}/application_credentials", headers=api.headers(world["alice"]),
                      json={"application_credential": {"name": "naive",
                                                       "expires_at": "2099-01-02T03:04:05"}})
    assert r.status_code == 201, r.text
    assert r.json()["application_credential"]["expires_at"] == "2099-01-02T03:04:05.000000Z"
    r = api.http.post(f"{ID}/users/{uid}/application_credentials", headers=api.headers(world["alice"]),
                      json={"application_credential": {"name": "past", "expires_at": "2001-01-01T00:00:00"}})
    assert r.status_code == 400


# -- admin-only reads ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/users", "/projects", "/roles", "/domains", "/role_assignments",
                                  "/services", "/endpoints"])
def test_a_member_listing_an_admin_collection_gets_403_not_a_filtered_list(
        api: Api, world: dict[str, Any], path: str) -> None:
    r = api.http.get(f"{ID}{path}", headers=api.headers(world["alice"]))
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == 403
    assert api.http.get(f"{ID}{path}", headers=api.headers(world["admin"])).status_code == 200


def test_members_list_their_own_projects_through_auth_and_user_projects(api: Api,
                                                                          world: dict[str, Any]) -> None:
    h = api.headers(world["alice"])
    mine = api.http.get(f"{ID}/users/{world['a']['user_id']}/projects", headers=h).json()["projects"]
    assert [p["name"] for p in mine] == ["alpha"]
    assert [p["name"] for p in api.http.get(f"{ID}/auth/projects", headers=h).json()["projects"]] == ["alpha"]
    assert api.http.get(f"{ID}/users/{world['b']['user_id']}/projects", headers=h).status_code == 403


def test_a_member_sees_its_projects_domain_and_no_other(api: Api, world: dict[str, Any]) -> None:
    admin = api.headers(world["admin"])
    r = api.http.post(f"{ID}/domains", json={"domain": {"name": "other"}}, headers=admin)
    assert r.status_code == 201, r.text
    other = r.json()["domain"]["id"]
    h = api.headers(world["alice"])
    assert api.http.get(f"{ID}/domains/default", headers=h).json()["domain"]["name"] == "Default"
    assert api.http.get(f"{ID}/domains/{other}", headers=h).status_code == 403
    assert api.http.get(f"{ID}/domains/no-such-domain", headers=h).status_code == 403
    assert api.http.get(f"{ID}/domains/{other}", headers=admin).status_code == 200


def test_role_reads_are_admin_or_a_manager_looking_at_delegable_roles(api: Api, world: dict[str, Any]) -> None:
    admin_role = api.http.get(f"{ID}/roles", params={"name": "admin"},
                              headers=api.headers(world["admin"])).json()["roles"][0]["id"]
    member_role = world["a"]["role_id"]
    assert api.http.get(f"{ID}/roles/{member_role}", headers=api.headers(world["alice"])).status_code == 403
    assert api.http.get(f"{ID}/roles/{member_role}", headers=api.headers(world["mona"])).status_code == 200
    assert api.http.get(f"{ID}/roles/{admin_role}", headers=api.headers(world["mona"])).status_code == 403


def test_a_member_cannot_read_grants_even_its_own(api: Api, world: dict[str, Any]) -> None:
    a, h = world["a"], api.headers(world["alice"])
    assert api.http.head(f"{ID}/projects/{a['project_id']}/users/{a['user_id']}/roles/{a['role_id']}",
                         headers=h).status_code == 403
    assert api.http.get(f"{ID}/projects/{a['project_id']}/users/{a['user_id']}/roles",
                        headers=h).status_code == 403


def test_disabling_a_domain_locks_its_users_out(api: Api, world: dict[str, Any]) -> None:
    admin = api.headers(world["admin"])
    dom = api.http.post(f"{ID}/domains", json={"domain": {"name": "side"}}, headers=admin).json()["domain"]
    r = api.http.post(f"{ID}/users", json={"user": {"name": "sid", "password": "sid-pw",
                                                     "domain_id": dom["id"]}}, headers=admin)
    assert r.status_code == 201
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "sid", "domain": {"id": dom["id"]}, "password": "sid-pw"}}}, "scope": "unscoped"}}
    token = api.http.post(f"{ID}/auth/tokens", json=body).headers["x-subject-token"]
    assert api.http.get(f"{ID}/auth/projects", headers=api.headers(token)).status_code == 200
    r = api.http.patch(f"{ID}/domains/{dom['id']}", json={"domain": {"enabled": False}}, headers=admin)
    assert r.status_code == 200 and r.json()["domain"]["enabled"] is False
    assert api.http.get(f"{ID}/auth/projects", headers=api.headers(token)).status_code == 401
    assert api.http.post(f"{ID}/auth/tokens", json=body).status_code == 401
    r = api.http.patch(f"{ID}/domains/default", json={"domain": {"enabled": False}}, headers=admin)
    assert r.status_code == 403


def test_a_member_asking_for_group_or_domain_assignments_gets_403_too(api: Api, world: dict[str, Any]) -> None:
    for params in ({"group.id": "g"}, {"scope.domain.id": "default"}, {"scope.system": "all"}):
        r = api.http.get(f"{ID}/role_assignments", params=params, headers=api.headers(world["alice"]))
        assert r.status_code == 403, params
        r = api.http.get(f"{ID}/role_assignments", params=params, headers=api.headers(world["admin"]))
        assert r.json()["role_assignments"] == []

