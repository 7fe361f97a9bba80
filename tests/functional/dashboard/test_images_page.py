"""The images page: the list, an upload as static/images.js sends it (register, then the file through
the dashboard to Glance), edit, delete (a protected image refused); project scope, readers, CSRF,
escaping and the API's messages."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import httpx

from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import Browser, D, assert_secure_headers

dash, world, host, qcow2 = base.dash, base.world, base.host, base.qcow2
IM = "/image/v2"
# Not one of the formats the image service recognises, so a valid raw image; over the API's 1 MiB
# JSON body limit, so it also shows the dashboard's upload path streams past that limit.
RAW = bytes(range(256)) * 6144


def glance(dash: dict[str, Any], who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return dash["api"].http.request(method, f"{IM}{path}", headers={"X-Auth-Token": dash[who].token}, **kwargs)


def images(dash: dict[str, Any], who: str = "alice") -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in glance(dash, who, "GET", "/images").json()["images"]}


def script(b: Browser, **headers: str) -> dict[str, str]:
    """The headers static/images.js sends: it asks for JSON and carries the CSRF token."""
    return {"Accept": "application/json", "X-CSRF-Token": b.csrf(f"{D}/project/images"), **headers}


def register(b: Browser, name: str = "disk", disk_format: str = "raw", visibility: str = "private",
             **fields: str) -> httpx.Response:
    data = {"name": name, "disk_format": disk_format, "visibility": visibility, "min_disk": "1", "min_ram": "64",
            **fields}
    return b.http.post(f"{D}/project/images", data=data, headers=script(b))


def upload(b: Browser, url: str, data: bytes) -> httpx.Response:
    return b.http.put(url, content=data, headers=script(b, **{"Content-Type": "application/octet-stream"}))


def mine(dash: dict[str, Any], name: str = "disk") -> str:
    alice = dash["browser"]("alice")
    r = register(alice, name)
    assert r.status_code == 201, r.text
    assert upload(alice, r.json()["upload"], RAW).status_code == 200
    return str(r.json()["id"])


def test_uploading_through_the_dashboard_makes_the_image_active_with_its_size_and_checksum(
        dash: dict[str, Any]) -> None:
    assert len(RAW) > dash["api"].services.config.server.max_body_bytes
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/images")
    assert page.status_code == 200 and f'href="{D}/project/images" aria-current="page"' in page.text
    assert_secure_headers(page)
    assert 'id="upload-image"' in page.text and '<progress id="upload-progress"' in page.text
    assert re.search(r'<script src="/dashboard/static/images\.js\?v=\w+" defer></script>', page.text)
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "no inline script"
    row = re.search(rf'<tr id="image-{dash["image"]}">(.*?)</tr>', page.text, re.S)
    assert row and "cirros" in row.group(1) and "public" in row.group(1) and "another project" in row.group(1)
    assert f"/project/instances/launch?image_id={dash['image']}" in row.group(1)
    assert "/delete" not in row.group(1)  # not this project's to delete
    r = register(alice, "disk")
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["upload"] == f"{D}/project/images/{made['id']}/file" and "disk" in made["message"]
    assert images(dash)["disk"]["status"] == "queued"
    r = upload(alice, made["upload"], RAW)
    assert r.status_code == 200, r.text
    assert r.json() == {"message": "Uploaded 1.5 MiB: the image disk is active.", "status": "active",
                        "size": len(RAW), "checksum": hashlib.md5(RAW).hexdigest()}
    seen = images(dash)["disk"]
    assert seen["status"] == "active" and seen["size"] == len(RAW) and seen["visibility"] == "private"
    assert seen["checksum"] == hashlib.md5(RAW).hexdigest()
    assert seen["os_hash_value"] == hashlib.sha512(RAW).hexdigest()
    assert (seen["min_disk"], seen["min_ram"], seen["disk_format"]) == (1, 64, "raw")
    assert glance(dash, "alice", "GET", f"/images/{made['id']}/file").content == RAW
    page = alice.http.get(f"{D}/project/images").text
    row = re.search(rf'<tr id="image-{made["id"]}">(.*?)</tr>', page, re.S)
    assert row and "1.5 MiB" in row.group(1) and "this project" in row.group(1) and "1 GiB / 64 MiB" in row.group(1)
    detail = alice.http.get(f"{D}/project/images/{made['id']}").text
    assert hashlib.md5(RAW).hexdigest() in detail and f"{len(RAW)} bytes" in detail
    launch = alice.http.get(f"{D}/project/instances/launch?image_id={made['id']}").text
    assert f'<option value="{made["id"]}" selected>disk</option>' in launch


def test_the_apis_refusals_of_an_upload_are_its_answer(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    r = register(alice, "public-one", visibility="public")
    assert r.status_code == 403 and "publicize_image" in r.json()["message"], r.text
    r = register(alice, "odd", disk_format="ami")
    assert r.status_code == 400 and r.json()["message"].startswith("Choose a disk format")
    r = register(alice, "wrong", disk_format="qcow2")
    assert r.status_code == 201
    r = upload(alice, r.json()["upload"], RAW)
    assert r.status_code == 415 and r.json()["message"] == "Image disk_format qcow2 does not match stream data raw."
    assert set(images(dash)) == {"cirros", "wrong"} and images(dash)["wrong"]["status"] == "queued"
    image_id = mine(dash)
    r = upload(alice, f"{D}/project/images/{image_id}/file", RAW)
    assert r.status_code == 409 and "from active to saving is not allowed" in r.json()["message"], r.text


def test_without_javascript_the_form_is_refused_with_a_message_and_registers_nothing(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    r = alice.http.post(f"{D}/project/images", data={"csrf_token": alice.csrf(), "name": "disk",
                                                     "disk_format": "raw", "file": "disk.raw"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/images"
    page = alice.http.get(f"{D}/project/images").text
    assert "needs JavaScript" in page and "openstack image create --file" in page
    assert set(images(dash)) == {"cirros"}


def test_editing_an_image_and_a_protected_one_is_not_deleted_with_the_apis_reason(dash: dict[str, Any]) -> None:
    image_id = mine(dash)
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/images/{image_id}").text
    assert 'id="edit-image"' in page
    r = alice.http.post(f"{D}/project/images/{image_id}", data={
        "csrf_token": alice.csrf(), "name": "renamed", "visibility": "shared", "min_disk": "2", "min_ram": "128",
        "protected": "on"})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/images/{image_id}"
    seen = glance(dash, "alice", "GET", f"/images/{image_id}").json()
    assert (seen["name"], seen["visibility"], seen["min_disk"], seen["min_ram"], seen["protected"]) == \
        ("renamed", "shared", 2, 128, True)
    assert "Saved the image renamed." in alice.http.get(f"{D}/project/images/{image_id}").text
    r = alice.http.post(f"{D}/project/images/{image_id}/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/images"
    shown = re.search(r'<p class="error" role="status">([^<]+)</p>', alice.http.get(f"{D}/project/images").text)
    assert shown and shown.group(1) == f"Image {image_id} is protected and cannot be deleted."
    assert glance(dash, "alice", "GET", f"/images/{image_id}").status_code == 200
    r = alice.http.post(f"{D}/project/images/{image_id}", data={
        "csrf_token": alice.csrf(), "name": "renamed", "visibility": "public", "min_disk": "2", "min_ram": "128",
        "protected": "on"})
    shown = re.search(r'<p class="error" role="status">([^<]+)</p>',
                      alice.http.get(f"{D}/project/images/{image_id}").text)
    assert shown and "publicize_image" in shown.group(1)
    r = alice.http.post(f"{D}/project/images/{image_id}", data={  # an unchecked box is not sent
        "csrf_token": alice.csrf(), "name": "renamed", "visibility": "shared", "min_disk": "2", "min_ram": "128"})
    assert glance(dash, "alice", "GET", f"/images/{image_id}").json()["protected"] is False
    r = alice.http.post(f"{D}/project/images/{image_id}/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    assert "Deleted the image." in alice.http.get(f"{D}/project/images").text
    assert glance(dash, "alice", "GET", f"/images/{image_id}").status_code == 404


def test_another_projects_images_are_not_shown_and_their_ids_are_404(dash: dict[str, Any]) -> None:
    bob = dash["browser"]("bob")
    r = register(bob, "beta-disk")
    assert r.status_code == 201
    theirs = r.json()["id"]
    alice = dash["browser"]("alice")
    assert "beta-disk" not in alice.http.get(f"{D}/project/images").text
    assert alice.http.get(f"{D}/project/images/{theirs}").status_code == 404
    for path in (theirs, f"{theirs}/delete"):
        r = alice.http.post(f"{D}/project/images/{path}", data={"csrf_token": alice.csrf(), "name": "mine",
                                                               "visibility": "private", "min_disk": "0",
                                                               "min_ram": "0"})
        assert r.status_code == 404, r.text
    r = upload(alice, f"{D}/project/images/{theirs}/file", RAW)
    assert r.status_code == 404 and r.json()["message"] == f"No image found with ID {theirs}."
    assert images(dash, "bob")["beta-disk"]["status"] == "queued"
    public = alice.http.get(f"{D}/project/images/{dash['image']}").text
    assert "cirros" in public and 'id="edit-image"' not in public and "/delete" not in public


def test_without_the_csrf_header_the_upload_is_refused(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    r = register(alice)
    image_id, url = r.json()["id"], r.json()["upload"]
    r = alice.http.put(url, content=RAW, headers={"Accept": "application/json",
                                                  "Content-Type": "application/octet-stream"})
    assert r.status_code == 403 and "CSRF" in r.json()["message"]
    r = alice.http.put(url, content=RAW, headers={"Accept": "application/json", "X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    r = alice.http.post(f"{D}/project/images", data={"name": "x", "disk_format": "raw"},
                        headers={"Accept": "application/json"})
    assert r.status_code == 403
    for path in (image_id, f"{image_id}/delete"):
        assert alice.http.post(f"{D}/project/images/{path}", data={"name": "x"}).status_code == 403
    assert images(dash)["disk"]["status"] == "queued" and set(images(dash)) == {"cirros", "disk"}


def test_a_reader_sees_the_images_without_forms_and_is_refused_when_posting(dash: dict[str, Any]) -> None:
    image_id = mine(dash)
    rita = dash["browser"]("rita")
    page = rita.http.get(f"{D}/project/images").text
    assert "disk" in page and 'id="upload-image"' not in page and "/delete" not in page and "Launch" not in page
    assert 'id="edit-image"' not in rita.http.get(f"{D}/project/images/{image_id}").text
    r = register(rita, "nope")
    assert r.status_code == 403 and "reader" in r.json()["message"]
    assert upload(rita, f"{D}/project/images/{image_id}/file", RAW).status_code == 403
    for path in (image_id, f"{image_id}/delete"):
        r = rita.http.post(f"{D}/project/images/{path}", data={"csrf_token": rita.csrf(), "name": "x",
                                                              "visibility": "private", "min_disk": "0",
                                                              "min_ram": "0"})
        assert r.status_code == 403 and "reader" in r.text
    assert images(dash)["disk"]["status"] == "active" and "nope" not in images(dash)


def test_an_image_named_like_a_script_is_shown_as_text(dash: dict[str, Any]) -> None:
    name = "<script>alert(1)</script>"
    alice = dash["browser"]("alice")
    r = register(alice, name)
    assert r.status_code == 201
    for path in ("", f"/{r.json()['id']}"):
        page = alice.http.get(f"{D}/project/images{path}").text
        assert name not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
