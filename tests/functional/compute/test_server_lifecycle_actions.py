"""rebuild, lock/unlock, rescue/unrescue, shelve/shelveOffload/unshelve through the API, on both DBs.

The agent is the real one on the FakeDriver (see test_servers): these tests see the states a client
sees, the instance actions Nova records, and what the guest went through on the (fake) host.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_server_interfaces import net_of, network
from tests.functional.compute.test_servers import IM, action, boot, until, wait_for
from yunstack.compute import operations
from yunstack.db.tables import compute as t
from yunstack.protocol import ShelveOffloadArgs

# The server tests' fixtures: a host agent on the FakeDriver, two projects and an image.
world, host, qcow2 = servers.world, servers.host, servers.qcow2

_UPDATE_VIEW = {"id", "name", "status", "image", "flavor", "user_id", "tenant_id", "created", "updated",
                "progress", "metadata", "links", "addresses", "hostId", "OS-DCF:diskConfig", "accessIPv4",
                "accessIPv6", "adminPass"}


def second_image(world: dict[str, Any], name: str = "other") -> str:
    admin = world["admin"]
    h = {"X-Auth-Token": admin.token}
    api = world["api"]
    r = api.http.post(f"{IM}/images", json={"name": name, "disk_format": "qcow2", "container_format": "bare",
                                             "visibility": "public"}, headers=h)
    assert r.status_code == 201, r.text
    image_id = str(r.json()["id"])
    r = api.http.put(f"{IM}/images/{image_id}/file", content=world["qcow2"].read_bytes(),
                     headers={**h, "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    return image_id


@pytest.fixture
def w(world: dict[str, Any], qcow2: Any) -> dict[str, Any]:
    return {**world, "qcow2": qcow2}


def events(nova: Any, sid: str, rid: str) -> list[tuple[str, str]]:
    shown = nova.get(f"/servers/{sid}/os-instance-actions/{rid}").json()["instanceAction"]
    return [(e["event"], e["result"]) for e in shown["events"]]


def row(w: dict[str, Any], sid: str) -> t.Instance:
    with w["api"].services.db() as s:
        found = s.get(t.Instance, sid)
        assert found is not None
        return found


# -- rebuild -----------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["2.1", "2.9", "2.26", "2.47"])
def test_rebuild_answers_202_with_the_update_view_and_a_password_then_boots_the_new_image(
        w: dict[str, Any], version: str) -> None:
    nova, driver = w["alice"].at(version), w["host"].driver
    sid = boot(w)["id"]
    other = second_image(w)
    r = action(nova, sid, {"rebuild": {"imageRef": other, "name": "reborn", "metadata": {"k": "v"},
                                       "adminPass": "s3cret-pass", "accessIPv4": "192.0.2.7",
                                       "preserve_ephemeral": False}})
    assert r.status_code == 202, r.text
    assert r.headers["location"].endswith(f"/compute/v2.1/servers/{sid}")
    got = r.json()["server"]
    later = {"2.9": {"locked"}, "2.26": {"locked", "description", "tags"}, "2.47": {"locked", "description", "tags"}}
    assert set(got) == _UPDATE_VIEW | later.get(version, set())
    assert got["status"] == "REBUILD" and got["adminPass"] == "s3cret-pass"
    assert got["image"]["id"] == other and got["name"] == "reborn" and got["metadata"] == {"k": "v"}
    assert got["accessIPv4"] == "192.0.2.7"
    if version == "2.47":
        assert got["flavor"]["original_name"] == "m1.nano"
    server = wait_for(nova, sid, "ACTIVE")
    assert server["image"]["id"] == other and server["OS-EXT-STS:power_state"] == 1
    guest = driver._guests[sid]
    assert guest.disk_generation == 1 and guest.spec.root.source.name == other
    assert len([line for line in guest.console if "YUNSTACK-READY" in line]) == 2  # booted again
    assert events(nova, sid, r.headers["x-openstack-request-id"]) == [("compute_rebuild_instance", "Success")]


def test_a_rebuild_without_a_password_gets_one_and_a_stopped_server_stays_shutoff(w: dict[str, Any]) -> None:
    nova, driver = w["alice"], w["host"].driver
    sid = boot(w)["id"]
    action(nova, sid, {"os-stop": None})
    wait_for(nova, sid, "SHUTOFF")
    r = action(nova, sid, {"rebuild": {"imageRef": w["image"]}})
    assert r.status_code == 202, r.text
    assert len(r.json()["server"]["adminPass"]) >= 8
    server = wait_for(nova, sid, "SHUTOFF")
    assert server["OS-EXT-STS:power_state"] == 4 and server["OS-EXT-STS:vm_state"] == "stopped"
    assert driver._guests[sid].disk_generation == 1


def test_rebuild_recovers_a_server_in_error(w: dict[str, Any]) -> None:
    nova, driver = w["alice"], w["host"].driver
    sid = boot(w)["id"]
    with w["api"].services.db.begin() as s:
        found = s.get(t.Instance, sid)
        assert found is not None
        found.vm_state = "error"
    del driver._guests[sid]  # and its guest is gone from the host
    assert action(nova, sid, {"rebuild": {"imageRef": w["image"]}}).status_code == 202
    assert wait_for(nova, sid, "ACTIVE")["OS-EXT-STS:power_state"] == 1
    assert sid in driver._guests


def test_bad_rebuilds_are_400_and_missing_servers_404_as_tempest_expects(w: dict[str, Any]) -> None:
    nova = w["alice"]
    sid = boot(w)["id"]
    missing_image = "5a0bd7b7-2b0e-4c5d-9e9e-0d2f1c3b4a59"
    r = action(nova, sid, {"rebuild": {"imageRef": missing_image}})
    assert r.status_code == 400 and r.json()["badRequest"]["message"] == "Cannot find image for rebuild"
    for bad in ({}, {"imageRef": ""}, {"imageRef": w["image"], "key_name": "k"},
                {"imageRef": w["image"], "accessIPv4": "not-an-ip"}, {"imageRef": w["image"], "name": ""},
                {"imageRef": w["image"], "preserve_ephemeral": "yes"}, None, "image"):
        assert action(nova, sid, {"rebuild": bad}).status_code == 400, bad
    assert action(nova, sid, {"rebuild": {"imageRef": w["image"], "description": "d"}}).status_code == 400
    assert action(nova.at("2.19"), sid, {"rebuild": {"imageRef": w["image"], "description": "d"}}
                  ).status_code == 202
    wait_for(nova, sid, "ACTIVE")
    assert nova.at("2.19").get(f"/servers/{sid}").json()["server"]["description"] == "d"
    gone = "0d6cb1b4-9b7d-4b9a-8f39-6d4c7c1b0e11"
    assert action(nova, gone, {"rebuild": {"imageRef": w["image"]}}).status_code == 404
    assert action(w["bob"], sid, {"rebuild": {"imageRef": w["image"]}}).status_code == 404
    assert action(w["rita"], sid, {"rebuild": {"imageRef": w["image"]}}).status_code == 403
    nova.delete(f"/servers/{sid}")
    until(lambda: nova.get(f"/servers/{sid}").status_code == 404)
    assert action(nova, sid, {"rebuild": {"imageRef": w["image"]}}).status_code == 404


def test_a_rebuild_while_a_task_runs_is_409(w: dict[str, Any]) -> None:
    nova, host = w["alice"], w["host"]
    sid = boot(w)["id"]
    host.stop()  # nothing carries the stop out: its task stays
    assert action(nova, sid, {"os-stop": None}).status_code == 202
    r = action(nova, sid, {"rebuild": {"imageRef": w["image"]}})
    assert r.status_code == 409 and "task_state powering-off" in r.json()["conflictingRequest"]["message"]
    host.start()
    wait_for(nova, sid, "SHUTOFF")


# -- lock --------------------------------------------------------------------------------------

def test_a_locked_server_refuses_its_owner_every_change_but_not_an_admin(w: dict[str, Any]) -> None:
    nova, admin = w["alice"], w["admin"]
    sid = boot(w)["id"]
    r = action(nova, sid, {"lock": None})
    assert r.status_code == 202 and r.content == b""
    assert nova.at("2.9").get(f"/servers/{sid}").json()["server"]["locked"] is True
    assert "locked" not in nova.get(f"/servers/{sid}").json()["server"]
    for payload in ({"os-stop": None}, {"reboot": {"type": "HARD"}}, {"rebuild": {"imageRef": w["image"]}},
                    {"shelve": None}, {"rescue": None}, {"createImage": {"name": "x"}}):
        r = action(nova, sid, payload)
        assert r.status_code == 409, (payload, r.text)
        assert r.json()["conflictingRequest"]["message"] == f"Instance {sid} is locked"
    r = nova.delete(f"/servers/{sid}")
    assert r.status_code == 409 and "is locked" in r.text
    assert nova.post(f"/servers/{sid}/metadata", {"metadata": {"a": "b"}}).status_code == 409
    assert action(admin, sid, {"os-stop": None}).status_code == 202  # admins act on locked servers
    wait_for(nova, sid, "SHUTOFF")
    assert action(nova, sid, {"unlock": None}).status_code == 202  # the owner lifts its own lock
    assert nova.at("2.9").get(f"/servers/{sid}").json()["server"]["locked"] is False
    assert action(nova, sid, {"os-start": None}).status_code == 202
    wait_for(nova, sid, "ACTIVE")
    listed = [a["action"] for a in nova.get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]]
    assert listed[:4] == ["start", "unlock", "stop", "lock"]


def test_only_an_admin_lifts_a_lock_an_admin_set(w: dict[str, Any]) -> None:
    nova, admin = w["alice"], w["admin"]
    sid = boot(w)["id"]
    assert action(admin, sid, {"lock": None}).status_code == 202
    r = action(nova, sid, {"unlock": None})
    assert r.status_code == 403 and "unlock_override" in r.json()["forbidden"]["message"]
    assert action(admin, sid, {"unlock": None}).status_code == 202
    assert action(nova, sid, {"lock": None}).status_code == 202
    assert action(admin, sid, {"unlock": None}).status_code == 202  # an admin lifts any lock


def test_lock_is_404_for_another_project_and_403_for_a_reader(w: dict[str, Any]) -> None:
    sid = boot(w)["id"]
    for verb in ("lock", "unlock"):
        assert action(w["bob"], sid, {verb: None}).status_code == 404
        assert action(w["rita"], sid, {verb: None}).status_code == 403
    assert action(w["alice"], "0d6cb1b4-9b7d-4b9a-8f39-6d4c7c1b0e11", {"lock": None}).status_code == 404


# -- rescue ------------------------------------------------------------------------------------

def test_rescue_boots_the_rescue_image_and_unrescue_returns_to_the_own_disk(w: dict[str, Any]) -> None:
    nova, driver = w["alice"], w["host"].driver
    sid = boot(w)["id"]
    other = second_image(w, "rescuer")
    r = action(nova, sid, {"rescue": {"adminPass": "letmein", "rescue_image_ref": other}})
    assert r.status_code == 200 and r.json() == {"adminPass": "letmein"}
    server = wait_for(nova, sid, "RESCUE")
    assert server["OS-EXT-STS:vm_state"] == "rescued" and server["OS-EXT-STS:power_state"] == 1
    rescued = driver.rescued_from(sid)
    assert rescued is not None and rescued.name == other
    assert server["image"]["id"] == w["image"]  # the server's own image does not change
    for payload in ({"rescue": None}, {"os-stop": None}, {"rebuild": {"imageRef": w["image"]}}, {"shelve": None}):
        assert action(nova, sid, payload).status_code == 409, payload
    r = action(nova, sid, {"unrescue": None})
    assert r.status_code == 202 and r.content == b""
    wait_for(nova, sid, "ACTIVE")
    assert driver.rescued_from(sid) is None
    listed = nova.get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert [a["action"] for a in listed[:2]] == ["unrescue", "rescue"]
    assert events(nova, sid, listed[1]["request_id"]) == [("compute_rescue_instance", "Success")]


def test_rescue_without_arguments_uses_the_servers_image_and_makes_a_password(w: dict[str, Any]) -> None:
    nova, driver = w["alice"], w["host"].driver
    sid = boot(w)["id"]
    r = action(nova, sid, {"rescue": None})
    assert r.status_code == 200 and len(r.json()["adminPass"]) >= 8 and set(r.json()) == {"adminPass"}
    wait_for(nova, sid, "RESCUE")
    rescued = driver.rescued_from(sid)
    assert rescued is not None and rescued.name == w["image"]


def test_bad_rescues_are_400_and_unrescue_of_an_active_server_is_409(w: dict[str, Any]) -> None:
    nova = w["alice"]
    sid = boot(w)["id"]
    assert action(nova, sid, {"rescue": {"rescue_image_ref": "5a0bd7b7-2b0e-4c5d-9e9e-0d2f1c3b4a59"}}
                  ).status_code == 400
    assert action(nova, sid, {"rescue": {"bogus": 1}}).status_code == 400
    r = action(nova, sid, {"unrescue": None})
    assert r.status_code == 409 and "vm_state active" in r.text
    assert action(w["bob"], sid, {"rescue": None}).status_code == 404


# -- shelve ------------------------------------------------------------------------------------

def test_shelve_snapshots_then_offloads_and_unshelve_brings_the_server_back(w: dict[str, Any]) -> None:
    nova, admin, driver, api = w["alice"], w["admin"], w["host"].driver, w["api"]
    sid = boot(w, name="keeper")["id"]
    r = action(nova, sid, {"shelve": None})
    assert r.status_code == 202 and r.content == b""
    shelve_rid = r.headers["x-openstack-request-id"]
    server = wait_for(nova, sid, "SHELVED_OFFLOADED")
    assert server["OS-EXT-STS:vm_state"] == "shelved_offloaded" and server["OS-EXT-STS:power_state"] == 4
    assert admin.get(f"/servers/{sid}").json()["server"]["OS-EXT-SRV-ATTR:host"] is None
    assert sid not in driver._guests  # the guest and its files left the host
    image_id = row(w, sid).system_metadata["shelved_image_id"]  # type: ignore[index]
    image = api.http.get(f"{IM}/images/{image_id}", headers={"X-Auth-Token": nova.token}).json()
    assert image["name"] == "keeper-shelved" and image["status"] == "active" and image["instance_uuid"] == sid
    assert events(nova, sid, shelve_rid) == [("compute_shelve_instance", "Success"),
                                             ("compute_shelve_offload_instance", "Success")]
    for payload in ({"os-start": None}, {"reboot": {"type": "HARD"}}, {"shelve": None},
                    {"shelveOffload": None}, {"rescue": None}, {"os-getConsoleOutput": {}}):
        assert action(nova, sid, payload).status_code == 409, payload

    r = action(nova, sid, {"unshelve": None})
    assert r.status_code == 202 and r.content == b""
    server = wait_for(nova, sid, "ACTIVE")
    assert admin.get(f"/servers/{sid}").json()["server"]["OS-EXT-SRV-ATTR:host"] == driver.hostname
    assert driver._guests[sid].spec.root.source.name == image_id  # spawned from the shelve image
    assert server["image"]["id"] == w["image"]
    gone = api.http.get(f"{IM}/images/{image_id}", headers={"X-Auth-Token": nova.token})
    assert gone.status_code == 404  # the shelve image served and was deleted
    assert "shelved_image_id" not in (row(w, sid).system_metadata or {})
    assert events(nova, sid, r.headers["x-openstack-request-id"]) == [("compute_unshelve_instance", "Success")]


def test_a_shelved_servers_ports_stay_and_follow_it_back(w: dict[str, Any]) -> None:
    nova = w["alice"]
    net = network(w, "shelf", "10.21.0.0/24")
    sid = boot(w, networks=[{"uuid": net["id"]}])["id"]
    neutron = net_of(w)
    [port] = neutron.get("/ports", device_id=sid).json()["ports"]
    action(nova, sid, {"shelve": None})
    server = wait_for(nova, sid, "SHELVED_OFFLOADED")
    assert [a["addr"] for a in server["addresses"]["shelf"]] == [port["fixed_ips"][0]["ip_address"]]
    kept = neutron.get(f"/ports/{port['id']}").json()["port"]
    assert kept["device_id"] == sid and kept["status"] == "DOWN"
    action(nova, sid, {"unshelve": None})
    wait_for(nova, sid, "ACTIVE")
    back = neutron.get(f"/ports/{port['id']}").json()["port"]
    assert back["status"] == "ACTIVE" and back["mac_address"] == port["mac_address"]
    assert [n.mac for n in w["host"].driver._guests[sid].spec.nics] == [port["mac_address"]]


def test_deleting_a_shelved_server_frees_its_ports_and_its_image(w: dict[str, Any]) -> None:
    nova, api = w["alice"], w["api"]
    net = network(w, "shelf2", "10.22.0.0/24")
    sid = boot(w, networks=[{"uuid": net["id"]}])["id"]
    action(nova, sid, {"shelve": None})
    wait_for(nova, sid, "SHELVED_OFFLOADED")
    image_id = row(w, sid).system_metadata["shelved_image_id"]  # type: ignore[index]
    assert nova.delete(f"/servers/{sid}").status_code == 204
    assert nova.get(f"/servers/{sid}").status_code == 404
    assert net_of(w).get("/ports", device_id=sid).json()["ports"] == []
    assert api.http.get(f"{IM}/images/{image_id}", headers={"X-Auth-Token": nova.token}).status_code == 404


def test_shelve_of_a_stopped_server_and_shelve_actions_in_the_wrong_state(w: dict[str, Any]) -> None:
    nova = w["alice"]
    sid = boot(w)["id"]
    assert action(nova, sid, {"unshelve": None}).status_code == 409
    assert action(nova, sid, {"shelveOffload": None}).status_code == 409
    assert action(nova, sid, {"shelve": {"x": 1}}).status_code == 400
    action(nova, sid, {"os-stop": None})
    wait_for(nova, sid, "SHUTOFF")
    assert action(nova, sid, {"shelve": None}).status_code == 202
    wait_for(nova, sid, "SHELVED_OFFLOADED")
    assert action(w["bob"], sid, {"unshelve": None}).status_code == 404
    assert action(w["rita"], sid, {"unshelve": None}).status_code == 403
    assert action(nova, sid, {"unshelve": None}).status_code == 202
    wait_for(nova, sid, "ACTIVE")


def test_a_shelve_interrupted_by_a_restart_finishes_once_the_agent_is_back(w: dict[str, Any]) -> None:
    nova, host = w["alice"], w["host"]
    sid = boot(w)["id"]
    host.stop()
    assert action(nova, sid, {"shelve": None}).status_code == 202
    time.sleep(0.3)
    shown = nova.get(f"/servers/{sid}").json()["server"]
    assert shown["OS-EXT-STS:task_state"] == "shelving"  # queued in the database, nobody runs it
    host.start()
    wait_for(nova, sid, "SHELVED_OFFLOADED")
    host.stop()
    with w["api"].services.db.begin() as s:  # as if the agent died between the two steps
        found = s.get(t.Instance, sid)
        assert found is not None
        found.vm_state, found.host = "shelved", host.driver.hostname
        operations.queue_step(s, found, ShelveOffloadArgs(), "req-replayed", task="shelving_offloading")
    host.start()
    wait_for(nova, sid, "SHELVED_OFFLOADED")
    assert sid not in host.driver._guests


def test_deleting_a_server_whose_shelve_is_still_queued_leaves_no_shelve_image(w: dict[str, Any]) -> None:
    nova, host, api = w["alice"], w["host"], w["api"]
    sid = boot(w, name="short")["id"]
    host.stop()
    assert action(nova, sid, {"shelve": None}).status_code == 202
    image_id = row(w, sid).system_metadata["shelved_image_id"]  # type: ignore[index]
    assert nova.delete(f"/servers/{sid}").status_code == 204
    host.start()
    until(lambda: nova.get(f"/servers/{sid}").status_code == 404)
    assert api.http.get(f"{IM}/images/{image_id}", headers={"X-Auth-Token": nova.token}).status_code == 404
