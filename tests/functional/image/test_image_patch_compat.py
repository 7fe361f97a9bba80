"""Glance compatibility details: the v2.0 JSON-patch media type of older clients, and empty ids."""

from __future__ import annotations

import pytest

from tests.conftest import Api

IM = "/image/v2"
V20 = {"Content-Type": "application/openstack-images-v2.0-json-patch"}
V21 = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def new_image(api: Api, h: dict[str, str]) -> str:
    r = api.http.post(f"{IM}/images", json={"name": "old", "disk_format": "raw", "container_format": "bare"},
                      headers=h)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_v20_patch_uses_the_operation_as_member_name(api: Api) -> None:
    h = api.headers(api.admin())
    iid = new_image(api, h)
    r = api.http.patch(f"{IM}/images/{iid}", headers={**h, **V20}, json=[
        {"replace": "/name", "value": "renamed"},
        {"add": "/distro", "value": "debian"}])
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "renamed" and r.json()["distro"] == "debian"
    r = api.http.patch(f"{IM}/images/{iid}", headers={**h, **V20}, json=[{"remove": "/distro"}])
    assert r.status_code == 200 and "distro" not in r.json()


def test_a_v20_add_of_an_existing_attribute_is_409_where_v21_replaces(api: Api) -> None:
    h = api.headers(api.admin())
    iid = new_image(api, h)
    assert api.http.patch(f"{IM}/images/{iid}", headers={**h, **V20},
                          json=[{"add": "/distro", "value": "a"}]).status_code == 200
    for path in ("/distro", "/name"):
        r = api.http.patch(f"{IM}/images/{iid}", headers={**h, **V20}, json=[{"add": path, "value": "b"}])
        assert r.status_code == 409, (path, r.text)
    r = api.http.patch(f"{IM}/images/{iid}", headers={**h, **V21},
                       json=[{"op": "add", "path": "/distro", "value": "b"}])
    assert r.status_code == 200 and r.json()["distro"] == "b"


@pytest.mark.parametrize("body", [
    [{"op": "replace", "path": "/name", "value": "x"}],      # the v2.1 shape under the v2.0 type
    [{"replace": "/name", "add": "/name", "value": "x"}],    # two operations in one object
    [{"replace": "/name"}],                                   # no value
    [{"replace": 7, "value": "x"}],                           # path is not a pointer
    {"replace": "/name", "value": "x"},                       # not a list
])
def test_malformed_v20_patches_are_400(api: Api, body: object) -> None:
    h = api.headers(api.admin())
    iid = new_image(api, h)
    r = api.http.patch(f"{IM}/images/{iid}", headers={**h, **V20}, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == 400


@pytest.mark.parametrize("method,path", [
    ("GET", "/images/"), ("PATCH", "/images/"), ("DELETE", "/images/"), ("PUT", "/images/"),
    ("PUT", "/images//tags/x"), ("DELETE", "/images//tags/x"), ("PUT", "/images//file"),
    ("GET", "/images//file"), ("GET", "/images//members"), ("POST", "/images//members"),
    ("GET", "/images//members/m"), ("PUT", "/images/abc/tags/"), ("DELETE", "/images/abc/tags/"),
    ("GET", "/images/abc/members/"),
])
def test_empty_ids_are_404_not_405_or_500(api: Api, method: str, path: str) -> None:
    h = {**api.headers(api.admin()), **V21}
    r = api.http.request(method, f"{IM}{path}", headers=h, json=[] if method == "PATCH" else None)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == 404
