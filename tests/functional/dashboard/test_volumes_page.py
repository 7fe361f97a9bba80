"""The volumes page: list, create (empty, from an image, from a snapshot), extend, delete, and the
volume snapshots; project scope, readers, escaping and the API's messages."""

from __future__ import annotations

import re
from typing import Any

from tests.functional.compute.test_servers import until
from tests.functional.dashboard import test_dashboard as base
from tests.functional.dashboard.test_dashboard import D, assert_secure_headers

dash, world, host, qcow2 = base.dash, base.world, base.host, base.qcow2
V = "/volume/v3"


def volumes(dash: dict[str, Any], who: str = "alice") -> list[dict[str, Any]]:
    r = dash["api"].http.get(f"{V}/volumes/detail", headers={"X-Auth-Token": dash[who].token})
    found: list[dict[str, Any]] = r.json()["volumes"]
    return found


def settled(dash: dict[str, Any], status: str = "available", who: str = "alice") -> None:
    until(lambda: all(v["status"] == status for v in volumes(dash, who)))


def test_creating_extending_snapshotting_and_deleting_a_volume(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    page = alice.http.get(f"{D}/project/volumes")
    assert page.status_code == 200 and "No volumes in this project yet." in page.text
    assert f'href="{D}/project/volumes" aria-current="page"' in page.text
    assert_secure_headers(page)
    r = alice.http.post(f"{D}/project/volumes", data={"csrf_token": alice.csrf(), "name": "data", "size": "1",
                                                      "source": ""})
    assert r.status_code == 303 and r.headers["location"] == f"{D}/project/volumes"
    settled(dash)
    [vol] = volumes(dash)
    page = alice.http.get(f"{D}/project/volumes").text
    assert "Creating the volume data." in page and "1 GiB" in page and "available" in page
    r = alice.http.post(f"{D}/project/volumes/{vol['id']}/extend", data={"csrf_token": alice.csrf(), "size": "2"})
    assert r.status_code == 303
    until(lambda: volumes(dash)[0]["size"] == 2 and volumes(dash)[0]["status"] == "available")
    r = alice.http.post(f"{D}/project/volumes/{vol['id']}/snapshot", data={"csrf_token": alice.csrf(),
                                                                             "name": "data-snap"})
    assert r.status_code == 303
    page = alice.http.get(f"{D}/project/volumes").text
    snap = re.search(r'id="snapshot-([0-9a-f-]+)"', page)
    assert snap and "data-snap" in page, page
    h = {"X-Auth-Token": dash["alice"].token}
    until(lambda: dash["api"].http.get(f"{V}/snapshots/{snap.group(1)}", headers=h)
          .json()["snapshot"]["status"] == "available")
    r = alice.http.post(f"{D}/project/volumes", data={"csrf_token": alice.csrf(), "name": "copy", "size": "2",
                                                      "source": f"snapshot:{snap.group(1)}"})
    assert r.status_code == 303
    settled(dash)
    assert sorted(v["name"] for v in volumes(dash)) == ["copy", "data"]
    r = alice.http.post(f"{D}/project/snapshots/{snap.group(1)}/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    page = alice.http.get(f"{D}/project/volumes").text
    assert "Deleting the snapshot." in page
    until(lambda: dash["api"].http.get(f"{V}/snapshots/{snap.group(1)}", headers=h).status_code == 404)
    r = alice.http.post(f"{D}/project/volumes/{vol['id']}/delete", data={"csrf_token": alice.csrf()})
    assert r.status_code == 303
    until(lambda: [v["name"] for v in volumes(dash)] == ["copy"])


def test_a_volume_from_an_image_and_the_apis_refusal_as_its_message(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    assert f'value="image:{dash["image"]}"' in alice.http.get(f"{D}/project/volumes").text
    r = alice.http.post(f"{D}/project/volumes", data={"csrf_token": alice.csrf(), "name": "boot", "size": "1",
                                                      "source": f"image:{dash['image']}"})
    assert r.status_code == 303
    settled(dash)
    [vol] = volumes(dash)
    assert vol["bootable"] == "true"
    r = alice.http.post(f"{D}/project/volumes/{vol['id']}/extend", data={"csrf_token": alice.csrf(), "size": "1"})
    assert r.status_code == 303
    page = alice.http.get(f"{D}/project/volumes").text
    shown = re.search(r'<p class="error" role="status">([^<]+)</p>', page)
    assert shown and "size" in shown.group(1).lower(), page
    r = alice.http.post(f"{D}/project/volumes", data={"csrf_token": alice.csrf(), "name": "x", "size": "lots"})
    assert "The size (GiB) must be a whole number." in alice.http.get(f"{D}/project/volumes").text


def test_a_volume_named_like_a_script_is_shown_as_text(dash: dict[str, Any]) -> None:
    name = "<script>alert(1)</script>"
    alice = dash["browser"]("alice")
    alice.http.post(f"{D}/project/volumes", data={"csrf_token": alice.csrf(), "name": name, "size": "1"})
    page = alice.http.get(f"{D}/project/volumes").text
    assert name not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_another_projects_volumes_are_not_shown_and_their_ids_are_404(dash: dict[str, Any]) -> None:
    bob = dash["browser"]("bob")
    bob.http.post(f"{D}/project/volumes", data={"csrf_token": bob.csrf(), "name": "beta-vol", "size": "1"})
    settled(dash, who="bob")
    [theirs] = volumes(dash, "bob")
    alice = dash["browser"]("alice")
    assert "beta-vol" not in alice.http.get(f"{D}/project/volumes").text
    for path in (f"volumes/{theirs['id']}/delete", f"volumes/{theirs['id']}/extend"):
        r = alice.http.post(f"{D}/project/{path}", data={"csrf_token": alice.csrf(), "size": "5"})
        assert r.status_code == 404, r.text
    assert volumes(dash, "bob")[0]["status"] == "available" and volumes(dash, "bob")[0]["size"] == 1


def test_a_reader_sees_the_volumes_without_forms_and_is_refused_when_posting(dash: dict[str, Any]) -> None:
    alice = dash["browser"]("alice")
    alice.http.post(f"{D}/project/volumes", data={"csrf_token": alice.csrf(), "name": "data", "size": "1"})
    settled(dash)
    [vol] = volumes(dash)
    rita = dash["browser"]("rita")
    page = rita.http.get(f"{D}/project/volumes").text
    assert "data" in page and 'method="post" action="/dashboard/project/volumes' not in page
    for path in ("volumes", f"volumes/{vol['id']}/delete"):
        r = rita.http.post(f"{D}/project/{path}", data={"csrf_token": rita.csrf(), "name": "x", "size": "1"})
        assert r.status_code == 403 and "reader" in r.text
    r = alice.http.post(f"{D}/project/volumes", data={"name": "no-csrf", "size": "1"})
    assert r.status_code == 403
    assert [v["name"] for v in volumes(dash)] == ["data"]
