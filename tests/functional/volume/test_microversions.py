"""Cinder's microversions: each delta we serve, at the version before it and at its own (3.40's revert
is in ``test_revert.py``, 3.42's in-use extend in ``test_attach.py``, 3.44's os-complete in
``test_attachments_api.py``, 3.46's volume from Nova's image in ``test_boot_from_volume.py``).

The table of what each version changes (and which ones touch APIs we do not serve) is in
``docs/reference/volume-api.md``.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest

from tests.functional.volume.test_volume_api import Cinder
from yunstack.api.volume import filters


def _available(alice: Cinder, **extra: Any) -> dict[str, Any]:
    v = alice.create(1, **extra)
    return alice.wait(v["id"], "available")


def test_beyond_the_maximum_is_406_and_a_malformed_version_400(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    r = alice.at("3.49").get("/volumes")
    assert r.status_code == 406 and "maximum is 3.48" in r.text
    assert alice.at("4.0").get("/volumes").status_code == 406
    assert alice.at("3.x").get("/volumes").status_code == 400
    r = alice.at("3.48").get("/volumes")
    assert r.status_code == 200 and r.headers["openstack-api-version"] == "volume 3.48"
    assert alice.at("latest").get("/volumes").headers["openstack-api-version"] == "volume 3.48"


def test_upload_takes_visibility_and_protected_from_3_1(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    v = _available(alice)
    path = f"/volumes/{v['id']}/action"
    public = {"os-volume_upload_image": {"image_name": "p", "disk_format": "qcow2", "visibility": "public",
                                         "protected": True}}
    # 3.1: a member may not publish (Cinder's upload_public policy is admin only).
    assert alice.at("3.1").post(path, public).status_code == 403
    # 3.0: the keys are not read: a private, unprotected image.
    r = alice.at("3.0").post(path, public)
    assert r.status_code == 202, r.text
    body = r.json()["os-volume_upload_image"]
    assert (body["visibility"], body["protected"]) == ("private", False)
    alice.wait(v["id"], "available")
    shared = {"os-volume_upload_image": {"image_name": "s", "disk_format": "qcow2", "visibility": "shared"}}
    r = alice.at("3.1").post(path, shared)
    assert r.status_code == 202 and r.json()["os-volume_upload_image"]["visibility"] == "shared"
    alice.wait(v["id"], "available")


def test_bootable_filter_is_strict_from_3_2(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    v = _available(alice)
    # Before 3.2 any value but a spelling of false means true.
    assert alice.at("3.1").get("/volumes", params={"bootable": "maybe"}).json()["volumes"] == []
    assert [x["id"] for x in alice.at("3.1").get("/volumes", params={"bootable": "FALSE"}).json()["volumes"]] == [
        v["id"]]
    assert alice.at("3.2").get("/volumes", params={"bootable": "maybe"}).status_code == 400
    assert [x["id"] for x in alice.at("3.2").get("/volumes", params={"bootable": "0"}).json()["volumes"]] == [v["id"]]


def test_glance_metadata_filter_from_3_4_and_group_id_filter_from_3_10(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    v = _available(alice)
    glance = {"glance_metadata": "{'image_name': 'cirros'}"}
    assert [x["id"] for x in alice.at("3.3").get("/volumes", params=glance).json()["volumes"]] == [v["id"]]
    assert alice.at("3.4").get("/volumes", params=glance).json()["volumes"] == []
    group = {"group_id": "6f4d0c49-0000-4000-8000-000000000000"}
    assert [x["id"] for x in alice.at("3.9").get("/volumes", params=group).json()["volumes"]] == [v["id"]]
    assert alice.at("3.10").get("/volumes", params=group).json()["volumes"] == []


def test_volume_summary_from_3_12(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    _available(alice)
    alice.create(2)
    assert alice.at("3.11").get("/volumes/summary").status_code == 404
    r = alice.at("3.12").get("/volumes/summary")
    assert r.status_code == 200, r.text
    assert r.json() == {"volume-summary": {"total_count": 2, "total_size": 3}}
    assert world["bob"].at("3.12").get("/volumes/summary").json()["volume-summary"]["total_count"] == 0


def test_group_id_from_3_13_and_provider_id_for_admins_from_3_21(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    admin: Cinder = world["admin"]
    v = _available(alice)
    path = f"/volumes/{v['id']}"
    assert "group_id" not in alice.at("3.12").get(path).json()["volume"]
    assert alice.at("3.13").get(path).json()["volume"]["group_id"] is None
    assert "group_id" in alice.at("3.13").get("/volumes/detail").json()["volumes"][0]
    assert "group_id" in alice.at("3.13").post("/volumes", {"volume": {"size": 1}}).json()["volume"]
    # Cinder looks a group up from 3.13 (none exists here) and ignores the key before.
    grouped = {"volume": {"size": 1, "group_id": "6f4d0c49-0000-4000-8000-000000000000"}}
    assert alice.at("3.13").post("/volumes", grouped).status_code == 404
    assert alice.at("3.12").post("/volumes", grouped).status_code == 202
    cg = {"volume": {"size": 1, "consistencygroup_id": "6f4d0c49-0000-4000-8000-000000000000"}}
    assert alice.at("3.0").post("/volumes", cg).status_code == 404
    assert "provider_id" not in admin.at("3.20").get(path).json()["volume"]
    assert admin.at("3.21").get(path).json()["volume"]["provider_id"] is None
    assert "provider_id" not in alice.at("3.21").get(path).json()["volume"]


def test_snapshots_group_snapshot_id_3_14_metadata_filter_3_22_sort_by_name_3_30(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    v = _available(alice)
    made = []
    for name, tier in (("b", "gold"), ("a", "silver")):
        r = alice.post("/snapshots", {"snapshot": {"volume_id": v["id"], "name": name, "metadata": {"tier": tier}}})
        assert r.status_code == 202, r.text
        made.append(alice.wait(r.json()["snapshot"]["id"], "available", "snapshots"))
    path = f"/snapshots/{made[0]['id']}"
    assert "group_snapshot_id" not in alice.at("3.13").get(path).json()["snapshot"]
    assert alice.at("3.14").get(path).json()["snapshot"]["group_snapshot_id"] is None
    assert "group_snapshot_id" in alice.at("3.14").get("/snapshots/detail").json()["snapshots"][0]
    assert "group_snapshot_id" not in alice.at("3.14").get("/snapshots").json()["snapshots"][0]
    gold = {"metadata": "{'tier': 'gold'}"}
    assert len(alice.at("3.21").get("/snapshots", params=gold).json()["snapshots"]) == 2  # not read before 3.22
    assert [s["name"] for s in alice.at("3.22").get("/snapshots", params=gold).json()["snapshots"]] == ["b"]
    assert alice.at("3.29").get("/snapshots", params={"sort": "name:asc"}).status_code == 400
    r = alice.at("3.30").get("/snapshots", params={"sort": "name:asc"})
    assert [s["name"] for s in r.json()["snapshots"]] == ["a", "b"]


def test_metadata_etags_from_3_15(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    v = _available(alice, metadata={"k": "v"})
    path = f"/volumes/{v['id']}/metadata"
    assert "etag" not in alice.at("3.14").get(path).headers
    r = alice.at("3.15").get(path)
    assert r.json() == {"metadata": {"k": "v"}}
    etag = r.headers["etag"]
    assert etag == hashlib.md5(b'{"metadata": {"k": "v"}}').hexdigest()
    stale = {"If-Match": '"0123"'}
    assert alice.at("3.15").put(path, {"metadata": {"k": "w"}}, headers=stale).status_code == 412
    assert alice.at("3.15").put(f"{path}/k", {"meta": {"k": "w"}}, headers=stale).status_code == 412
    assert alice.at("3.14").put(path, {"metadata": {"k": "x"}}, headers=stale).status_code == 200  # not read
    etag = alice.at("3.15").get(path).headers["etag"]
    r = alice.at("3.15").put(path, {"metadata": {"k": "y"}}, headers={"If-Match": etag})
    assert r.status_code == 200 and r.json()["metadata"] == {"k": "y"}


def test_delete_reads_force_from_3_23(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    admin: Cinder = world["admin"]
    v = _available(alice)
    r = admin.post(f"/volumes/{v['id']}/action", {"os-reset_status": {"status": "attaching"}})
    assert r.status_code == 202, r.text
    assert admin.at("3.22").delete(f"/volumes/{v['id']}", params={"force": "true"}).status_code == 400
    assert admin.at("3.23").delete(f"/volumes/{v['id']}", params={"force": "true"}).status_code == 202
    alice.wait(v["id"], "gone")


def test_attachments_exist_from_3_27(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    assert alice.at("3.26").get("/attachments").status_code == 404
    assert alice.at("3.27").get("/attachments").json() == {"attachments": []}


def test_unknown_list_filters_are_400_from_3_31_for_users_and_list_nothing_for_admins(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    admin: Cinder = world["admin"]
    v = _available(alice, name="data")
    ids = [v["id"]]
    for path, key in (("/volumes", "volumes"), ("/volumes/detail", "volumes"), ("/snapshots", "snapshots"),
                      ("/attachments", "attachments")):
        # Before 3.31 an unknown key is ignored.
        assert alice.at("3.30").get(path, params={"colour": "red"}).status_code == 200
        r = alice.at("3.31").get(path, params={"colour": "red", "status": "available"})
        assert r.status_code == 400 and "Invalid filters colour are found in query options" in r.text, r.text
        # all_tenants is forgiven (clients send it unasked); paging and sorting are no filters.
        r = alice.at("3.31").get(path, params={"all_tenants": "0", "limit": "5", "sort_dir": "asc"})
        assert r.status_code == 200, r.text
        # An admin may send any key; one no list filters on matches nothing.
        r = admin.at("3.31").get(path, params={"all_tenants": "1", "colour": "red"})
        assert r.status_code == 200 and r.json()[key] == []
    assert [x["id"] for x in alice.at("3.31").get("/volumes", params={"name": "data"}).json()["volumes"]] == ids
    assert alice.at("3.31").get("/volumes", params={"project_id": alice.project_id}).status_code == 400
    assert [x["id"] for x in admin.at("3.31").get("/volumes", params={"all_tenants": "1", "name": "data"})
            .json()["volumes"]] == ids


def test_resource_filters_from_3_33(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    assert alice.at("3.32").get("/resource_filters").status_code == 404
    r = alice.at("3.33").get("/resource_filters")
    assert r.status_code == 200, r.text
    found = {f["resource"]: f["filters"] for f in r.json()["resource_filters"]}
    assert {"volume", "snapshot", "attachment"} <= set(found)
    assert "name~" in found["volume"] and "status" in found["snapshot"]
    assert "attach_status" in found["attachment"]
    r = alice.at("3.33").get(f"/{alice.project_id}/resource_filters", params={"resource": "snapshot"})
    assert [f["resource"] for f in r.json()["resource_filters"]] == ["snapshot"]
    assert alice.at("3.33").get("/resource_filters", params={"resource": "pool"}).json() == {"resource_filters": []}


def test_like_filters_name_tilde_and_3_34_reads_a_key_configured_only_as_like(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    alice: Cinder = world["alice"]
    mine = [_available(alice, name=name)["id"] for name in ("web-data", "db-DATA", "logs")]
    r = alice.at("3.34").get("/volumes", params={"name~": "data", "sort": "name:asc"})
    assert [x["id"] for x in r.json()["volumes"]] == [mine[1], mine[0]]  # any case, anywhere in the name
    assert len(alice.at("3.30").get("/volumes", params={"name~": "data"}).json()["volumes"]) == 3  # not read
    snap = alice.post("/snapshots", {"snapshot": {"volume_id": mine[2], "name": "nightly-1"}}).json()["snapshot"]
    alice.wait(snap["id"], "available", "snapshots")
    assert [x["id"] for x in alice.at("3.34").get("/snapshots", params={"name~": "night"}).json()["snapshots"]] == [
        snap["id"]]
    # A deployment that configures only "name~": the exact key is valid from 3.34 (Cinder's rule).
    monkeypatch.setitem(filters.RESOURCE_FILTERS, "volume", ("name~", "status"))
    assert alice.at("3.33").get("/volumes", params={"name": "logs"}).status_code == 400
    r = alice.at("3.34").get("/volumes", params={"name": "logs"})
    assert r.status_code == 200 and [x["id"] for x in r.json()["volumes"]] == [mine[2]]
    assert alice.at("3.33").get("/volumes", params={"name~": "logs"}).status_code == 200


def test_summary_metadata_from_3_36(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    _available(alice, metadata={"tier": "gold", "app": "web"})
    _available(alice, metadata={"tier": "silver"})
    _available(alice, metadata={"tier": "gold"})
    assert "metadata" not in alice.at("3.35").get("/volumes/summary").json()["volume-summary"]
    summary = alice.at("3.36").get("/volumes/summary").json()["volume-summary"]
    assert summary["total_count"] == 3
    assert {k: sorted(v) for k, v in summary["metadata"].items()} == {"tier": ["gold", "silver"], "app": ["web"]}


def test_limits_of_another_project_for_admins_from_3_39(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    admin: Cinder = world["admin"]
    _available(alice)
    of_alpha = {"project_id": alice.project_id}
    assert admin.at("3.38").get("/limits", params=of_alpha).json()["limits"]["absolute"]["totalVolumesUsed"] == 0
    assert admin.at("3.39").get("/limits", params=of_alpha).json()["limits"]["absolute"]["totalVolumesUsed"] == 1
    bob: Cinder = world["bob"]  # a user's project_id is ignored
    assert bob.at("3.39").get("/limits", params=of_alpha).json()["limits"]["absolute"]["totalVolumesUsed"] == 0


def test_snapshots_show_user_id_from_3_41(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    v = _available(alice)
    r = alice.at("3.41").post("/snapshots", {"snapshot": {"volume_id": v["id"]}})
    assert r.status_code == 202, r.text
    snap = r.json()["snapshot"]
    user_id = alice.get(f"/volumes/{v['id']}").json()["volume"]["user_id"]
    assert snap["user_id"] == user_id
    alice.wait(snap["id"], "available", "snapshots")
    path = f"/snapshots/{snap['id']}"
    assert "user_id" not in alice.at("3.40").get(path).json()["snapshot"]
    assert alice.at("3.41").get(path).json()["snapshot"]["user_id"] == user_id
    assert alice.at("3.41").get("/snapshots/detail").json()["snapshots"][0]["user_id"] == user_id
    assert "user_id" not in alice.at("3.41").get("/snapshots").json()["snapshots"][0]  # not the summary list


def test_lists_count_what_matches_with_count_from_3_45(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    admin: Cinder = world["admin"]
    made = [_available(alice, name=f"v{i}", metadata={"tier": "gold" if i < 2 else "silver"})["id"]
            for i in range(3)]
    counted = {"with_count": "true"}
    # Before 3.45 with_count is a filter like any other: a user's is 400, an admin's lists nothing.
    assert alice.at("3.44").get("/volumes", params=counted).status_code == 400
    assert admin.at("3.44").get("/volumes", params={**counted, "all_tenants": "1"}).json()["volumes"] == []
    assert alice.at("3.45").get("/volumes", params={"with_count": "maybe"}).status_code == 400
    r = alice.at("3.45").get("/volumes", params={**counted, "limit": "1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3 and len(body["volumes"]) == 1 and body["volumes_links"]
    assert "count" not in alice.at("3.45").get("/volumes").json()
    gold = alice.at("3.45").get("/volumes/detail", params={**counted, "metadata": "{'tier': 'gold'}"}).json()
    assert gold["count"] == 2 and sorted(v["id"] for v in gold["volumes"]) == sorted(made[:2])
    # Cinder's next link with a count: the limit is within the count, even on the last page.
    last = alice.at("3.45").get("/volumes", params={**counted, "limit": "2", "offset": "2"}).json()
    assert len(last["volumes"]) == 1 and last["count"] == 3 and last["volumes_links"]
    assert "volumes_links" not in alice.at("3.45").get("/volumes", params={"limit": "2", "offset": "2"}).json()
    r = alice.post("/snapshots", {"snapshot": {"volume_id": made[0]}})
    alice.wait(r.json()["snapshot"]["id"], "available", "snapshots")
    assert alice.at("3.44").get("/snapshots", params=counted).status_code == 400
    snaps = alice.at("3.45").get("/snapshots/detail", params=counted).json()
    assert snaps["count"] == 1 and len(snaps["snapshots"]) == 1
    assert alice.at("3.45").get("/snapshots", params={**counted, "status": "error"}).json() == {
        "snapshots": [], "count": 0}


def test_a_backup_source_is_looked_up_from_3_47_and_none_exists(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    backup = "6f4d0c49-0000-4000-8000-000000000000"
    assert alice.at("3.46").post("/volumes", {"volume": {"size": 1, "backup_id": backup}}).status_code == 202
    r = alice.at("3.47").post("/volumes", {"volume": {"size": 1, "backup_id": backup}})
    assert r.status_code == 404 and f"Backup {backup} could not be found" in r.text, r.text
    assert alice.at("3.47").post("/volumes", {"volume": {"size": 1, "backup_id": "nope"}}).status_code == 400


def test_volumes_show_shared_targets_and_service_uuid_from_3_48(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    v = _available(alice)
    other = _available(alice)
    path = f"/volumes/{v['id']}"
    assert not {"shared_targets", "service_uuid"} & set(alice.at("3.47").get(path).json()["volume"])
    shown = alice.at("3.48").get(path).json()["volume"]
    assert shown["shared_targets"] is False
    assert str(uuid.UUID(shown["service_uuid"])) == shown["service_uuid"]
    # One volume service (the storage host's backend) serves both.
    assert alice.at("3.48").get(f"/volumes/{other['id']}").json()["volume"]["service_uuid"] == shown["service_uuid"]
    assert all("service_uuid" in x for x in alice.at("3.48").get("/volumes/detail").json()["volumes"])
    assert "service_uuid" in alice.at("3.48").post("/volumes", {"volume": {"size": 1}}).json()["volume"]
