"""Cinder's attachments API (3.27): records of attachments, and the attacks of another project on them.

A record made here plugs nothing (Nova's os-volume_attachments does that, ``test_attach.py``);
what a client sees is Cinder's: ``reserved`` without a connector, ``attaching`` with one and its
``connection_info``, the volume following, and ``available`` again once the record is deleted.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from tests.functional.compute.test_servers import body, wait_for
from tests.functional.volume.test_volume_api import Cinder
from yunstack.db.tables import volume as vt
from yunstack.wiring import Services

SERVER = "9b3f7e4a-1d2c-4b5e-8f60-7a8b9c0d1e2f"
CONNECTOR = {"host": "compute-1", "initiator": "iqn.1993-08.org.debian:01:cad181614cec", "platform": "x86_64",
             "os_type": "linux", "multipath": False, "mountpoint": "/dev/vdb", "mode": "rw"}


def _volume(c: Cinder) -> str:
    v = c.create(1)
    c.wait(v["id"], "available")
    return str(v["id"])


def _reserve(c: Cinder, volume: str, **extra: Any) -> Any:
    return c.post("/attachments", {"attachment": {"volume_uuid": volume, "instance_uuid": SERVER, **extra}})


def test_reserve_connect_list_and_delete(world: dict[str, Any], services: Services) -> None:
    alice: Cinder = world["alice"].at("3.27")
    volume = _volume(alice)
    r = _reserve(alice, volume)
    assert r.status_code == 200, r.text
    att = r.json()["attachment"]
    assert att == {"id": att["id"], "status": "reserved", "instance": SERVER, "volume_id": volume,
                   "attached_at": "", "detached_at": "", "attach_mode": "null", "connection_info": None}
    assert alice.get(f"/volumes/{volume}").json()["volume"]["status"] == "reserved"
    # A reserved volume takes no second reservation (it is not multiattach).
    assert _reserve(alice, volume).status_code == 400
    r = alice.put(f"/attachments/{att['id']}", {"attachment": {"connector": CONNECTOR}})
    assert r.status_code == 200, r.text
    updated = r.json()["attachment"]
    assert (updated["status"], updated["attach_mode"]) == ("attaching", "rw")
    info = updated["connection_info"]
    assert info["driver_volume_type"] == "local"
    assert info["data"]["device_path"] == str(services.config.volumes_path / "volumes" / f"{volume}.qcow2")
    assert (info["data"]["format"], info["data"]["access_mode"], info["data"]["volume_id"]) == ("qcow2", "rw", volume)
    shown = alice.get(f"/volumes/{volume}").json()["volume"]
    assert shown["status"] == "attaching" and shown["attachments"] == []  # Cinder lists attached ones only
    assert alice.get(f"/attachments/{att['id']}").json()["attachment"] == updated
    assert alice.get("/attachments").json() == {"attachments": [
        {"id": att["id"], "status": "attaching", "instance": SERVER, "volume_id": volume}]}
    assert alice.get("/attachments/detail").json()["attachments"] == [updated]
    for params in ({"volume_id": volume}, {"instance_id": SERVER}, {"status": "attaching"},
                   {"attach_status": "attaching"}):
        assert len(alice.get("/attachments", params=params).json()["attachments"]) == 1, params
    for params in ({"volume_id": SERVER}, {"instance_id": volume}, {"status": "attached"}):
        assert alice.get("/attachments", params=params).json()["attachments"] == [], params
    r = alice.delete(f"/attachments/{att['id']}")
    assert r.status_code == 200 and r.json() == {"attachments": []}
    assert alice.get(f"/volumes/{volume}").json()["volume"]["status"] == "available"
    assert alice.get(f"/attachments/{att['id']}").status_code == 404


def test_a_connector_at_create_attaches_at_once_and_a_read_only_volume_is_ro(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"].at("3.27")
    volume = _volume(alice)
    r = alice.post(f"/volumes/{volume}/action", {"os-update_readonly_flag": {"readonly": True}})
    assert r.status_code == 202, r.text
    connector = {k: v for k, v in CONNECTOR.items() if k != "mode"}
    r = _reserve(alice, volume, connector=connector)
    assert r.status_code == 200, r.text
    att = r.json()["attachment"]
    assert (att["status"], att["attach_mode"], att["connection_info"]["data"]["access_mode"]) == (
        "attaching", "ro", "ro")
    assert alice.get(f"/volumes/{volume}").json()["volume"]["status"] == "attaching"


def test_a_force_deleted_volume_takes_its_records_with_it(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"].at("3.27")
    admin: Cinder = world["admin"].at("3.27")
    volume = _volume(alice)
    att = _reserve(alice, volume, connector=CONNECTOR).json()["attachment"]
    assert alice.delete(f"/volumes/{volume}").status_code == 400  # attaching
    assert admin.post(f"/volumes/{volume}/action", {"os-force_delete": {}}).status_code == 202
    alice.wait(volume, "gone")
    assert alice.get(f"/attachments/{att['id']}").status_code == 404


def test_pages_of_attachments(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"].at("3.27")
    made = []
    for _ in range(3):
        r = _reserve(alice, _volume(alice))
        assert r.status_code == 200, r.text
        made.append(r.json()["attachment"]["id"])
    first = alice.get("/attachments", params={"limit": 2}).json()
    assert [a["id"] for a in first["attachments"]] == made[::-1][:2]
    (link,) = first["attachments_links"]
    assert link["rel"] == "next" and f"marker={made[1]}" in link["href"]
    rest = alice.get("/attachments", params={"limit": 2, "marker": made[1]}).json()
    assert [a["id"] for a in rest["attachments"]] == [made[0]] and "attachments_links" not in rest
    asc = alice.get("/attachments", params={"sort_dir": "asc", "offset": 1}).json()["attachments"]
    assert [a["id"] for a in asc] == made[1:]


@pytest.mark.parametrize(("payload", "why"), [
    ({"attachment": {"instance_uuid": SERVER}}, "volume_uuid"),
    ({"attachment": {"volume_uuid": "x"}}, "instance_uuid"),
    ({"attachment": {"volume_uuid": "x", "instance_uuid": SERVER, "connector": "host"}}, "connector"),
    ({"attachment": {"volume_uuid": "x", "instance_uuid": SERVER, "colour": "red"}}, "colour"),
    ({"volume_uuid": "x"}, "attachment"),
])
def test_bad_bodies_are_400_in_cinders_fault_format(world: dict[str, Any], payload: Any, why: str) -> None:
    r = world["alice"].at("3.27").post("/attachments", payload)
    assert r.status_code == 400, r.text
    assert why in r.json()["badRequest"]["message"]


def test_another_project_cannot_see_change_delete_or_attach_and_a_reader_cannot_write(
        world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"].at("3.27")
    bob: Cinder = world["bob"].at("3.27")
    rita: Cinder = world["rita"].at("3.27")
    volume = _volume(alice)
    att = _reserve(alice, volume).json()["attachment"]
    path = f"/attachments/{att['id']}"
    # Bob, of another project, tries alice's attachment every way, and to attach her volume.
    assert bob.get(path).status_code == 404
    assert bob.put(path, {"attachment": {"connector": CONNECTOR}}).status_code == 404
    assert bob.delete(path).status_code == 404
    assert bob.get("/attachments/detail").json()["attachments"] == []
    assert bob.get("/attachments", params={"volume_id": volume}).json()["attachments"] == []
    assert bob.get("/attachments", params={"all_tenants": "1"}).json()["attachments"] == []
    assert _reserve(bob, volume).status_code == 404
    assert _reserve(bob, _volume(bob)).status_code == 200  # his own volume, of course
    # Rita reads alice's project but cannot write.
    assert rita.get(path).status_code == 200
    assert rita.put(path, {"attachment": {"connector": CONNECTOR}}).status_code == 403
    assert rita.delete(path).status_code == 403
    assert _reserve(rita, _volume(alice)).status_code == 403
    # Nothing changed.
    assert alice.get(path).json()["attachment"]["status"] == "reserved"
    assert alice.get(f"/volumes/{volume}").json()["volume"]["status"] == "reserved"
    assert world["admin"].at("3.27").get("/attachments", params={"all_tenants": "1"}).json()["attachments"]


def test_novas_attachment_shows_with_its_status_and_is_detached_through_nova(servers_world: dict[str, Any]) -> None:
    w = servers_world
    alice: Nova = w["alice"]
    cinder = Cinder(w["api"], alice.token, w["a"]["project_id"], "3.27")
    r = alice.post("/servers", body(w, "vm"))
    assert r.status_code == 202, r.text
    server = r.json()["server"]["id"]
    wait_for(alice, server, "ACTIVE")
    volume = _volume(cinder)
    r = alice.post(f"/servers/{server}/os-volume_attachments", {"volumeAttachment": {"volumeId": volume}})
    assert r.status_code == 200, r.text
    shown = cinder.wait(volume, "in-use")
    (att,) = cinder.get("/attachments/detail", params={"volume_id": volume}).json()["attachments"]
    assert (att["id"], att["status"], att["instance"], att["attach_mode"]) == (
        shown["attachments"][0]["attachment_id"], "attached", server, "rw")
    assert att["attached_at"] and att["connection_info"]["driver_volume_type"] == "local"
    # A Cinder-made record for the server is not Nova's: it does not show on the server.
    other = _volume(cinder)
    assert _reserve(cinder, other).status_code == 200
    assert [a["volumeId"] for a in alice.get(f"/servers/{server}/os-volume_attachments").json()[
        "volumeAttachments"]] == [volume]
    # Over NBD from another host it shows the export, never its key.
    services: Services = w["api"].services
    nbd = {"host": "storage-1", "port": 10809, "export": volume, "psk_identity": "compute-2",
           "psk_key": "00" * 32}
    with services.db.begin() as s:
        s.execute(update(vt.VolumeAttachment).where(vt.VolumeAttachment.id == att["id"]).values(connection=nbd))
    info = cinder.get(f"/attachments/{att['id']}").json()["attachment"]["connection_info"]
    assert info["driver_volume_type"] == "nbd" and "psk_key" not in info["data"] and "00" * 32 not in str(info)
    assert (info["data"]["host"], info["data"]["port"], info["data"]["export_name"]) == ("storage-1", 10809, volume)
    with services.db.begin() as s:
        s.execute(update(vt.VolumeAttachment).where(vt.VolumeAttachment.id == att["id"]).values(connection=None))
    # Nova's attachment is detached through Nova, which unplugs it.
    assert cinder.delete(f"/attachments/{att['id']}").status_code == 400
    assert cinder.put(f"/attachments/{att['id']}", {"attachment": {"connector": CONNECTOR}}).status_code == 400
    assert cinder.get(f"/volumes/{volume}").json()["volume"]["status"] == "in-use"


def test_os_complete_from_3_44_makes_a_record_attached_and_the_volume_in_use(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    volume = _volume(alice)
    att = _reserve(alice.at("3.44"), volume, connector=CONNECTOR).json()["attachment"]
    action = f"/attachments/{att['id']}/action"
    assert alice.at("3.43").post(action, {"os-complete": None}).status_code == 404  # no such method before 3.44
    assert alice.at("3.44").post(action, {"os-nothing": None}).status_code == 400
    assert world["rita"].at("3.44").post(action, {"os-complete": None}).status_code == 403
    assert world["bob"].at("3.44").post(action, {"os-complete": None}).status_code == 404
    assert alice.at("3.44").get(f"/volumes/{volume}").json()["volume"]["status"] == "attaching"
    r = alice.at("3.44").post(action, {"os-complete": None})
    assert r.status_code == 204 and not r.content, r.text
    shown = alice.at("3.44").get(f"/attachments/{att['id']}").json()["attachment"]
    assert shown["status"] == "attached" and shown["attached_at"]
    volume_view = alice.get(f"/volumes/{volume}").json()["volume"]
    assert volume_view["status"] == "in-use"
    assert [a["attachment_id"] for a in volume_view["attachments"]] == [att["id"]]  # Cinder lists attached ones
    # A record plugs nothing: no guest can grow it (Cinder would ask Nova), and deleting it frees the volume.
    r = alice.at("3.42").post(f"/volumes/{volume}/action", {"os-extend": {"new_size": 2}})
    assert r.status_code == 409, r.text
    assert alice.get(f"/volumes/{volume}").json()["volume"]["status"] == "in-use"
    assert alice.at("3.44").delete(f"/attachments/{att['id']}").status_code == 200
    assert alice.get(f"/volumes/{volume}").json()["volume"]["status"] == "available"


def test_os_complete_leaves_a_volume_an_admin_set_to_error_alone(world: dict[str, Any]) -> None:
    alice: Cinder = world["alice"]
    volume = _volume(alice)
    att = _reserve(alice.at("3.44"), volume, connector=CONNECTOR).json()["attachment"]
    action = f"/attachments/{att['id']}/action"
    assert world["admin"].post(f"/volumes/{volume}/action",
                               {"os-reset_status": {"status": "error"}}).status_code == 202
    r = alice.at("3.44").post(action, {"os-complete": None})
    assert r.status_code == 400 and f"volume {volume} is error" in r.json()["badRequest"]["message"], r.text
    assert alice.get(f"/volumes/{volume}").json()["volume"]["status"] == "error"
