"""Glance v2 through the whole in-process API, on SQLite and on PostgreSQL, with real qemu-img."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api, make_config, need
from tests.functional.identity.test_identity_api import make_member
from yunstack.api.app import CATALOG
from yunstack.errors import BadRequest, NotFound
from yunstack.wiring import Services, build

IM = "/image/v2"
MAX_IMAGE = 2_000_000
QUOTA = 3_000_000
OCTET = {"Content-Type": "application/octet-stream"}
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


@pytest.fixture
def services(tmp_path: Path, db_url: str) -> Iterator[Services]:
    need(shutil.which("qemu-img") is not None, "qemu-img")
    cfg = make_config(tmp_path, db_url, image={"quota_bytes": QUOTA, "max_image_bytes": MAX_IMAGE})
    svc = build(cfg)
    svc.identity.bootstrap(base_url=svc.config.server.base_url, region="RegionOne", services=CATALOG,
                           admin_password="adminpw")
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    need(shutil.which("qemu-img") is not None, "qemu-img")
    d = tmp_path_factory.mktemp("disks")

    def run(*args: str) -> None:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True)

    run("create", "-f", "qcow2", str(d / "x.qcow2"), "16M")
    run("create", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname", str(d / "evil.qcow2"))
    run("create", "-f", "qcow2", "-o", f"data_file={d / 'evil-data.raw'}", str(d / "evil-data.qcow2"), "1M")
    (d / "x.raw").write_bytes(os.urandom(1 << 20))
    (d / "random.bin").write_bytes(os.urandom(300_000))
    iso = bytearray(64 * 1024)
    iso[0x8001:0x8006] = b"CD001"
    (d / "x.iso").write_bytes(bytes(iso))
    return {"qcow2": d / "x.qcow2", "raw": d / "x.raw", "iso": d / "x.iso", "random": d / "random.bin",
            "evil": d / "evil.qcow2", "evil-data": d / "evil-data.qcow2"}


@pytest.fixture
def world(api: Api) -> dict[str, Any]:
    admin = api.admin()
    a = make_member(api, admin, "alpha", "alice")
    b = make_member(api, admin, "beta", "bob")
    return {"admin": admin, "a": a, "b": b,
            "alice": api.login("alice", "alice-pw", "alpha"), "bob": api.login("bob", "bob-pw", "beta")}


def create(api: Api, token: str, expect: int = 201, **body: Any) -> dict[str, Any]:
    body.setdefault("disk_format", "qcow2")
    body.setdefault("container_format", "bare")
    r = api.http.post(f"{IM}/images", json=body, headers=api.headers(token))
    assert r.status_code == expect, r.text
    return dict(r.json())


def upload(api: Api, token: str, image_id: str, data: bytes, expect: int = 204) -> Any:
    r = api.http.put(f"{IM}/images/{image_id}/file", content=data, headers={**api.headers(token), **OCTET})
    assert r.status_code == expect, r.text
    return r


def stored_files(api: Api) -> list[Path]:
    root = api.services.config.image_store
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# -- versions and shapes -------------------------------------------------------------------------

def test_version_document_is_a_plain_list_with_one_current_v2(api: Api) -> None:
    r = api.http.get("/image")
    assert r.status_code == 300
    versions = r.json()["versions"]
    assert isinstance(versions, list)
    current = [x for x in versions if x["status"] == "CURRENT"]
    assert len(current) == 1 and current[0]["id"].startswith("v2.")
    assert current[0]["links"] == [{"rel": "self", "href": "http://127.0.0.1:8080/image/v2/"}]
    assert api.http.get(f"{IM}").status_code == 300


def test_the_catalog_lists_glance_at_the_unversioned_image_root(api: Api) -> None:
    r = api.http.get("/identity/v3/auth/catalog", headers=api.headers(api.admin()))
    image = [c for c in r.json()["catalog"] if c["type"] == "image"]
    assert image and image[0]["endpoints"][0]["url"] == "http://127.0.0.1:8080/image"


def test_schemas_are_served(api: Api, world: dict[str, Any]) -> None:
    h = api.headers(world["alice"])
    assert "properties" in api.http.get(f"{IM}/schemas/image", headers=h).json()
    assert api.http.get(f"{IM}/schemas/images", headers=h).json()["name"] == "images"
    assert api.http.get(f"{IM}/schemas/members", headers=h).status_code == 200


def test_images_need_a_token(api: Api) -> None:
    assert api.http.get(f"{IM}/images").status_code == 401


# -- create, upload, show, download --------------------------------------------------------------

def test_qcow2_upload_round_trips_with_checksums_and_virtual_size(api: Api, world: dict[str, Any],
                                                                   disks: dict[str, Path]) -> None:
    tok = world["alice"]
    r = api.http.post(f"{IM}/images", headers=api.headers(tok), json={
        "name": "img1", "disk_format": "qcow2", "container_format": "bare",
        "owner_specified.openstack.md5": "", "owner_specified.openstack.sha256": "",
        "owner_specified.openstack.object": "images/img1"})
    assert r.status_code == 201, r.text
    assert "openstack-image-import-methods" in r.headers and "openstack-image-store-ids" in r.headers
    img = r.json()
    assert img["status"] == "queued" and img["visibility"] == "shared" and img["size"] is None
    assert img["owner"] == world["a"]["project_id"]
    assert img["owner_specified.openstack.object"] == "images/img1"
    assert img["self"] == f"/v2/images/{img['id']}" and img["file"] == f"/v2/images/{img['id']}/file"
    assert img["schema"] == "/v2/schemas/image" and img["created_at"].endswith("Z")
    # Nothing to download yet.
    assert api.http.get(f"{IM}/images/{img['id']}/file", headers=api.headers(tok)).status_code == 204

    data = disks["qcow2"].read_bytes()
    upload(api, tok, img["id"], data)
    shown = api.http.get(f"{IM}/images/{img['id']}", headers=api.headers(tok)).json()
    assert shown["status"] == "active"
    assert shown["size"] == len(data) and shown["virtual_size"] == 16 * 1024**2
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_algo"] == "sha512" and shown["os_hash_value"] == hashlib.sha512(data).hexdigest()

    got = api.http.get(f"{IM}/images/{img['id']}/file", headers=api.headers(tok))
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-md5"] == shown["checksum"]
    assert got.headers["content-type"] == "application/octet-stream"
    # A second upload to an active image is a conflict.
    upload(api, tok, img["id"], data, expect=409)


def test_raw_and_iso_uploads_are_accepted_for_what_they_are(api: Api, world: dict[str, Any],
                                                            disks: dict[str, Path]) -> None:
    tok = world["alice"]
    raw = create(api, tok, name="r", disk_format="raw")
    upload(api, tok, raw["id"], disks["raw"].read_bytes())
    shown = api.http.get(f"{IM}/images/{raw['id']}", headers=api.headers(tok)).json()
    assert shown["status"] == "active" and shown["virtual_size"] == 1 << 20
    iso = create(api, tok, name="i", disk_format="iso")
    upload(api, tok, iso["id"], disks["iso"].read_bytes())
    # An ISO declared raw, and a qcow2 declared raw, do not match.
    upload(api, tok, create(api, tok, disk_format="raw")["id"], disks["iso"].read_bytes(), expect=415)
    upload(api, tok, create(api, tok, disk_format="raw")["id"], disks["qcow2"].read_bytes(), expect=415)


def test_create_refuses_read_only_and_odd_keys(api: Api, world: dict[str, Any]) -> None:
    tok = world["alice"]
    assert "read-only" in create(api, tok, expect=403, status="active")["error"]["message"]
    create(api, tok, expect=403, os_glance_foo="x")
    create(api, tok, expect=400, custom=5)
    assert "supported formats" in create(api, tok, expect=400, disk_format="ami")["error"]["message"]
    create(api, tok, expect=400, container_format="ovf")
    create(api, tok, expect=400, visibility="secret")
    create(api, tok, expect=400, protected="yes")
    made = create(api, tok, id="0b3a1f5e-3c1d-4f43-9b43-2f6f6a1f0c11", name="fixed")
    assert made["id"] == "0b3a1f5e-3c1d-4f43-9b43-2f6f6a1f0c11"
    create(api, tok, expect=409, id="0b3a1f5e-3c1d-4f43-9b43-2f6f6a1f0c11")


def test_unknown_and_non_uuid_image_ids_are_404(api: Api, world: dict[str, Any]) -> None:
    h = api.headers(world["alice"])
    for bad in ("img1", "00000000-0000-0000-0000-000000000000"):
        assert api.http.get(f"{IM}/images/{bad}", headers=h).status_code == 404
        assert api.http.delete(f"{IM}/images/{bad}", headers=h).status_code == 404
        assert api.http.put(f"{IM}/images/{bad}/file", content=b"x", headers={**h, **OCTET}).status_code == 404


# -- list -----------------------------------------------------------------------------------------

def test_list_filters_sorts_and_paginates_with_next_links(api: Api, world: dict[str, Any],
                                                          disks: dict[str, Path]) -> None:
    tok = world["alice"]
    h = api.headers(tok)
    ids = {}
    for name, fmt, tags in (("c", "qcow2", ["x"]), ("a", "raw", ["x", "y"]), ("e", "raw", []),
                            ("b", "qcow2", ["y"]), ("d", "iso", [])):
        flavor = "small" if name < "c" else "big"
        ids[name] = create(api, tok, name=name, disk_format=fmt, tags=tags, flavor=flavor)["id"]
    upload(api, tok, ids["a"], disks["raw"].read_bytes())

    def names(**params: Any) -> list[str]:
        r = api.http.get(f"{IM}/images", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [i["name"] for i in r.json()["images"]]

    body = api.http.get(f"{IM}/images", headers=h).json()
    assert body["first"] == "/v2/images" and body["schema"] == "/v2/schemas/images" and "next" not in body
    assert names() == ["d", "b", "e", "a", "c"]  # newest first
    assert names(sort="name:asc") == ["a", "b", "c", "d", "e"]
    assert names(sort_key="name", sort_dir="desc") == ["e", "d", "c", "b", "a"]
    assert names(sort="disk_format:asc,name:desc") == ["d", "c", "b", "e", "a"]
    assert names(name="c") == ["c"]
    assert sorted(names(disk_format="raw")) == ["a", "e"]
    assert names(status="active") == ["a"]
    assert sorted(names(tag="x")) == ["a", "c"]
    assert names(tag=["x", "y"]) == ["a"]
    assert sorted(names(id=f"in:{ids['b']},{ids['d']}")) == ["b", "d"]
    assert sorted(names(flavor="small")) == ["a", "b"]
    assert names(size_min=1) == ["a"]
    assert names(visibility="shared", sort="name:asc") == ["a", "b", "c", "d", "e"]
    assert names(visibility="private") == []

    seen, url = [], f"{IM}/images?limit=2&sort=name:asc"
    while url:
        page = api.http.get(url, headers=h).json()
        assert len(page["images"]) <= 2
        seen += [i["name"] for i in page["images"]]
        url = "/image" + page["next"] if "next" in page else ""
    assert seen == ["a", "b", "c", "d", "e"]
    assert api.http.get(f"{IM}/images", params={"marker": ids["e"], "sort": "name:asc"},
                        headers=h).json()["images"] == []
    for bad in ({"marker": "00000000-0000-0000-0000-000000000000"}, {"sort_key": "password"},
                {"sort": "name:sideways"}, {"limit": "-1"}, {"protected": "maybe"}):
        assert api.http.get(f"{IM}/images", params=bad, headers=h).status_code == 400, bad


def test_hidden_images_are_listed_only_when_asked_for(api: Api, world: dict[str, Any]) -> None:
    tok = world["alice"]
    create(api, tok, name="seen")
    create(api, tok, name="hidden", os_hidden=True)
    h = api.headers(tok)
    assert [i["name"] for i in api.http.get(f"{IM}/images", headers=h).json()["images"]] == ["seen"]
    assert [i["name"] for i in api.http.get(f"{IM}/images?os_hidden=true", headers=h).json()["images"]] == ["hidden"]


# -- patch and tags -------------------------------------------------------------------------------

def test_patch_changes_name_tags_properties_and_refuses_read_only(api: Api, world: dict[str, Any]) -> None:
    tok = world["alice"]
    h = {**api.headers(tok), **PATCH}
    img = create(api, tok, name="old", tags=["a"], color="red")
    url = f"{IM}/images/{img['id']}"

    def patch(ops: list[dict[str, Any]], expect: int = 200) -> dict[str, Any]:
        r = api.http.patch(url, json=ops, headers=h)
        assert r.status_code == expect, r.text
        return dict(r.json())

    out = patch([{"op": "replace", "path": "/name", "value": "new"},
                 {"op": "add", "path": "/tags/-", "value": "b"},
                 {"op": "add", "path": "/size_hint", "value": "small"},
                 {"op": "replace", "path": "/color", "value": "blue"},
                 {"op": "replace", "path": "/min_ram", "value": 256},
                 {"op": "replace", "path": "/protected", "value": True},
                 {"op": "replace", "path": "/protected", "value": False}])
    assert out["name"] == "new" and out["tags"] == ["a", "b"] and out["size_hint"] == "small"
    assert out["color"] == "blue" and out["min_ram"] == 256 and out["protected"] is False
    out = patch([{"op": "remove", "path": "/color"}, {"op": "replace", "path": "/tags", "value": ["z"]}])
    assert "color" not in out and out["tags"] == ["z"]
    patch([{"op": "remove", "path": "/color"}], expect=409)
    patch([{"op": "replace", "path": "/nothing", "value": "x"}], expect=409)
    patch([{"op": "replace", "path": "/status", "value": "active"}], expect=403)
    patch([{"op": "replace", "path": "/checksum", "value": "0"}], expect=403)
    patch([{"op": "remove", "path": "/name"}], expect=403)
    patch([{"op": "replace", "path": "/min_ram", "value": "lots"}], expect=400)
    patch([{"op": "move", "path": "/name", "from": "/x"}], expect=400)
    r = api.http.patch(url, json=[{"op": "replace", "path": "/name", "value": "x"}],
                       headers={**api.headers(tok), "Content-Type": "application/json"})
    assert r.status_code == 415

    assert api.http.put(f"{url}/tags/blue", headers=api.headers(tok)).status_code == 204
    assert api.http.put(f"{url}/tags/blue", headers=api.headers(tok)).status_code == 204
    assert api.http.get(url, headers=api.headers(tok)).json()["tags"] == ["z", "blue"]
    assert api.http.delete(f"{url}/tags/z", headers=api.headers(tok)).status_code == 204
    assert api.http.delete(f"{url}/tags/z", headers=api.headers(tok)).status_code == 404
    assert api.http.get(url, headers=api.headers(tok)).json()["tags"] == ["blue"]


def test_the_older_v2_0_patch_form_names_the_operation_as_its_key(api: Api, world: dict[str, Any]) -> None:
    """Glance's application/openstack-images-v2.0-json-patch (what Tempest sends): {"replace": "/name"}."""
    tok = world["alice"]
    h = {**api.headers(tok), "Content-Type": "application/openstack-images-v2.0-json-patch"}
    img = create(api, tok, name="old", color="red")
    url = f"{IM}/images/{img['id']}"
    r = api.http.patch(url, json=[{"replace": "/name", "value": "new"}, {"add": "/size_hint", "value": "s"},
                                  {"remove": "/color"}], headers=h)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["name"] == "new" and out["size_hint"] == "s" and "color" not in out
    for bad in ([{"op": "replace", "path": "/name", "value": "x"}], [{"replace": "/name", "add": "/x", "value": 1}],
                [{"value": "x"}]):
        r = api.http.patch(url, json=bad, headers=h)
        assert r.status_code == 400, (bad, r.text)
    assert api.http.get(url, headers=api.headers(tok)).json()["name"] == "new"


def test_an_empty_image_id_is_not_found_not_the_list(api: Api, world: dict[str, Any]) -> None:
    h = api.headers(world["alice"])
    create(api, world["alice"], name="listed")
    assert api.http.get(f"{IM}/images/", headers=h).status_code == 404
    assert api.http.delete(f"{IM}/images/", headers=h).status_code == 404
    assert api.http.get(f"{IM}/images", headers=h).status_code == 200
    assert api.http.get(f"{IM}/images/").status_code == 401


def test_disk_format_can_only_change_while_queued(api: Api, world: dict[str, Any], disks: dict[str, Path]) -> None:
    tok = world["alice"]
    img = create(api, tok, disk_format="raw")
    ops = [{"op": "replace", "path": "/disk_format", "value": "qcow2"}]
    h = {**api.headers(tok), **PATCH}
    assert api.http.patch(f"{IM}/images/{img['id']}", json=ops, headers=h).status_code == 200
    upload(api, tok, img["id"], disks["qcow2"].read_bytes())
    ops = [{"op": "replace", "path": "/disk_format", "value": "raw"}]
    assert api.http.patch(f"{IM}/images/{img['id']}", json=ops, headers=h).status_code == 403


# -- visibility -----------------------------------------------------------------------------------

def test_other_projects_private_images_are_404_and_only_admin_makes_images_public(
        api: Api, world: dict[str, Any], disks: dict[str, Path]) -> None:
    alice, bob, admin = world["alice"], world["bob"], world["admin"]
    img = create(api, alice, name="mine", visibility="private")
    url = f"{IM}/images/{img['id']}"
    assert api.http.get(url, headers=api.headers(bob)).status_code == 404
    assert api.http.get(f"{url}/file", headers=api.headers(bob)).status_code == 404
    assert api.http.delete(url, headers=api.headers(bob)).status_code == 404
    assert api.http.get(f"{IM}/images", headers=api.headers(bob)).json()["images"] == []
    assert api.http.get(url, headers=api.headers(admin)).status_code == 200

    make_public = [{"op": "replace", "path": "/visibility", "value": "public"}]
    r = api.http.patch(url, json=make_public, headers={**api.headers(alice), **PATCH})
    assert r.status_code == 403
    create(api, alice, expect=403, visibility="public")
    assert api.http.patch(url, json=make_public, headers={**api.headers(admin), **PATCH}).status_code == 200
    upload(api, alice, img["id"], disks["qcow2"].read_bytes())

    assert [i["id"] for i in api.http.get(f"{IM}/images", headers=api.headers(bob)).json()["images"]] == [img["id"]]
    assert api.http.get(f"{url}/file", headers=api.headers(bob)).content == disks["qcow2"].read_bytes()
    assert api.http.get(f"{IM}/images?visibility=public", headers=api.headers(bob)).json()["images"]
    # Seeing is not owning.
    assert api.http.delete(url, headers=api.headers(bob)).status_code == 403
    rename = [{"op": "replace", "path": "/name", "value": "theirs"}]
    assert api.http.patch(url, json=rename, headers={**api.headers(bob), **PATCH}).status_code == 403


def test_community_images_are_shown_but_not_listed_by_default(api: Api, world: dict[str, Any]) -> None:
    img = create(api, world["alice"], name="comm", visibility="community")
    bob = api.headers(world["bob"])
    assert api.http.get(f"{IM}/images/{img['id']}", headers=bob).status_code == 200
    assert api.http.get(f"{IM}/images", headers=bob).json()["images"] == []
    listed = api.http.get(f"{IM}/images?visibility=community", headers=bob).json()["images"]
    assert [i["id"] for i in listed] == [img["id"]]
    assert api.http.get(f"{IM}/images", headers=api.headers(world["alice"])).json()["images"]


def test_shared_images_reach_members_once_they_accept(api: Api, world: dict[str, Any],
                                                     disks: dict[str, Path]) -> None:
    alice, bob = api.headers(world["alice"]), api.headers(world["bob"])
    beta = world["b"]["project_id"]
    img = create(api, world["alice"], name="shared")
    upload(api, world["alice"], img["id"], disks["qcow2"].read_bytes())
    members = f"{IM}/images/{img['id']}/members"
    assert api.http.get(f"{IM}/images/{img['id']}", headers=bob).status_code == 404

    r = api.http.post(members, json={"member": beta}, headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending" and r.json()["member_id"] == beta
    assert r.json()["schema"] == "/v2/schemas/member"
    assert api.http.post(members, json={"member": beta}, headers=alice).status_code == 409
    assert api.http.post(members, json={"member": beta, "x": 1}, headers=alice).status_code == 400
    # Pending: bob can show it but does not list it.
    assert api.http.get(f"{IM}/images/{img['id']}", headers=bob).status_code == 200
    assert api.http.get(f"{IM}/images", headers=bob).json()["images"] == []
    listed = api.http.get(f"{IM}/images?member_status=pending", headers=bob).json()["images"]
    assert [i["id"] for i in listed] == [img["id"]]
    # Only bob decides for bob; only alice manages members.
    assert api.http.put(f"{members}/{beta}", json={"status": "accepted"}, headers=alice).status_code == 403
    assert api.http.post(members, json={"member": "someone"}, headers=bob).status_code == 403
    r = api.http.put(f"{members}/{beta}", json={"status": "accepted"}, headers=bob)
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    assert [i["id"] for i in api.http.get(f"{IM}/images", headers=bob).json()["images"]] == [img["id"]]
    assert api.http.get(f"{members}/{beta}", headers=bob).json()["status"] == "accepted"

    api.http.post(members, json={"member": "another-project"}, headers=alice)
    assert len(api.http.get(members, headers=alice).json()["members"]) == 2
    assert [m["member_id"] for m in api.http.get(members, headers=bob).json()["members"]] == [beta]
    assert api.http.delete(f"{members}/{beta}", headers=bob).status_code == 403
    assert api.http.delete(f"{members}/{beta}", headers=alice).status_code == 204
    assert api.http.get(f"{IM}/images/{img['id']}", headers=bob).status_code == 404

    private = create(api, world["alice"], visibility="private")
    r = api.http.post(f"{IM}/images/{private['id']}/members", json={"member": beta}, headers=alice)
    assert r.status_code == 403


# -- delete, protection, quota ----------------------------------------------------------------------

def test_protected_images_cannot_be_deleted_and_delete_removes_the_file(
        api: Api, world: dict[str, Any], disks: dict[str, Path]) -> None:
    tok = world["alice"]
    img = create(api, tok, protected=True)
    upload(api, tok, img["id"], disks["qcow2"].read_bytes())
    assert len(stored_files(api)) == 1
    url = f"{IM}/images/{img['id']}"
    r = api.http.delete(url, headers=api.headers(tok))
    assert r.status_code == 403 and "protected" in r.json()["error"]["message"]
    unprotect = [{"op": "replace", "path": "/protected", "value": False}]
    assert api.http.patch(url, json=unprotect, headers={**api.headers(tok), **PATCH}).status_code == 200
    assert api.http.delete(url, headers=api.headers(tok)).status_code == 204
    assert api.http.get(url, headers=api.headers(tok)).status_code == 404
    assert stored_files(api) == []


def test_image_quota_is_enforced_and_named(api: Api, world: dict[str, Any]) -> None:
    tok = world["alice"]
    upload(api, tok, create(api, tok, disk_format="raw")["id"], os.urandom(1_500_000))
    second = create(api, tok, disk_format="raw")
    r = upload(api, tok, second["id"], os.urandom(1_600_000), expect=403)
    assert "image_size_total" in r.json()["error"]["message"]
    shown = api.http.get(f"{IM}/images/{second['id']}", headers=api.headers(tok)).json()
    assert shown["status"] == "queued"
    # The quota is per project: bob still has room.
    upload(api, world["bob"], create(api, world["bob"], disk_format="raw")["id"], os.urandom(1_500_000))


def test_an_image_over_the_size_limit_is_413(api: Api, world: dict[str, Any]) -> None:
    tok = world["alice"]
    img = create(api, tok, disk_format="raw")
    upload(api, tok, img["id"], os.urandom(MAX_IMAGE + 1), expect=413)
    assert stored_files(api) == []


# -- inspection -------------------------------------------------------------------------------------

def test_random_bytes_declared_qcow2_are_refused_with_415_and_leave_nothing(
        api: Api, world: dict[str, Any], disks: dict[str, Path]) -> None:
    tok = world["alice"]
    img = create(api, tok)
    r = upload(api, tok, img["id"], disks["random"].read_bytes(), expect=415)
    assert r.json()["error"]["message"] == "Image disk_format qcow2 does not match stream data raw."
    shown = api.http.get(f"{IM}/images/{img['id']}", headers=api.headers(tok)).json()
    assert shown["status"] == "queued" and shown["size"] is None and shown["checksum"] is None
    assert stored_files(api) == []
    # The image is still usable: the right data now goes in.
    upload(api, tok, img["id"], disks["qcow2"].read_bytes())


@pytest.mark.parametrize("which", ["evil", "evil-data"])
def test_qcow2_pointing_at_host_files_is_refused(api: Api, world: dict[str, Any], disks: dict[str, Path],
                                                 which: str) -> None:
    tok = world["alice"]
    img = create(api, tok)
    r = upload(api, tok, img["id"], disks[which].read_bytes(), expect=400)
    assert "expose host files" in r.json()["error"]["message"]
    assert stored_files(api) == []


def test_upload_needs_formats_and_octet_stream(api: Api, world: dict[str, Any]) -> None:
    tok = world["alice"]
    bare = create(api, tok, disk_format=None, container_format=None)
    upload(api, tok, bare["id"], b"abc", expect=400)
    img = create(api, tok, disk_format="raw")
    r = api.http.put(f"{IM}/images/{img['id']}/file", content=b"abc",
                     headers={**api.headers(tok), "Content-Type": "text/plain"})
    assert r.status_code == 415


# -- the service API compute uses -------------------------------------------------------------------

def test_boot_snapshot_and_local_upload_service_calls(api: Api, world: dict[str, Any], disks: dict[str, Path],
                                                      tmp_path: Path) -> None:
    svc = api.services
    alice = svc.auth.validate(world["alice"])
    bob = svc.auth.validate(world["bob"])
    queued = svc.image.create(alice, name="local", disk_format="qcow2", container_format="bare")
    with pytest.raises(BadRequest):
        svc.image.get_for_boot(alice, queued.id)
    done = svc.image.upload_local(alice, queued.id, disks["qcow2"])
    assert done.status == "active" and done.virtual_size == 16 * 1024**2
    image, path = svc.image.get_for_boot(alice, done.id)
    assert image.id == done.id and path.read_bytes() == disks["qcow2"].read_bytes()
    with pytest.raises(NotFound):
        svc.image.get_for_boot(bob, done.id)

    snap = svc.image.create_snapshot(alice, "snap", disks["qcow2"], properties={"image_type": "snapshot"})
    assert snap.status == "active" and snap.visibility == "private" and snap.properties == {"image_type": "snapshot"}
    assert disks["qcow2"].exists()
    before = len(svc.image.list_images(alice).images)
    with pytest.raises(BadRequest):
        svc.image.create_snapshot(alice, "bad", disks["evil"])
    assert len(svc.image.list_images(alice).images) == before
