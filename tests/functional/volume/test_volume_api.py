"""Cinder v3 through the in-process API, with the storage host's real agent and the real `file` backend.

The agent talks to the control plane over the agent protocol (HTTP against the ASGI app), and its
backend makes real qcow2 files with qemu-img; only the compute driver is fake (no guest is
involved in these volume operations).  So a test sees what a client sees: 202 and ``creating`` at
once, then the status the storage host's report decides, and the files on the host.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Api
from yunstack.wiring import Services

V = "/volume/v3"
WAIT = 60.0  # only a failing test waits this long (a loaded 2-core CI machine has needed over 30 s)


class Cinder:
    def __init__(self, api: Api, token: str, project_id: str = "", version: str | None = None) -> None:
        self.api, self.token, self.project_id, self.version = api, token, project_id, version

    def at(self, version: str) -> Cinder:
        """The same client asking for a microversion (``OpenStack-API-Version: volume <version>``)."""
        return Cinder(self.api, self.token, self.project_id, version)

    def _h(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        mv = {"OpenStack-API-Version": f"volume {self.version}"} if self.version else {}
        return {"X-Auth-Token": self.token, **mv, **(extra or {})}

    def get(self, path: str, **kw: Any) -> Any:
        return self.api.http.get(V + path, headers=self._h(kw.pop("headers", None)), **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Any:
        return self.api.http.post(V + path, json=body, headers=self._h(kw.pop("headers", None)), **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Any:
        return self.api.http.put(V + path, json=body, headers=self._h(kw.pop("headers", None)), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.api.http.delete(V + path, headers=self._h(), **kw)

    def create(self, size: int | None = 1, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"size": size, **extra} if size is not None else dict(extra)
        r = self.post("/volumes", {"volume": body})
        assert r.status_code == 202, r.text
        volume: dict[str, Any] = r.json()["volume"]
        return volume

    def wait(self, volume_id: str, status: str, what: str = "volumes") -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        key = what[:-1]
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = self.get(f"/{what}/{volume_id}")
            if status == "gone" and r.status_code == 404:
                return {}
            assert r.status_code == 200, r.text
            body = r.json()[key]
            if body["status"] == status:
                return body
            assert not body["status"].startswith("error") or status.startswith("error"), body
            time.sleep(0.05)
        raise AssertionError(f"{what} {volume_id} never became {status}: {body}")


def volumes_dir(services: Services) -> Path:
    return services.config.volumes_path


def files(services: Services) -> list[str]:
    root = volumes_dir(services)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_the_version_documents_and_the_microversion_header(api: Api) -> None:
    r = api.http.get("/volume/")
    assert r.status_code == 300, r.text
    (v3,) = r.json()["versions"]
    assert (v3["id"], v3["min_version"], v3["version"], v3["status"]) == ("v3.0", "3.0", "3.48", "CURRENT")
    r = api.http.get("/volume/v3/")
    assert r.status_code == 200 and r.json()["versions"][0]["id"] == "v3.0"
    assert r.headers["openstack-api-version"] == "volume 3.0"
    token = api.admin()
    r = api.http.get(f"{V}/types", headers={"X-Auth-Token": token, "OpenStack-API-Version": "volume latest"})
    assert r.status_code == 200 and r.headers["openstack-api-version"] == "volume 3.48"
    r = api.http.get(f"{V}/types", headers={"X-Auth-Token": token, "OpenStack-API-Version": "volume 3.49"})
    assert r.status_code == 406, r.text
    assert "maximum is 3.48" in r.json()["notAcceptable" if "notAcceptable" in r.json() else "volumeFault"]["message"]


def test_the_catalog_names_block_storage_under_both_types(api: Api) -> None:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "adminpw"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    catalog = api.http.post("/identity/v3/auth/tokens", json=body).json()["token"]["catalog"]
    urls = {c["type"]: c["endpoints"][0]["url"] for c in catalog}
    assert urls["block-storage"].endswith("/volume/v3") and urls["volumev3"].endswith("/volume/v3")


def test_a_volume_is_made_on_the_storage_host_shown_listed_and_deleted_without_a_trace(
        world: dict[str, Any], services: Services) -> None:
    alice = world["alice"]
    v = alice.create(1, name="data", description="d", metadata={"k": "v"})
    assert v["status"] == "creating" and v["size"] == 1 and v["bootable"] == "false"
    assert v["volume_type"] == "__DEFAULT__" and v["attachments"] == [] and v["encrypted"] is False
    assert "os-vol-host-attr:host" not in v and "os-vol-tenant-attr:tenant_id" not in v  # show and list only
    shown = alice.wait(v["id"], "available")
    assert shown["metadata"] == {"k": "v"} and shown["name"] == "data"
    assert files(services) == [f"volumes/{v['id']}.qcow2"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U",
                                      str(volumes_dir(services) / "volumes" / f"{v['id']}.qcow2")],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 1 << 30
    # The URL with the project id (Cinder's endpoints) reaches the same volume.
    r = alice.get(f"/{world['a']['project_id']}/volumes/{v['id']}")
    assert r.status_code == 200 and r.json()["volume"]["id"] == v["id"]
    admin_view = world["admin"].get(f"/volumes/{v['id']}").json()["volume"]
    assert admin_view["os-vol-host-attr:host"] == f"{services.config.host_name}@file#file"
    summary = alice.get("/volumes").json()["volumes"]
    assert [set(x) for x in summary] == [{"id", "name", "links"}]
    assert alice.get("/volumes/detail").json()["volumes"][0]["status"] == "available"
    r = alice.delete(f"/volumes/{v['id']}")
    assert r.status_code == 202, r.text
    alice.wait(v["id"], "gone")
    assert files(services) == []


def test_list_filters_sort_and_pages(world: dict[str, Any]) -> None:
    alice = world["alice"]
    made = [alice.create(1, name=f"v{i}", metadata={"tier": "gold" if i % 2 else "silver"}) for i in range(5)]
    for v in made:
        alice.wait(v["id"], "available")
    names = [x["name"] for x in alice.get("/volumes/detail", params={"sort": "name:asc"}).json()["volumes"]]
    assert names == ["v0", "v1", "v2", "v3", "v4"]
    assert [x["name"] for x in alice.get("/volumes", params={"name": "v3"}).json()["volumes"]] == ["v3"]
    gold = alice.get("/volumes/detail", params={"metadata": "{'tier': 'gold'}"}).json()["volumes"]
    assert sorted(x["name"] for x in gold) == ["v1", "v3"]
    assert alice.get("/volumes", params={"status": "no-such-status"}).json()["volumes"] == []
    assert len(alice.get("/volumes", params={"status": "available"}).json()["volumes"]) == 5
    assert len(alice.get("/volumes", params={"availability_zone": "nova"}).json()["volumes"]) == 5
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2, "sort": "name:asc"}
    while True:
        page = alice.get("/volumes", params=params).json()
        seen += [x["name"] for x in page["volumes"]]
        if "volumes_links" not in page:
            break
        params = {**params, "marker": page["volumes"][-1]["id"]}
    assert seen == ["v0", "v1", "v2", "v3", "v4"]
    # The next link repeats the path the client used, with the project id or without.
    with_project = alice.get(f"/{world['a']['project_id']}/volumes", params={"limit": 1}).json()
    assert f"/volume/v3/{world['a']['project_id']}/volumes?" in with_project["volumes_links"][0]["href"]
    without = alice.get("/volumes", params={"limit": 1}).json()
    assert "/volume/v3/volumes?" in without["volumes_links"][0]["href"]
    assert alice.get("/volumes", params={"sort": "nope:asc"}).status_code == 400
    assert alice.get("/volumes", params={"limit": "x"}).status_code == 400


@pytest.mark.parametrize("body", [{"size": 0}, {"size": -1}, {"size": "#$%"}, {"name": "no-size"},
                                  {"size": 1, "unknown": 1}, {"size": 1, "availability_zone": "elsewhere"}])
def test_bad_creates_are_400_and_leave_nothing(world: dict[str, Any], body: dict[str, Any],
                                                services: Services) -> None:
    alice = world["alice"]
    r = alice.post("/volumes", {"volume": body})
    assert r.status_code == 400, r.text
    assert r.json()["badRequest"]["message"]
    assert alice.get("/volumes").json()["volumes"] == []


@pytest.mark.parametrize("key", ["volume_type", "snapshot_id", "source_volid", "imageRef"])
def test_a_create_from_what_does_not_exist_is_404(world: dict[str, Any], key: str) -> None:
    r = world["alice"].post("/volumes", {"volume": {"size": 1, key: "5f6b1e64-0000-4000-8000-000000000000"}})
    assert r.status_code == 404, r.text


@pytest.mark.parametrize("verb", ["get", "put", "delete"])
def test_a_volume_that_does_not_exist_is_404(world: dict[str, Any], verb: str) -> None:
    alice = world["alice"]
    path = "/volumes/5f6b1e64-0000-4000-8000-000000000000"
    for where in (path, "/volumes/"):  # an empty id names no volume either (not the list)
        r = alice.put(where, {"volume": {"name": "x"}}) if verb == "put" else getattr(alice, verb)(where)
        assert r.status_code == 404, r.text
        assert "itemNotFound" in r.json()


def test_another_projects_volume_is_404_and_a_reader_cannot_write(world: dict[str, Any]) -> None:
    alice, bob, rita = world["alice"], world["bob"], world["rita"]
    v = alice.create(1)
    alice.wait(v["id"], "available")
    path = f"/volumes/{v['id']}"
    assert bob.get(path).status_code == 404
    assert bob.put(path, {"volume": {"name": "mine"}}).status_code == 404
    assert bob.delete(path).status_code == 404
    assert bob.get(f"{path}/metadata").status_code == 404
    r = bob.post(f"{path}/action", {"os-extend": {"new_size": 2}})
    assert r.status_code == 404, r.text
    assert bob.post("/snapshots", {"snapshot": {"volume_id": v["id"]}}).status_code == 404
    assert bob.post("/volumes", {"volume": {"size": 1, "source_volid": v["id"]}}).status_code == 404
    assert bob.get("/volumes").json()["volumes"] == []
    assert bob.get("/volumes", params={"all_tenants": "1"}).json()["volumes"] == []
    assert [x["id"] for x in rita.get("/volumes").json()["volumes"]] == [v["id"]]
    assert rita.post("/volumes", {"volume": {"size": 1}}).status_code == 403
    assert rita.put(path, {"volume": {"name": "x"}}).status_code == 403
    assert rita.delete(path).status_code == 403
    assert rita.post(f"{path}/action", {"os-set_bootable": {"bootable": True}}).status_code == 403
    assert rita.post(f"{path}/action", {"os-reset_status": {"status": "error"}}).status_code == 403
    assert alice.post(f"{path}/action", {"os-reset_status": {"status": "error"}}).status_code == 403
    admin_list = world["admin"].get("/volumes", params={"all_tenants": "1"}).json()["volumes"]
    assert v["id"] in [x["id"] for x in admin_list]


def test_metadata_flags_and_update(world: dict[str, Any]) -> None:
    alice = world["alice"]
    v = alice.create(1, metadata={"a": "1"})
    alice.wait(v["id"], "available")
    path = f"/volumes/{v['id']}"
    assert alice.post(f"{path}/metadata", {"metadata": {"b": "2"}}).json() == {"metadata": {"a": "1", "b": "2"}}
    assert alice.put(f"{path}/metadata", {"metadata": {"c": "3"}}).json() == {"metadata": {"c": "3"}}
    assert alice.put(f"{path}/metadata/c", {"meta": {"c": "4"}}).json() == {"meta": {"c": "4"}}
    assert alice.put(f"{path}/metadata/c", {"meta": {"d": "4"}}).status_code == 400
    assert alice.get(f"{path}/metadata/c").json() == {"meta": {"c": "4"}}
    assert alice.delete(f"{path}/metadata/c").status_code == 200
    assert alice.get(f"{path}/metadata/c").status_code == 404
    assert alice.post(f"{path}/action", {"os-set_bootable": {"bootable": True}}).status_code == 200
    assert alice.post(f"{path}/action", {"os-update_readonly_flag": {"readonly": True}}).status_code == 202
    shown = alice.get(path).json()["volume"]
    assert shown["bootable"] == "true" and shown["metadata"]["readonly"] == "True"  # as Cinder shows the flag
    r = alice.put(path, {"volume": {"name": "renamed", "description": None}})
    assert r.status_code == 200 and r.json()["volume"]["name"] == "renamed"
    assert alice.put(path, {"volume": {"size": 5}}).status_code == 400
    assert alice.post(f"{path}/action", {"os-frobnicate": {}}).status_code == 400


def test_extend_grows_the_volume_on_the_host(world: dict[str, Any], services: Services) -> None:
    alice = world["alice"]
    v = alice.create(1)
    alice.wait(v["id"], "available")
    path = f"/volumes/{v['id']}/action"
    assert alice.post(path, {"os-extend": {"new_size": 1}}).status_code == 400
    assert alice.post(path, {"os-extend": {"new_size": 3}}).status_code == 202
    assert alice.wait(v["id"], "available")["size"] == 3
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U",
                                      str(volumes_dir(services) / "volumes" / f"{v['id']}.qcow2")],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 3 << 30


def test_snapshots_clones_and_the_delete_rules(world: dict[str, Any], services: Services) -> None:
    alice = world["alice"]
    v = alice.create(1, name="base")
    alice.wait(v["id"], "available")
    r = alice.post("/snapshots", {"snapshot": {"volume_id": v["id"], "name": "s1", "metadata": {"m": "1"}}})
    assert r.status_code == 202, r.text
    snap = r.json()["snapshot"]
    assert snap["status"] == "creating" and "os-extended-snapshot-attributes:progress" not in snap
    shown = alice.wait(snap["id"], "available", "snapshots")
    assert shown["os-extended-snapshot-attributes:progress"] == "100%"
    assert shown["os-extended-snapshot-attributes:project_id"] == world["a"]["project_id"]
    # A volume with a snapshot is not deleted (400 with the reason), unless with cascade.
    r = alice.delete(f"/volumes/{v['id']}")
    assert r.status_code == 400 and "snapshot" in r.json()["badRequest"]["message"]
    restored = alice.create(None, snapshot_id=snap["id"])
    assert restored["size"] == 1 and restored["snapshot_id"] == snap["id"]
    clone = alice.create(2, source_volid=v["id"])
    alice.wait(restored["id"], "available")
    assert alice.wait(clone["id"], "available")["source_volid"] == v["id"]
    assert alice.post("/volumes", {"volume": {"size": 1, "source_volid": v["id"], "snapshot_id": snap["id"]}}
                      ).status_code == 400
    r = alice.get("/snapshots", params={"volume_id": v["id"]})
    assert [s["id"] for s in r.json()["snapshots"]] == [snap["id"]]
    assert alice.put(f"/snapshots/{snap['id']}", {"snapshot": {"name": "s2"}}).json()["snapshot"]["name"] == "s2"
    assert world["bob"].get(f"/snapshots/{snap['id']}").status_code == 404
    assert alice.delete(f"/volumes/{v['id']}", params={"cascade": "true"}).status_code == 202
    alice.wait(v["id"], "gone")
    alice.wait(snap["id"], "gone", "snapshots")
    for other in (restored, clone):  # built on the deleted volume's layers, and still whole
        assert alice.get(f"/volumes/{other['id']}").json()["volume"]["status"] == "available"
        assert alice.delete(f"/volumes/{other['id']}").status_code == 202
        alice.wait(other["id"], "gone")
    assert files(services) == []


def test_quotas_limits_and_the_over_quota_413(world: dict[str, Any]) -> None:
    admin, alice = world["admin"], world["alice"]
    project = world["a"]["project_id"]
    r = admin.put(f"/os-quota-sets/{project}", {"quota_set": {"volumes": 1, "gigabytes": 5}})
    assert r.status_code == 200, r.text
    assert "id" not in r.json()["quota_set"] and r.json()["quota_set"]["volumes"] == 1
    assert alice.put(f"/os-quota-sets/{project}", {"quota_set": {"volumes": 9}}).status_code == 403
    assert alice.post("/volumes", {"volume": {"size": 6}}).status_code == 413
    v = alice.create(2)
    r = alice.post("/volumes", {"volume": {"size": 1}})
    assert r.status_code == 413, r.text
    alice.wait(v["id"], "available")
    usage = alice.get(f"/os-quota-sets/{project}", params={"usage": "True"}).json()["quota_set"]
    assert usage["volumes"] == {"limit": 1, "in_use": 1, "reserved": 0, "allocated": 0}
    assert usage["gigabytes"]["in_use"] == 2 and "volumes___DEFAULT__" in usage
    absolute = alice.get("/limits").json()["limits"]["absolute"]
    assert (absolute["maxTotalVolumes"], absolute["totalVolumesUsed"], absolute["totalGigabytesUsed"]) == (1, 1, 2)
    assert world["bob"].get(f"/os-quota-sets/{project}").status_code == 403
    assert admin.delete(f"/os-quota-sets/{project}").status_code == 200
    assert alice.get(f"/os-quota-sets/{project}").json()["quota_set"]["volumes"] == 10


def test_volume_types_are_admins_and_a_type_in_use_stays(world: dict[str, Any]) -> None:
    admin, alice = world["admin"], world["alice"]
    assert alice.post("/types", {"volume_type": {"name": "fast"}}).status_code == 403
    r = admin.post("/types", {"volume_type": {"name": "fast", "extra_specs": {"tier": "ssd"}}})
    assert r.status_code == 200, r.text
    fast = r.json()["volume_type"]
    assert admin.post("/types", {"volume_type": {"name": "fast"}}).status_code == 409
    assert {t["name"] for t in alice.get("/types").json()["volume_types"]} == {"__DEFAULT__", "fast"}
    assert alice.get("/types/default").json()["volume_type"]["name"] == "__DEFAULT__"
    assert admin.post(f"/types/{fast['id']}/extra_specs", {"extra_specs": {"x": "1"}}).json() == \
        {"extra_specs": {"x": "1"}}
    assert alice.get(f"/types/{fast['id']}/extra_specs").json()["extra_specs"] == {"tier": "ssd", "x": "1"}
    v = alice.create(1, volume_type="fast")
    assert v["volume_type"] == "fast"
    alice.wait(v["id"], "available")
    r = admin.delete(f"/types/{fast['id']}")
    assert r.status_code == 400 and "in use" in r.json()["badRequest"]["message"]
    assert alice.delete(f"/volumes/{v['id']}").status_code == 202
    alice.wait(v["id"], "gone")
    assert admin.delete(f"/types/{fast['id']}").status_code == 202
    assert admin.get(f"/types/{fast['id']}").status_code == 404


def test_zones_and_extensions(world: dict[str, Any]) -> None:
    alice = world["alice"]
    assert alice.get("/os-availability-zone").json() == {
        "availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": True}}]}
    aliases = {e["alias"] for e in alice.get("/extensions").json()["extensions"]}
    assert {"os-quota-sets", "os-volume-actions"} <= aliases


def test_upload_to_an_image_and_who_may(world: dict[str, Any], services: Services) -> None:
    # qcow2 here (a few hundred KB on the wire); a raw upload carries every byte of the volume (1 GiB),
    # which the interop stage's test_volume_upload does, and copy_to's contract test covers.
    alice, api = world["alice"], world["api"]
    v = alice.create(1)
    alice.wait(v["id"], "available")
    path = f"/volumes/{v['id']}/action"
    r = alice.post(path, {"os-volume_upload_image": {"image_name": "from-qcow2", "disk_format": "qcow2"}})
    assert r.status_code == 202, r.text
    body = r.json()["os-volume_upload_image"]
    assert (body["id"], body["status"], body["disk_format"], body["image_name"]) == (
        v["id"], "uploading", "qcow2", "from-qcow2")
    alice.wait(v["id"], "available")
    image = api.http.get(f"/image/v2/images/{body['image_id']}", headers=api.headers(alice.token)).json()
    assert (image["status"], image["disk_format"], image["name"]) == ("active", "qcow2", "from-qcow2")
    assert image["visibility"] == "private" and image["owner"] == world["a"]["project_id"]
    assert image["virtual_size"] == 1 << 30
    assert alice.post(path, {"os-volume_upload_image": {"image_name": "x", "disk_format": "vmdk"}}).status_code == 400
    assert alice.post(path, {"os-volume_upload_image": {"disk_format": "raw"}}).status_code == 400
    assert world["bob"].post(path, {"os-volume_upload_image": {"image_name": "x"}}).status_code == 404
    assert world["rita"].post(path, {"os-volume_upload_image": {"image_name": "x"}}).status_code == 403
    # Nothing was queued by the refused ones: the project has exactly the one image.
    mine = api.http.get("/image/v2/images", params={"owner": world["a"]["project_id"]},
                        headers=api.headers(alice.token)).json()["images"]
    assert [i["name"] for i in mine] == ["from-qcow2"]
