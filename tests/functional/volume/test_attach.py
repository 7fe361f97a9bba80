"""Nova's os-volume_attachments with the real agent, the real `file` backend and the fake compute driver.

What a client sees: the attachment at once, the volume ``attaching`` then ``in-use`` once the
compute host reports the disk in the guest, the server listing it, a detach back to
``available``, and a deleted server releasing its volumes.  The hot-plug into a real QEMU is the
driver's (``tests/contract``) and the real CLI's (``tests/integration``) business.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from tests.functional.compute.test_live_migration import B, OtherHost
from tests.functional.compute.test_servers import body, until, wait_for
from tests.functional.volume.test_volume_api import Cinder
from yunstack.db.tables import volume as vt
from yunstack.wiring import Services


def _setup(w: dict[str, Any]) -> tuple[Nova, Cinder, str, str]:
    alice: Nova = w["alice"]
    cinder = Cinder(w["api"], alice.token, w["a"]["project_id"])
    r = alice.post("/servers", body(w, "vm"))
    assert r.status_code == 202, r.text
    server = r.json()["server"]["id"]
    wait_for(alice, server, "ACTIVE")
    volume = cinder.create(1, name="data")["id"]
    cinder.wait(volume, "available")
    return alice, cinder, server, volume


def _attach(nova: Nova, server: str, volume: str) -> Any:
    return nova.post(f"/servers/{server}/os-volume_attachments", {"volumeAttachment": {"volumeId": volume}})


def test_attach_shows_everywhere_and_detach_frees_the_volume(servers_world: dict[str, Any]) -> None:
    alice, cinder, server, volume = _setup(servers_world)
    # vda is the root, then the config drive if there is one, then the volumes.
    has_drive = alice.get(f"/servers/{server}").json()["server"]["config_drive"] == "True"
    device = "/dev/vdc" if has_drive else "/dev/vdb"
    r = _attach(alice, server, volume)
    assert r.status_code == 200, r.text
    assert r.json()["volumeAttachment"] == {"id": volume, "serverId": server, "volumeId": volume, "device": device}
    shown = cinder.wait(volume, "in-use")
    (att,) = shown["attachments"]
    assert (att["server_id"], att["volume_id"], att["device"]) == (server, volume, device)
    assert att["attached_at"] is not None
    server_view = wait_for(alice, server, "ACTIVE")
    assert server_view["os-extended-volumes:volumes_attached"] == [{"id": volume}]
    assert alice.at("2.3").get(f"/servers/{server}").json()["server"][
        "os-extended-volumes:volumes_attached"] == [{"id": volume, "delete_on_termination": False}]
    listed = alice.get(f"/servers/{server}/os-volume_attachments").json()["volumeAttachments"]
    assert [a["volumeId"] for a in listed] == [volume]
    assert alice.get(f"/servers/{server}/os-volume_attachments/{volume}").status_code == 200
    # In use: not deleted, not attached twice.
    r = cinder.delete(f"/volumes/{volume}")
    assert r.status_code == 400 and "in-use" in r.json()["badRequest"]["message"]
    assert _attach(alice, server, volume).status_code == 400
    r = alice.delete(f"/servers/{server}/os-volume_attachments/{volume}")
    assert r.status_code == 202, r.text
    assert cinder.wait(volume, "available")["attachments"] == []
    wait_for(alice, server, "ACTIVE")
    assert alice.get(f"/servers/{server}/os-volume_attachments").json()["volumeAttachments"] == []
    assert alice.delete(f"/servers/{server}/os-volume_attachments/{volume}").status_code == 404


def test_deleting_the_server_frees_its_volumes(servers_world: dict[str, Any]) -> None:
    alice, cinder, server, volume = _setup(servers_world)
    assert _attach(alice, server, volume).status_code == 200
    cinder.wait(volume, "in-use")
    wait_for(alice, server, "ACTIVE")
    assert alice.delete(f"/servers/{server}").status_code == 204
    assert cinder.wait(volume, "available")["attachments"] == []
    assert cinder.delete(f"/volumes/{volume}").status_code == 202
    cinder.wait(volume, "gone")


def test_another_project_or_a_reader_cannot_attach_and_bad_bodies_are_400(servers_world: dict[str, Any]) -> None:
    alice, cinder, server, volume = _setup(servers_world)
    bob: Nova = servers_world["bob"]
    rita: Nova = servers_world["rita"]
    assert _attach(bob, server, volume).status_code == 404  # bob's view: no such server
    bobs = Cinder(servers_world["api"], bob.token)
    r = bob.post("/servers", body(servers_world, "bobs-vm"))
    bob_server = r.json()["server"]["id"]
    wait_for(bob, bob_server, "ACTIVE")
    assert _attach(bob, bob_server, volume).status_code == 404  # alice's volume: not found for bob
    assert bobs.get(f"/volumes/{volume}").status_code == 404
    assert _attach(rita, server, volume).status_code == 403
    for bad in ({"volumeId": "not-a-uuid"}, {}, {"volumeId": volume, "extra": 1}, {"volumeId": volume,
                                                                                    "device": "sdb!"}):
        r = alice.post(f"/servers/{server}/os-volume_attachments", {"volumeAttachment": bad})
        assert r.status_code == 400, (bad, r.text)
    assert cinder.get(f"/volumes/{volume}").json()["volume"]["status"] == "available"  # nothing reserved


def test_a_volume_attaches_to_a_server_on_another_host_through_an_nbd_export_and_the_export_ends_with_it(
        servers_world: dict[str, Any], far_host: OtherHost) -> None:
    """The storage host (A, the cloud's own) serves the volume with a real qemu-storage-daemon; the
    server's host (B, a second agent on the fake driver) gets where and the key in its attach step."""
    alice: Nova = servers_world["alice"]
    cinder = Cinder(servers_world["api"], alice.token, servers_world["a"]["project_id"])
    services: Services = servers_world["api"].services
    admin = servers_world["admin"].at("2.30")
    r = alice.post("/servers", body(servers_world, "far"))
    assert r.status_code == 202, r.text
    server = r.json()["server"]["id"]
    wait_for(alice, server, "ACTIVE")
    assert admin.get(f"/servers/{server}").json()["server"]["OS-EXT-SRV-ATTR:host"] == B
    volume = cinder.create(1, name="far-data")["id"]
    cinder.wait(volume, "available")
    r = _attach(alice, server, volume)
    assert r.status_code == 200, r.text
    shown = cinder.wait(volume, "in-use")
    assert shown["attachments"][0]["host_name"] == B
    with services.db() as s:
        att = s.scalar(select(vt.VolumeAttachment).where(vt.VolumeAttachment.volume_id == volume))
        assert att is not None and att.connection is not None
        connection = dict(att.connection)
    assert connection["host"] == "127.0.0.1" and connection["export"] == volume and len(connection["psk_key"]) == 64
    # Host B's guest has the volume over NBD, with the key; the API never shows the key.
    assert far_host.agent is not None
    (disk,) = [d for d in far_host.driver._guests[server].volumes if d.serial == volume]  # the fake's record
    assert disk.nbd is not None and disk.nbd.port == connection["port"]
    assert disk.nbd.psk_key == connection["psk_key"]
    assert connection["psk_key"] not in alice.get(f"/servers/{server}/os-volume_attachments").text
    assert connection["psk_key"] not in cinder.get(f"/volumes/{volume}").text
    assert _serving(volume)
    # The storage host's agent restarts: the export it started serves on untouched.  Its daemon
    # killed (a reboot): the next agent starts it again on the same port with the same key, so
    # the guest's NBD client reconnects.
    pid = _daemon(volume)
    servers_world["host"].start()
    assert _daemon(volume) == pid
    os.kill(pid, signal.SIGKILL)
    until(lambda: not _serving(volume))
    servers_world["host"].start()
    until(lambda: _serving(volume))
    assert f'"port":"{connection["port"]}"' in _argv(volume)
    keys = services.config.server.state_path / "exports" / volume / "keys.psk"
    assert keys.read_text().strip().endswith(connection["psk_key"])
    # Detach: the guest lets go, then the storage host stops serving.
    assert alice.delete(f"/servers/{server}/os-volume_attachments/{volume}").status_code == 202
    cinder.wait(volume, "available")
    until(lambda: not _serving(volume))
    # Delete the server with the volume attached: the export goes too.
    assert _attach(alice, server, volume).status_code == 200
    cinder.wait(volume, "in-use")
    assert _serving(volume)
    assert alice.delete(f"/servers/{server}").status_code == 204
    cinder.wait(volume, "available")
    until(lambda: not _serving(volume))



def _argv(volume_id: str) -> str:
    """The command line of the qemu-storage-daemon that serves the volume ("" when none does)."""
    found = subprocess.run(["pgrep", "-a", "-f", "qemu-storage-daemon"], capture_output=True, text=True).stdout
    return next((line for line in found.splitlines() if f'"name":"{volume_id}"' in line), "")


def _serving(volume_id: str) -> bool:
    """Whether a qemu-storage-daemon serves the volume (its export is named after the volume)."""
    return bool(_argv(volume_id))


def _daemon(volume_id: str) -> int:
    return int(_argv(volume_id).split()[0])


def test_an_attach_the_host_cannot_make_leaves_the_volume_available_with_why(
        servers_world: dict[str, Any], services: Services, tmp_path: Path) -> None:
    alice, cinder, server, volume = _setup(servers_world)
    # The volume's file vanished from the storage host behind the cloud's back.
    (services.config.volumes_path / "volumes" / f"{volume}.qcow2").unlink()
    assert _attach(alice, server, volume).status_code == 200
    shown = cinder.wait(volume, "available")
    assert shown["attachments"] == []
    server_view = wait_for(alice, server, "ACTIVE")  # the server is as it was, not in ERROR
    assert server_view["os-extended-volumes:volumes_attached"] == []
    actions = alice.get(f"/servers/{server}/os-instance-actions").json()["instanceActions"]
    attach = next(a for a in actions if a["action"] == "attach_volume")
    assert attach["message"] == "Error"
    events = servers_world["admin"].get(f"/servers/{server}/os-instance-actions/{attach['request_id']}").json()
    (event,) = events["instanceAction"]["events"]
    assert event["result"] == "Error" and volume in event["traceback"]  # the host's reason, for admins


def test_an_in_use_volume_grows_through_its_server_running_or_stopped_from_3_42(servers_world: dict[str, Any],
                                                                                services: Services) -> None:
    alice, cinder, server, volume = _setup(servers_world)
    assert _attach(alice, server, volume).status_code == 200
    cinder.wait(volume, "in-use")
    wait_for(alice, server, "ACTIVE")
    path = f"/volumes/{volume}/action"
    # Before 3.42 Cinder grows only an available volume (400, its message).
    r = cinder.at("3.41").post(path, {"os-extend": {"new_size": 2}})
    assert r.status_code == 400 and "status must be '{'status': 'available'}' to extend, currently in-use" in r.text
    assert cinder.get(f"/volumes/{volume}").json()["volume"]["status"] == "in-use"
    cinder = cinder.at("3.42")
    assert cinder.post(path, {"os-extend": {"new_size": 1}}).status_code == 400
    assert cinder.post(path, {"os-extend": {"new_size": 2}}).status_code == 202
    grown = cinder.wait(volume, "in-use")
    assert grown["size"] == 2 and grown["attachments"]
    wait_for(alice, server, "ACTIVE")
    # A stopped guest does not have the file open: the host's backend grows it.
    assert alice.post(f"/servers/{server}/action", {"os-stop": None}).status_code == 202
    wait_for(alice, server, "SHUTOFF")
    assert cinder.post(path, {"os-extend": {"new_size": 3}}).status_code == 202
    assert cinder.wait(volume, "in-use")["size"] == 3
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U",
                                      str(services.config.volumes_path / "volumes" / f"{volume}.qcow2")],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 3 << 30
