"""/v3/services and /v3/endpoints: the catalog as admin-managed Keystone resources."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api
from tests.functional.identity.test_identity_api import make_member

ID = "/identity/v3"


def token_catalog(api: Api, token: str) -> list[dict[str, Any]]:
    r = api.http.get(f"{ID}/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert r.status_code == 200
    return list(r.json()["token"]["catalog"])


def test_bootstrap_services_and_endpoints_are_listed_in_keystone_shapes(api: Api) -> None:
    h = api.headers(api.admin())
    services = api.http.get(f"{ID}/services", headers=h).json()["services"]
    assert {s["type"] for s in services} >= {"identity", "compute", "image", "network"}
    compute = next(s for s in services if s["type"] == "compute")
    assert set(compute) == {"id", "type", "name", "description", "enabled", "links"}
    assert compute["name"] == "nova" and compute["enabled"] is True
    assert api.http.get(f"{ID}/services", params={"type": "image"}, headers=h).json()["services"][0][
        "name"] == "glance"
    eps = api.http.get(f"{ID}/endpoints", params={"service_id": compute["id"], "interface": "public"},
                       headers=h).json()["endpoints"]
    assert len(eps) == 1
    assert set(eps[0]) == {"id", "service_id", "interface", "url", "region", "region_id", "enabled", "links"}
    assert eps[0]["url"] == "http://127.0.0.1:8080/compute/v2.1" and eps[0]["region_id"] == "RegionOne"
    r = api.http.get(f"{ID}/endpoints", params={"interface": "sideways"}, headers=h)
    assert r.status_code == 400


def test_an_admin_adds_a_service_and_endpoint_and_tokens_carry_it(api: Api) -> None:
    admin = api.admin()
    h = api.headers(admin)
    r = api.http.post(f"{ID}/services", headers=h, json={"service": {
        "type": "object-store", "name": "swift", "description": "objects"}})
    assert r.status_code == 201, r.text
    svc = r.json()["service"]
    r = api.http.post(f"{ID}/endpoints", headers=h, json={"endpoint": {
        "service_id": svc["id"], "interface": "public", "url": "http://objects.example/v1",
        "region_id": "RegionOne"}})
    assert r.status_code == 201, r.text
    ep = r.json()["endpoint"]
    assert api.http.get(f"{ID}/endpoints/{ep['id']}", headers=h).json()["endpoint"]["url"] == \
        "http://objects.example/v1"
    cat = {c["type"]: c for c in token_catalog(api, admin)}
    assert cat["object-store"]["endpoints"][0]["url"] == "http://objects.example/v1"

    # A disabled endpoint leaves the catalog; a disabled service takes all of its endpoints along.
    r = api.http.patch(f"{ID}/endpoints/{ep['id']}", headers=h, json={"endpoint": {"enabled": False}})
    assert r.status_code == 200 and r.json()["endpoint"]["enabled"] is False
    assert {c["type"]: c for c in token_catalog(api, admin)}["object-store"]["endpoints"] == []
    r = api.http.patch(f"{ID}/services/{svc['id']}", headers=h, json={"service": {"enabled": False}})
    assert r.status_code == 200
    assert "object-store" not in {c["type"] for c in token_catalog(api, admin)}

    # Deleting the service deletes its endpoints.
    assert api.http.delete(f"{ID}/services/{svc['id']}", headers=h).status_code == 204
    assert api.http.get(f"{ID}/endpoints/{ep['id']}", headers=h).status_code == 404
    assert api.http.get(f"{ID}/services/{svc['id']}", headers=h).status_code == 404


def test_two_services_may_share_a_type(api: Api) -> None:
    h = api.headers(api.admin())
    for name in ("one", "two"):
        r = api.http.post(f"{ID}/services", headers=h, json={"service": {"type": "metric", "name": name}})
        assert r.status_code == 201, r.text
    rows = api.http.get(f"{ID}/services", params={"type": "metric"}, headers=h).json()["services"]
    assert sorted(s["name"] for s in rows) == ["one", "two"]


def test_bad_endpoints_are_400(api: Api) -> None:
    h = api.headers(api.admin())
    svc = api.http.get(f"{ID}/services", params={"type": "compute"}, headers=h).json()["services"][0]
    for body in ({"service_id": "no-such-service", "interface": "public", "url": "http://x/"},
                 {"service_id": svc["id"], "interface": "sideways", "url": "http://x/"},
                 {"service_id": svc["id"], "interface": "public", "url": "not a url"},
                 {"service_id": svc["id"], "interface": "public"}):
        r = api.http.post(f"{ID}/endpoints", headers=h, json={"endpoint": body})
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == 400


def test_members_and_readers_get_403_on_catalog_reads_and_writes(api: Api) -> None:
    admin = api.admin()
    make_member(api, admin, "gamma", "gina")
    make_member(api, admin, "gamma", "ray", role="reader")
    svc = api.http.get(f"{ID}/services", headers=api.headers(admin)).json()["services"][0]
    ep = api.http.get(f"{ID}/endpoints", headers=api.headers(admin)).json()["endpoints"][0]
    for user in ("gina", "ray"):
        h = api.headers(api.login(user, f"{user}-pw", "gamma"))
        for method, path, body in (
                ("GET", "/services", None), ("GET", f"/services/{svc['id']}", None),
                ("POST", "/services", {"service": {"type": "evil"}}),
                ("PATCH", f"/services/{svc['id']}", {"service": {"enabled": False}}),
                ("DELETE", f"/services/{svc['id']}", None),
                ("GET", "/endpoints", None), ("GET", f"/endpoints/{ep['id']}", None),
                ("POST", "/endpoints", {"endpoint": {"service_id": svc["id"], "interface": "public",
                                                     "url": "http://evil.example/"}}),
                ("PATCH", f"/endpoints/{ep['id']}", {"endpoint": {"url": "http://evil.example/"}}),
                ("DELETE", f"/endpoints/{ep['id']}", None)):
            r = api.http.request(method, f"{ID}{path}", headers=h, json=body)
            assert r.status_code == 403, (user, method, path, r.text)
    # Nothing changed.
    assert api.http.get(f"{ID}/endpoints/{ep['id']}", headers=api.headers(admin)).json()["endpoint"] == ep


def test_a_restart_keeps_admin_made_entries_and_moves_bootstrap_urls(api: Api) -> None:
    from yunstack.api.app import CATALOG

    h = api.headers(api.admin())
    svc = api.http.post(f"{ID}/services", headers=h, json={"service": {"type": "dns", "name": "designate"}})
    sid = svc.json()["service"]["id"]
    api.http.post(f"{ID}/endpoints", headers=h, json={"endpoint": {
        "service_id": sid, "interface": "public", "url": "http://dns.example/"}})
    api.services.identity.bootstrap(base_url="http://10.0.0.5:9999", region="RegionOne", services=CATALOG)
    h = api.headers(api.admin())
    assert api.http.get(f"{ID}/services/{sid}", headers=h).status_code == 200
    assert len(api.http.get(f"{ID}/endpoints", params={"service_id": sid}, headers=h).json()["endpoints"]) == 1
    compute = api.http.get(f"{ID}/services", params={"type": "compute"}, headers=h).json()["services"]
    assert len(compute) == 1
    eps = api.http.get(f"{ID}/endpoints", params={"service_id": compute[0]["id"]}, headers=h).json()
    assert {e["url"] for e in eps["endpoints"]} == {"http://10.0.0.5:9999/compute/v2.1"}
    assert len(eps["endpoints"]) == 3


def test_regions_are_the_ones_endpoints_name_and_anyone_may_read_them(api: Api) -> None:
    admin = api.admin()
    make_member(api, admin, "delta", "dan")
    h = api.headers(api.login("dan", "dan-pw", "delta"))
    regions = api.http.get(f"{ID}/regions", headers=h).json()["regions"]
    assert [r["id"] for r in regions] == ["RegionOne"]
    assert set(regions[0]) == {"id", "description", "parent_region_id", "links"}
    assert api.http.get(f"{ID}/regions/RegionOne", headers=h).json()["region"]["id"] == "RegionOne"
    assert api.http.get(f"{ID}/regions/Atlantis", headers=h).status_code == 404
