"""Boot from volume (Nova's block_device_mapping_v2 to volumes) with the real agent, the real `file`
backend and the fake compute driver.

What a client sees: the server waits for the volumes it boots with, then runs with its root on a
volume (``image`` is ``""``), the volumes ``in-use`` and listed on the server; deleting the server
deletes the volumes marked ``delete_on_termination`` and frees the others, which boot again; bad
mappings are 400 with the reason and create nothing; a volume that cannot be made fails the build
with its reason.  The guest that really boots from a volume is the real CLI's test
(``tests/integration/test_openstack_cli_volumes.py``).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from tests.functional.compute.test_live_migration import B, OtherHost
from tests.functional.compute.test_servers import until, wait_for
from tests.functional.volume.test_attach import _serving
from tests.functional.volume.test_volume_api import Cinder
from yunstack.db.tables import volume as vt


def _clients(w: dict[str, Any]) -> tuple[Nova, Cinder]:
    alice: Nova = w["alice"]
    return alice, Cinder(w["api"], alice.token, w["a"]["project_id"])


def _server(w: dict[str, Any], name: str, bdms: list[dict[str, Any]], image: str = "", **extra: Any) -> dict[str, Any]:
    server: dict[str, Any] = {"name": name, "imageRef": image, "flavorRef": "42", "networks": "none",
                              "block_device_mapping_v2": bdms, **extra}
    return {"server": server}


def _root_from_image(w: dict[str, Any], size: int = 1, delete: bool = True) -> dict[str, Any]:
    return {"uuid": w["image"], "source_type": "image", "destination_type": "volume", "boot_index": 0,
            "volume_size": size, "delete_on_termination": delete}


def _volumes(alice: Nova, server: str) -> list[str]:
    listed = alice.get(f"/servers/{server}/os-volume_attachments").json()["volumeAttachments"]
    return [a["volumeId"] for a in listed]


def test_a_server_boots_from_a_volume_made_from_an_image_and_takes_it_along_when_deleted(
        servers_world: dict[str, Any]) -> None:
    alice, cinder = _clients(servers_world)
    r = alice.post("/servers", _server(servers_world, "bfv", [_root_from_image(servers_world)]))
    assert r.status_code == 202, r.text
    server_id = r.json()["server"]["id"]
    server = wait_for(alice, server_id, "ACTIVE")
    assert server["image"] == ""  # as Nova shows a volume-backed server
    (volume_id,) = _volumes(alice, server_id)
    volume = cinder.wait(volume_id, "in-use")
    assert volume["bootable"] == "true" and volume["size"] == 1
    assert volume["volume_image_metadata"]["image_id"] == servers_world["image"]
    (att,) = volume["attachments"]
    # No disk of the host's: the config drive (if any) is vda, the root volume comes next.
    first = "vdb" if server["config_drive"] == "True" else "vda"
    assert (att["server_id"], att["device"]) == (server_id, f"/dev/{first}")
    assert alice.at("2.3").get(f"/servers/{server_id}").json()["server"][
        "os-extended-volumes:volumes_attached"] == [{"id": volume_id, "delete_on_termination": True}]
    # The root volume stays with its server; actions that need a host's root disk say why.
    r = alice.delete(f"/servers/{server_id}/os-volume_attachments/{volume_id}")
    assert r.status_code == 400 and "root device" in r.json()["badRequest"]["message"]
    for action in ({"createImage": {"name": "snap"}}, {"rescue": None}, {"resize": {"flavorRef": "84"}},
                   {"rebuild": {"imageRef": servers_world["image"]}}, {"shelve": None}):
        r = alice.post(f"/servers/{server_id}/action", action)
        assert r.status_code == 409, (action, r.text)
        assert "boots from a volume" in r.json()["conflictingRequest"]["message"]
    assert alice.delete(f"/servers/{server_id}").status_code == 204
    cinder.wait(volume_id, "gone")  # delete_on_termination


def test_a_kept_volume_boots_again_with_its_data_after_its_server_is_deleted(
        servers_world: dict[str, Any]) -> None:
    alice, cinder = _clients(servers_world)
    volume_id = cinder.create(1, imageRef=servers_world["image"], name="root")["id"]
    cinder.wait(volume_id, "available")
    data = cinder.create(1, name="data")["id"]
    cinder.wait(data, "available")
    bdms = [{"uuid": volume_id, "source_type": "volume", "destination_type": "volume", "boot_index": 0},
            {"uuid": data, "source_type": "volume", "destination_type": "volume", "boot_index": -1},
            {"source_type": "blank", "destination_type": "volume", "volume_size": 1, "delete_on_termination": True}]
    r = alice.post("/servers", _server(servers_world, "keeper", bdms))
    assert r.status_code == 202, r.text
    first = r.json()["server"]["id"]
    wait_for(alice, first, "ACTIVE")
    volumes = _volumes(alice, first)
    assert volumes[:2] == [volume_id, data] and len(volumes) == 3
    blank = volumes[2]
    devices = [cinder.wait(v, "in-use")["attachments"][0]["device"] for v in volumes]
    assert devices == sorted(devices) and len(set(devices)) == 3  # root, then the others as listed
    assert alice.delete(f"/servers/{first}").status_code == 204
    cinder.wait(volume_id, "available")
    cinder.wait(data, "available")
    cinder.wait(blank, "gone")
    # The same volume boots the next server.
    r = alice.post("/servers", _server(servers_world, "again", bdms[:1]))
    assert r.status_code == 202, r.text
    second = r.json()["server"]["id"]
    wait_for(alice, second, "ACTIVE")
    assert _volumes(alice, second) == [volume_id]
    assert alice.delete(f"/servers/{second}").status_code == 204
    cinder.wait(volume_id, "available")


def test_bad_mappings_are_400_with_the_reason_and_create_nothing(servers_world: dict[str, Any]) -> None:
    alice, cinder = _clients(servers_world)
    plain = cinder.create(1, name="not-bootable")["id"]
    cinder.wait(plain, "available")
    bob_volume = Cinder(servers_world["api"], servers_world["bob"].token, servers_world["b"]["project_id"]).create(
        1, imageRef=servers_world["image"])["id"]
    image = servers_world["image"]
    cases = [
        ([{"source_type": "blank", "destination_type": "local", "volume_size": 1, "boot_index": -1}], image,
         "ephemeral and swap disks are not offered"),
        ([{"uuid": image, "source_type": "image", "destination_type": "volume", "boot_index": 0}], "",
         "non-zero size"),
        ([{"uuid": plain, "source_type": "volume", "destination_type": "volume", "boot_index": 0}], "",
         "is not bootable"),
        ([{"uuid": bob_volume, "source_type": "volume", "destination_type": "volume", "boot_index": 0}], "",
         "failed to get volume"),
        ([{"uuid": plain, "source_type": "volume", "boot_index": 1}], "", "Missing imageRef"),
        ([_root_from_image(servers_world), _root_from_image(servers_world)], "", "exactly one disk"),
        ([_root_from_image(servers_world)], image, "exactly one disk"),
        ([{"uuid": image, "source_type": "kernel", "destination_type": "volume"}], image, "source_type"),
        ([{"uuid": str(uuid.uuid4()), "source_type": "image", "destination_type": "volume", "boot_index": 0,
           "volume_size": 1}], "", "failed to get image"),
        ([{"uuid": str(uuid.uuid4()), "source_type": "snapshot", "destination_type": "volume", "boot_index": 0}],
         "", "failed to get snapshot"),
        ([{"uuid": image, "source_type": "image", "destination_type": "volume", "boot_index": "x",
           "volume_size": 1}], "", "boot_index"),
    ]
    before = alice.get("/servers").json()["servers"]
    volumes_before = cinder.get("/volumes").json()["volumes"]
    for bdms, image_ref, why in cases:
        r = alice.post("/servers", _server(servers_world, "bad", bdms, image=image_ref))
        assert r.status_code == 400, (bdms, r.text)
        assert why in r.json()["badRequest"]["message"], (why, r.text)
    assert alice.get("/servers").json()["servers"] == before
    assert cinder.get("/volumes").json()["volumes"] == volumes_before
    assert cinder.get(f"/volumes/{plain}").json()["volume"]["status"] == "available"


def test_a_volume_that_cannot_be_made_fails_the_build_with_its_reason(servers_world: dict[str, Any]) -> None:
    alice, cinder = _clients(servers_world)
    root = {**_root_from_image(servers_world), "volume_type": "no-such-type"}
    r = alice.post("/servers", _server(servers_world, "doomed", [root]))
    assert r.status_code == 202, r.text
    server = wait_for(alice, r.json()["server"]["id"], "ERROR")
    assert "block device mapping" in server["fault"]["message"] and "no-such-type" in server["fault"]["message"]
    assert cinder.get("/volumes").json()["volumes"] == []  # nothing was made of it
    assert alice.delete(f"/servers/{server['id']}").status_code == 204


def test_an_image_of_a_stopped_volume_backed_server_records_snapshots_that_boot_again_and_make_volumes_from_3_46(
        servers_world: dict[str, Any]) -> None:
    alice, cinder = _clients(servers_world)
    data = {"source_type": "blank", "destination_type": "volume", "volume_size": 1, "boot_index": -1}
    r = alice.post("/servers", _server(servers_world, "origin", [_root_from_image(servers_world, delete=False),
                                                                 data]))
    assert r.status_code == 202, r.text
    server_id = r.json()["server"]["id"]
    wait_for(alice, server_id, "ACTIVE")
    root, extra = _volumes(alice, server_id)
    # Running: its guest has the volumes open, so neither createImage nor a forced snapshot.
    r = alice.post(f"/servers/{server_id}/action", {"createImage": {"name": "img"}})
    assert r.status_code == 409 and "stop it" in r.json()["conflictingRequest"]["message"]
    r = cinder.post("/snapshots", {"snapshot": {"volume_id": root, "force": True}})
    assert r.status_code == 400 and "not stopped" in r.json()["badRequest"]["message"]
    assert alice.post(f"/servers/{server_id}/action", {"os-stop": None}).status_code == 202
    wait_for(alice, server_id, "SHUTOFF")
    r = alice.at("2.45").post(f"/servers/{server_id}/action", {"createImage": {"name": "img", "metadata": {"k": "v"}}})
    assert r.status_code == 202, r.text
    image_id = r.json()["image_id"]
    image = servers_world["api"].http.get(f"/image/v2/images/{image_id}", headers={"X-Auth-Token": alice.token}).json()
    assert image["status"] == "active" and image["size"] == 0 and image["k"] == "v"
    recorded = json.loads(image["block_device_mapping"])
    assert [(m["boot_index"], m["source_type"]) for m in recorded] == [(0, "snapshot"), (None, "snapshot")]
    for m in recorded:
        cinder.wait(m["snapshot_id"], "available", what="snapshots")
    assert {cinder.get(f"/snapshots/{m['snapshot_id']}").json()["snapshot"]["volume_id"] for m in recorded} == {
        root, extra}
    # Booting the image makes the volumes again from the snapshots.
    r = alice.post("/servers", {"server": {"name": "copy", "imageRef": image_id, "flavorRef": "42",
                                           "networks": "none"}})
    assert r.status_code == 202, r.text
    copy = r.json()["server"]["id"]
    assert wait_for(alice, copy, "ACTIVE")["image"] == ""
    made = _volumes(alice, copy)
    assert len(made) == 2 and not set(made) & {root, extra}
    assert {cinder.get(f"/volumes/{v}").json()["volume"]["snapshot_id"] for v in made} == {
        m["snapshot_id"] for m in recorded}
    # Cinder 3.46: a volume created from that image is made from its boot volume's snapshot; before,
    # from the image's bytes (none).
    boot = next(m["snapshot_id"] for m in recorded if m["boot_index"] == 0)
    r = cinder.at("3.45").post("/volumes", {"volume": {"size": 1, "imageRef": image_id}})
    assert r.status_code == 202, r.text
    assert cinder.wait(r.json()["volume"]["id"], "available")["snapshot_id"] is None
    r = cinder.at("3.46").post("/volumes", {"volume": {"imageRef": image_id}})
    assert r.status_code == 202, r.text
    from_snapshot = cinder.wait(r.json()["volume"]["id"], "available")
    assert (from_snapshot["snapshot_id"], from_snapshot["size"]) == (boot, 1)
    # Cinder looks the snapshot up at every version: once it is gone, the image makes no volume (404).
    assert cinder.delete(f"/snapshots/{boot}").status_code == 202
    cinder.wait(boot, "gone", what="snapshots")
    r = cinder.at("3.45").post("/volumes", {"volume": {"size": 1, "imageRef": image_id}})
    assert r.status_code == 404 and f"boot volume snapshot id:{boot} not found" in r.text, r.text



def test_a_stopped_server_does_not_start_while_a_snapshot_of_its_volume_is_taken(
        servers_world: dict[str, Any]) -> None:
    alice, _cinder = _clients(servers_world)
    r = alice.post("/servers", _server(servers_world, "snapped", [_root_from_image(servers_world)]))
    server_id = r.json()["server"]["id"]
    wait_for(alice, server_id, "ACTIVE")
    assert alice.post(f"/servers/{server_id}/action", {"os-stop": None}).status_code == 202
    wait_for(alice, server_id, "SHUTOFF")
    (volume_id,) = _volumes(alice, server_id)
    services = servers_world["api"].services
    now = datetime.now(UTC)
    with services.db.begin() as s:  # the storage host has not taken it yet
        s.add(vt.Snapshot(id=str(uuid.uuid4()), volume_id=volume_id, project_id=servers_world["a"]["project_id"],
                          user_id="u", size=1, status="creating", progress="0%", meta={}, created_at=now,
                          updated_at=now))
    r = alice.post(f"/servers/{server_id}/action", {"os-start": None})
    assert r.status_code == 409 and volume_id in r.json()["conflictingRequest"]["message"]


def test_a_server_on_another_host_than_the_storage_host_boots_from_its_export(
        servers_world: dict[str, Any], far_host: OtherHost) -> None:
    """Host A (the cloud's own) keeps the volumes and serves them with a real qemu-storage-daemon; the
    server lands on host B (A is disabled), whose spawn gets the NBD connection of its root volume."""
    alice, cinder = _clients(servers_world)
    admin = servers_world["admin"].at("2.30")
    r = alice.post("/servers", _server(servers_world, "far-root", [_root_from_image(servers_world)]))
    assert r.status_code == 202, r.text
    server_id = r.json()["server"]["id"]
    wait_for(alice, server_id, "ACTIVE")
    assert admin.get(f"/servers/{server_id}").json()["server"]["OS-EXT-SRV-ATTR:host"] == B
    (volume_id,) = _volumes(alice, server_id)
    assert cinder.wait(volume_id, "in-use")["attachments"][0]["host_name"] == B
    root = far_host.driver._guests[server_id].spec.root  # the fake's record of what it booted
    assert root.serial == volume_id and root.nbd is not None and root.boot_index == 0
    assert _serving(volume_id)
    # A forced snapshot would freeze a file the export holds open: refused, saying why.
    assert alice.post(f"/servers/{server_id}/action", {"os-stop": None}).status_code == 202
    wait_for(alice, server_id, "SHUTOFF")
    r = cinder.post("/snapshots", {"snapshot": {"volume_id": volume_id, "force": True}})
    assert r.status_code == 400 and "another host" in r.json()["badRequest"]["message"]
    assert alice.delete(f"/servers/{server_id}").status_code == 204
    cinder.wait(volume_id, "gone")
    until(lambda: not _serving(volume_id))
