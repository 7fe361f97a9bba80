"""Nova servers through the in-process API with a host agent on the FakeDriver, on both DBs.

The agent is the real one (`agent.host.make_agent`), in its own thread, and it talks to the control
plane over the real agent protocol: ``HttpControlPlane`` with a host credential, against the ASGI
app (``/agent/v1``); only the driver is fake.  So these tests see what a client sees: 202 at once,
then the server's status moving as the agent reports back.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import Api, need
from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from tests.functional.compute.work import held_by_a_dead_agent
from tests.functional.identity.test_identity_api import make_member
from tests.wsdial import test_client_dialer
from yunstack.agent.agent import Agent
from yunstack.agent.host import make_agent
from yunstack.agent.http import HttpControlPlane
from yunstack.api.app import create_app
from yunstack.compute.fake import FakeDriver
from yunstack.db.tables import compute as t
from yunstack.identity.context import system_context
from yunstack.protocol import SpawnArgs
from yunstack.wiring import Services

IM = "/image/v2"
# Only a failing test waits this long: under a loaded CI machine a fake-driver operation can take seconds.
WAIT = 60.0  # only a failing test waits this long (a loaded 2-core CI machine has needed over 30 s)


class Host:
    """This host's agent on a FakeDriver, over HTTP; tests may restart it, or swap the driver."""

    def __init__(self, services: Services, driver: FakeDriver) -> None:
        self.services = services
        self.driver = driver
        self.agent: Agent | None = None
        self._client: TestClient | None = None

    def start(self, driver: FakeDriver | None = None) -> Agent:
        self.stop()
        self.driver = driver or self.driver
        name = self.services.config.host_name
        self._client = TestClient(create_app(self.services), base_url="http://127.0.0.1:8080")
        link = HttpControlPlane("http://127.0.0.1:8080", name, self.services.hostauth.issue(name),
                                client=self._client, dial=test_client_dialer(self._client))
        self.agent = make_agent(self.services.config, link, driver=self.driver)
        self.agent.poll_timeout = 2.0  # a stopped agent's last long-poll ends soon after the test
        self.agent.start()
        return self.agent

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        if self._client is not None:
            self._client.close()
            self._client = None


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(shutil.which("qemu-img") is not None, "qemu-img")
    path = tmp_path_factory.mktemp("disks") / "x.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True, capture_output=True)
    return path


@pytest.fixture
def host(services: Services) -> Iterator[Host]:
    h = Host(services, FakeDriver(hostname=services.config.host_name))
    h.start()
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def world(api: Api, host: Host, qcow2: Path) -> dict[str, Any]:
    api.services.flavors.ensure_defaults()
    admin = api.admin()
    a = make_member(api, admin, "alpha", "alice")
    b = make_member(api, admin, "beta", "bob")
    make_member(api, admin, "alpha", "rita", role="reader")
    h = api.headers(admin)
    r = api.http.post(f"{IM}/images", json={"name": "cirros", "disk_format": "qcow2", "container_format": "bare",
                                             "visibility": "public", "min_ram": 64}, headers=h)
    assert r.status_code == 201, r.text
    image_id = r.json()["id"]
    r = api.http.put(f"{IM}/images/{image_id}/file", content=qcow2.read_bytes(),
                     headers={**h, "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    return {"a": a, "b": b, "image": image_id, "host": host, "api": api,
            "admin": Nova(api, admin), "alice": Nova(api, api.login("alice", "alice-pw", "alpha")),
            "bob": Nova(api, api.login("bob", "bob-pw", "beta")),
            "rita": Nova(api, api.login("rita", "rita-pw", "alpha"))}


def body(world: dict[str, Any], name: str = "vm", flavor: str = "42", **extra: Any) -> dict[str, Any]:
    server: dict[str, Any] = {"name": name, "imageRef": world["image"], "flavorRef": flavor, "networks": "none"}
    server.update(extra)
    return {"server": server}


def wait_for(nova: Nova, server_id: str, status: str, timeout: float = WAIT) -> dict[str, Any]:
    """Poll GET until the server has ``status`` and no task; fails with the last body seen."""
    deadline = time.monotonic() + timeout
    server: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = nova.get(f"/servers/{server_id}")
        assert r.status_code == 200, r.text
        server = r.json()["server"]
        if server["status"] == status and server["OS-EXT-STS:task_state"] is None:
            return server
        time.sleep(0.05)
    raise AssertionError(f"server {server_id} is not {status} after {timeout}s: {server}")


def until(check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def boot(world: dict[str, Any], nova: Nova | None = None, name: str = "vm", **extra: Any) -> dict[str, Any]:
    nova = nova or world["alice"]
    r = nova.post("/servers", body(world, name, **extra))
    assert r.status_code == 202, r.text
    return wait_for(nova, r.json()["server"]["id"], "ACTIVE")


def action(nova: Nova, server_id: str, payload: Any) -> Any:
    return nova.post(f"/servers/{server_id}/action", payload)


def instance_count(services: Services) -> int:
    with services.db() as s:
        return len(s.scalars(select(t.Instance.id)).all())


# -- create ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["2.1", "2.47"])
def test_creating_a_server_answers_202_with_nova_shape_then_it_becomes_active(
        world: dict[str, Any], version: str) -> None:
    nova = world["alice"].at(version)
    r = nova.post("/servers", body(world))
    assert r.status_code == 202, r.text
    made = r.json()["server"]
    assert set(made) == {"id", "links", "adminPass", "OS-DCF:diskConfig", "security_groups"}
    assert made["OS-DCF:diskConfig"] == "MANUAL" and made["security_groups"] == [{"name": "default"}]
    assert len(made["adminPass"]) >= 8
    assert made["links"][0] == {"rel": "self", "href": f"http://127.0.0.1:8080/compute/v2.1/servers/{made['id']}"}
    assert r.headers["location"].endswith(f"/compute/v2.1/servers/{made['id']}")
    assert nova.get(f"/servers/{made['id']}").json()["server"]["status"] in ("BUILD", "ACTIVE")
    server = wait_for(nova, made["id"], "ACTIVE")
    assert server["OS-EXT-STS:power_state"] == 1 and server["progress"] == 100
    assert server["OS-SRV-USG:launched_at"] is not None
    assert [g.spec.id for g in world["host"].driver._guests.values()] == [made["id"]]


def test_the_image_pair_osc_sends_boots_and_conflicting_mappings_are_400(world: dict[str, Any]) -> None:
    nova, image = world["alice"], world["image"]
    bdm = [{"uuid": image, "boot_index": 0, "source_type": "image", "destination_type": "local",
            "delete_on_termination": True}]
    r = nova.post("/servers", body(world, block_device_mapping_v2=bdm))
    assert r.status_code == 202, r.text
    assert wait_for(nova, r.json()["server"]["id"], "ACTIVE")["image"]["id"] == image
    only_bdm = body(world)
    del only_bdm["server"]["imageRef"]
    only_bdm["server"]["block_device_mapping_v2"] = bdm
    assert nova.post("/servers", only_bdm).status_code == 202
    other = [{**bdm[0], "uuid": str(uuid.uuid4())}]
    assert nova.post("/servers", body(world, block_device_mapping_v2=other)).status_code == 400
    # An image and a boot volume both: two root disks (boot from volume: tests/functional/volume).
    volume = [{**bdm[0], "source_type": "volume", "destination_type": "volume"}]
    r = nova.post("/servers", body(world, block_device_mapping_v2=volume))
    assert r.status_code == 400 and "exactly one disk" in r.json()["badRequest"]["message"]
    no_image = body(world)
    del no_image["server"]["imageRef"]
    assert nova.post("/servers", no_image).status_code == 400
    r = nova.post("/servers", body(world, imageRef=str(uuid.uuid4())))  # a 400, as Nova answers it (not 404)
    assert r.status_code == 400 and r.json()["badRequest"]["message"] == "Can not find requested image"


def test_networks_none_and_auto_work_and_are_required_from_2_37(world: dict[str, Any]) -> None:
    nova = world["alice"]
    for networks in ("none", "auto"):
        assert nova.at("2.37").post("/servers", body(world, networks=networks)).status_code == 202
    missing = body(world)
    del missing["server"]["networks"]
    r = nova.at("2.37").post("/servers", missing)
    assert r.status_code == 400 and "'networks' is a required property" in r.json()["badRequest"]["message"]
    assert nova.at("2.47").post("/servers", missing).status_code == 400
    assert nova.at("2.36").post("/servers", missing).status_code == 202
    assert nova.post("/servers", missing).status_code == 202
    assert nova.post("/servers", body(world, networks="all")).status_code == 400


def test_min_and_max_count_make_numbered_servers_in_one_reservation(world: dict[str, Any]) -> None:
    nova = world["alice"]
    r = nova.post("/servers", body(world, "web", min_count=3, max_count=3))
    assert r.status_code == 202, r.text
    servers = nova.get("/servers/detail", name="^web").json()["servers"]
    assert sorted(s["name"] for s in servers) == ["web-1", "web-2", "web-3"]
    for s in servers:
        wait_for(nova, s["id"], "ACTIVE")
    r = nova.post("/servers", body(world, "res", min_count=2, return_reservation_id=True))
    assert r.status_code == 202 and r.json()["reservation_id"].startswith("r-")
    reserved = nova.get("/servers", reservation_id=r.json()["reservation_id"]).json()["servers"]
    assert sorted(s["name"] for s in reserved) == ["res-1", "res-2"]
    assert nova.post("/servers", body(world, min_count=3, max_count=2)).status_code == 400
    assert nova.post("/servers", body(world, min_count=0)).status_code == 400


# -- list and show -----------------------------------------------------------------------------

def test_listing_filters_by_name_regex_and_status_and_pages_with_links(world: dict[str, Any]) -> None:
    nova = world["alice"]
    ids = {name: boot(world, name=name)["id"] for name in ("app-1", "app-2", "db-1")}
    action(nova, ids["db-1"], {"os-stop": None})
    wait_for(nova, ids["db-1"], "SHUTOFF")
    assert sorted(s["name"] for s in nova.get("/servers", name="^app-").json()["servers"]) == ["app-1", "app-2"]
    assert [s["name"] for s in nova.get("/servers", name="b-1$").json()["servers"]] == ["db-1"]
    assert nova.get("/servers", name="(").status_code == 400
    assert [s["name"] for s in nova.get("/servers/detail", status="SHUTOFF").json()["servers"]] == ["db-1"]
    assert len(nova.get("/servers", status="active").json()["servers"]) == 2
    brief = nova.get("/servers").json()
    assert set(brief["servers"][0]) == {"id", "name", "links"} and "servers_links" not in brief
    page = nova.get("/servers", limit="2").json()
    assert len(page["servers"]) == 2
    href = page["servers_links"][0]["href"]
    assert page["servers_links"][0]["rel"] == "next" and f"marker={page['servers'][-1]['id']}" in href
    rest = nova.get("/servers", limit="2", marker=page["servers"][-1]["id"]).json()
    assert len(rest["servers"]) == 1 and "servers_links" not in rest
    seen = {s["id"] for s in page["servers"] + rest["servers"]}
    assert seen == set(ids.values())
    assert nova.get("/servers", marker=str(uuid.uuid4())).status_code == 400
    assert nova.get("/servers", limit="-1").status_code == 400


def test_all_tenants_lists_every_project_for_admins_only(world: dict[str, Any]) -> None:
    a = boot(world, world["alice"], name="alpha-vm")
    b = boot(world, world["bob"], name="beta-vm")
    everyone = {s["id"] for s in world["admin"].get("/servers", all_tenants="1").json()["servers"]}
    assert {a["id"], b["id"]} <= everyone
    beta = world["admin"].get("/servers/detail", all_tenants="true", project_id=world["b"]["project_id"])
    assert [s["id"] for s in beta.json()["servers"]] == [b["id"]]
    assert world["admin"].get("/servers").json()["servers"] == []
    mine = [s["id"] for s in world["alice"].get("/servers", all_tenants="1").json()["servers"]]
    assert mine == [a["id"]]


def test_show_follows_the_microversion(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    old = nova.at("2.1").get(f"/servers/{sid}").json()["server"]
    assert old["flavor"] == {"id": "42", "links": [{"rel": "bookmark",
                                                    "href": "http://127.0.0.1:8080/compute/flavors/42"}]}
    assert not {"locked", "description", "tags"} & set(old)
    assert old["image"]["id"] == world["image"] and old["tenant_id"] == world["a"]["project_id"]
    assert old["config_drive"] == "True" and old["addresses"] == {} and len(old["hostId"]) == 56
    assert nova.at("2.9").get(f"/servers/{sid}").json()["server"]["locked"] is False
    v219 = nova.at("2.19").get(f"/servers/{sid}").json()["server"]
    assert v219["description"] is None and "tags" not in v219
    assert nova.at("2.26").get(f"/servers/{sid}").json()["server"]["tags"] == []
    new = nova.at("2.47").get(f"/servers/{sid}").json()["server"]
    assert new["flavor"] == {"vcpus": 1, "ram": 128, "disk": 1, "ephemeral": 0, "swap": 0,
                             "original_name": "m1.nano", "extra_specs": {}}
    for version in ("2.1", "2.3", "2.47"):
        shown = nova.at(version).get(f"/servers/{sid}").json()["server"]
        listed = nova.at(version).get("/servers/detail").json()["servers"][0]
        for server in (shown, listed):
            assert not [k for k in server if k.startswith("OS-EXT-SRV-ATTR:")]
            assert "host_status" not in server
    admin = world["admin"].at("2.47").get(f"/servers/{sid}").json()["server"]
    assert admin["OS-EXT-SRV-ATTR:host"] == world["host"].driver.hostname
    assert admin["OS-EXT-SRV-ATTR:hostname"] == "vm"
    assert "OS-EXT-SRV-ATTR:reservation_id" not in world["admin"].get(f"/servers/{sid}").json()["server"]


def test_tags_given_at_create_show_from_2_26(world: dict[str, Any]) -> None:
    sid = boot(world, name="tagged", tags=["blue", "web"])["id"]
    assert sorted(world["alice"].at("2.26").get(f"/servers/{sid}").json()["server"]["tags"]) == ["blue", "web"]
    found = world["alice"].get("/servers", tags="blue").json()["servers"]
    assert [s["id"] for s in found] == [sid]


def test_update_renames_and_sets_a_description_from_2_19(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    r = nova.put(f"/servers/{sid}", {"server": {"name": "renamed"}})
    assert r.status_code == 200 and r.json()["server"]["name"] == "renamed"
    assert nova.put(f"/servers/{sid}", {"server": {"description": "d"}}).status_code == 400
    r = nova.at("2.19").put(f"/servers/{sid}", {"server": {"description": "the db"}})
    assert r.status_code == 200 and r.json()["server"]["description"] == "the db"
    r = nova.at("2.19").put(f"/servers/{sid}", {"server": {"description": None}})
    assert r.json()["server"]["description"] is None
    assert nova.put(f"/servers/{sid}", {"server": {"name": ""}}).status_code == 400
    assert nova.put(f"/servers/{sid}", {"server": {"bogus": 1}}).status_code == 400
    assert nova.get(f"/servers/{sid}").json()["server"]["name"] == "renamed"


# -- actions -----------------------------------------------------------------------------------

def test_power_actions_move_the_server_through_nova_states(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    guest = world["host"].driver._guests[sid]
    steps = [({"os-stop": None}, "SHUTOFF", 4), ({"os-start": None}, "ACTIVE", 1),
             ({"reboot": {"type": "SOFT"}}, "ACTIVE", 1), ({"reboot": {"type": "HARD"}}, "ACTIVE", 1),
             ({"pause": None}, "PAUSED", 3), ({"unpause": None}, "ACTIVE", 1),
             ({"suspend": None}, "SUSPENDED", 7), ({"resume": None}, "ACTIVE", 1)]
    for payload, status, power in steps:
        r = action(nova, sid, payload)
        assert r.status_code == 202, (payload, r.text)
        server = wait_for(nova, sid, status)
        assert server["OS-EXT-STS:power_state"] == power, payload
    assert guest.console.count(f"YUNSTACK-READY hostname=vm instance-id={sid}") == 4  # boot, start, 2 reboots
    assert action(nova, sid, {"reboot": {"type": "WARM"}}).status_code == 400
    assert action(nova, sid, {"reboot": {}}).status_code == 400
    assert action(nova, sid, {"os-stop": {"force": True}}).status_code == 400


def test_console_output_returns_the_last_lines_asked_for(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    for payload, status in (({"reboot": {"type": "HARD"}}, "ACTIVE"), ({"os-stop": None}, "SHUTOFF")):
        action(nova, sid, payload)
        wait_for(nova, sid, status)
    r = action(nova, sid, {"os-getConsoleOutput": {}})
    assert r.status_code == 200
    lines = r.json()["output"].splitlines()
    assert len(lines) == 3 and lines[0].startswith("YUNSTACK-READY") and lines[-1] == "reboot: Power down"
    assert action(nova, sid, {"os-getConsoleOutput": {"length": 1}}).json()["output"] == "reboot: Power down"
    assert action(nova, sid, {"os-getConsoleOutput": {"length": "2"}}).json()["output"].count("\n") == 1
    assert action(nova, sid, {"os-getConsoleOutput": {"length": -1}}).json()["output"].count("\n") == 2
    assert action(nova, sid, {"os-getConsoleOutput": {"length": -2}}).status_code == 400
    assert action(nova, sid, {"os-getConsoleOutput": {"length": "x"}}).status_code == 400
    assert action(nova, sid, {"os-getConsoleOutput": {"lines": 1}}).status_code == 400


def base_min_ram(world: dict[str, Any]) -> int:
    got = world["api"].http.get(f"{IM}/images/{world['image']}", headers={"X-Auth-Token": world["alice"].token})
    return int(got.json()["min_ram"])


@pytest.mark.parametrize("version", ["2.1", "2.45"])
def test_create_image_answers_202_with_location_and_the_image_becomes_active(
        world: dict[str, Any], version: str) -> None:
    nova, api = world["alice"].at(version), world["api"]
    sid = boot(world)["id"]
    r = action(nova, sid, {"createImage": {"name": "snap", "metadata": {"purpose": "backup", "image_type": "gold"}}})
    assert r.status_code == 202, r.text
    image_id = r.headers["location"].rsplit("/", 1)[-1]
    assert r.headers["location"] == f"http://127.0.0.1:8080/image/v2/images/{image_id}"
    if version == "2.45":
        assert r.json() == {"image_id": image_id}
    else:
        assert r.content == b""
    wait_for(nova, sid, "ACTIVE")

    def image() -> dict[str, Any]:
        got = api.http.get(f"{IM}/images/{image_id}", headers={"X-Auth-Token": nova.token})
        assert got.status_code == 200, got.text
        return dict(got.json())

    until(lambda: image()["status"] == "active")
    snap = image()
    assert snap["name"] == "snap" and snap["visibility"] == "private" and snap["purpose"] == "backup"
    # The caller's metadata wins over the snapshot's own properties (Nova; Tempest checks image_type).
    assert snap["instance_uuid"] == sid and snap["image_type"] == "gold"
    assert snap["min_ram"] == base_min_ram(world) == 64  # the base image's, as Nova (not the flavor's 128)
    assert snap["disk_format"] == "qcow2" and snap["size"] > 0
    assert action(nova, sid, {"createImage": {"name": " "}}).status_code == 400
    assert action(nova, sid, {"createImage": {}}).status_code == 400


def test_resize_then_confirm_keeps_the_new_flavor(world: dict[str, Any]) -> None:
    nova = world["alice"].at("2.47")
    sid = boot(world)["id"]
    r = action(nova, sid, {"resize": {"flavorRef": "84"}})
    assert r.status_code == 202, r.text
    server = wait_for(nova, sid, "VERIFY_RESIZE")
    assert server["flavor"]["original_name"] == "m1.micro" and server["OS-EXT-STS:power_state"] == 1
    assert world["host"].driver._guests[sid].spec.memory_mib == 192
    r = action(nova, sid, {"confirmResize": None})
    assert r.status_code == 204, r.text
    server = wait_for(nova, sid, "ACTIVE")
    assert server["flavor"]["ram"] == 192
    assert action(nova, sid, {"resize": {"flavorRef": "84"}}).status_code == 400  # same flavor
    assert action(nova, sid, {"resize": {"flavorRef": "nope"}}).status_code == 400
    assert action(nova, sid, {"resize": {}}).status_code == 400


def test_resize_then_revert_brings_the_old_flavor_back(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    assert action(nova, sid, {"resize": {"flavorRef": "1"}}).status_code == 202
    assert wait_for(nova, sid, "VERIFY_RESIZE")["flavor"]["id"] == "1"
    assert action(nova, sid, {"revertResize": None}).status_code == 202
    server = wait_for(nova, sid, "ACTIVE")
    assert server["flavor"]["id"] == "42"
    assert world["host"].driver._guests[sid].spec.memory_mib == 128
    assert world["host"].driver._guests[sid].state == 1


def test_actions_in_the_wrong_state_are_409_in_novas_words(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    for payload, name in (({"os-start": None}, "start"), ({"unpause": None}, "unpause"),
                          ({"resume": None}, "resume"), ({"confirmResize": None}, "confirmResize"),
                          ({"revertResize": None}, "revertResize")):
        r = action(nova, sid, payload)
        assert r.status_code == 409, (payload, r.text)
        assert r.json()["conflictingRequest"]["message"] == (
            f"Cannot '{name}' instance {sid} while it is in vm_state active")
    action(nova, sid, {"os-stop": None})
    wait_for(nova, sid, "SHUTOFF")
    for payload in ({"pause": None}, {"suspend": None}, {"os-stop": None}, {"reboot": {"type": "SOFT"}}):
        r = action(nova, sid, payload)
        assert r.status_code == 409 and "while it is in vm_state stopped" in r.text, payload


def test_a_second_action_while_one_runs_is_409_naming_the_task(world: dict[str, Any]) -> None:
    nova, host = world["alice"], world["host"]
    sid = boot(world)["id"]
    host.stop()  # nobody carries the work out, so the task stays
    assert action(nova, sid, {"os-stop": None}).status_code == 202
    r = action(nova, sid, {"pause": None})
    assert r.status_code == 409
    assert r.json()["conflictingRequest"]["message"] == (
        f"Cannot 'pause' instance {sid} while it is in task_state powering-off")
    host.start()
    wait_for(nova, sid, "SHUTOFF")


def test_unknown_or_malformed_actions_are_400(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    r = action(nova, sid, {"os-noSuchAction": None})
    assert r.status_code == 400 and r.json()["badRequest"]["message"] == "There is no such action: os-noSuchAction"
    assert action(nova, sid, {"os-migrateLive": None}).status_code == 400  # a body Nova's schema refuses
    assert action(nova, sid, {"pause": None, "unpause": None}).status_code == 400
    assert action(nova, sid, ["pause"]).status_code == 400
    r = nova.api.http.post(f"/compute/v2.1/servers/{sid}/action", content=b"{nope",
                           headers={**nova._h(), "Content-Type": "application/json"})
    assert r.status_code == 400 and "badRequest" in r.json()


# -- metadata and instance actions -------------------------------------------------------------

def test_metadata_can_be_listed_set_replaced_and_deleted(world: dict[str, Any]) -> None:
    nova = world["alice"]
    sid = boot(world, metadata={"role": "web"})["id"]
    m = f"/servers/{sid}/metadata"
    assert nova.get(m).json() == {"metadata": {"role": "web"}}
    assert nova.post(m, {"metadata": {"tier": "1"}}).json() == {"metadata": {"role": "web", "tier": "1"}}
    assert nova.put(m, {"metadata": {"only": "me"}}).json() == {"metadata": {"only": "me"}}
    assert nova.put(f"{m}/k", {"meta": {"k": "v"}}).json() == {"meta": {"k": "v"}}
    assert nova.get(f"{m}/k").json() == {"meta": {"k": "v"}}
    assert nova.put(f"{m}/k", {"meta": {"other": "v"}}).status_code == 400
    assert nova.delete(f"{m}/k").status_code == 204
    assert nova.get(f"{m}/k").status_code == 404
    assert nova.delete(f"{m}/k").status_code == 404
    assert nova.get(f"/servers/{sid}").json()["server"]["metadata"] == {"only": "me"}
    assert nova.post(m, {"metadata": {"x" * 256: "v"}}).status_code == 400
    too_many = {f"k{i}": "v" for i in range(129)}
    r = nova.put(m, {"metadata": too_many})
    assert r.status_code == 403 and "metadata_items" in r.text
    assert world["rita"].post(m, {"metadata": {"a": "b"}}).status_code == 403
    assert world["bob"].get(m).status_code == 404


def test_instance_actions_list_every_request_and_show_its_events(world: dict[str, Any]) -> None:
    nova = world["alice"]
    r = nova.post("/servers", body(world))
    sid, create_rid = r.json()["server"]["id"], r.headers["x-openstack-request-id"]
    wait_for(nova, sid, "ACTIVE")
    r = action(nova, sid, {"os-stop": None})
    stop_rid = r.headers["x-openstack-request-id"]
    wait_for(nova, sid, "SHUTOFF")
    listed = nova.get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert [(a["action"], a["request_id"]) for a in listed] == [("stop", stop_rid), ("create", create_rid)]
    assert listed[0]["instance_uuid"] == sid and listed[0]["user_id"] == world["a"]["user_id"]
    assert "events" not in listed[0]
    shown = nova.get(f"/servers/{sid}/os-instance-actions/{create_rid}").json()["instanceAction"]
    assert shown["action"] == "create" and shown["message"] is None
    [event] = shown["events"]
    assert event["event"] == "compute_build_and_run_instance" and event["result"] == "Success"
    assert event["start_time"] and event["finish_time"] and "traceback" not in event
    admin_view = world["admin"].get(f"/servers/{sid}/os-instance-actions/{stop_rid}").json()["instanceAction"]
    assert admin_view["events"][0]["event"] == "compute_stop_instance"
    assert admin_view["events"][0]["traceback"] is None
    assert nova.get(f"/servers/{sid}/os-instance-actions/req-nope").status_code == 404


# -- delete ------------------------------------------------------------------------------------

def test_deleting_a_server_answers_204_then_it_is_gone(world: dict[str, Any]) -> None:
    nova, driver = world["alice"], world["host"].driver
    sid = boot(world)["id"]
    r = nova.delete(f"/servers/{sid}")
    assert r.status_code == 204 and r.content == b""
    until(lambda: nova.get(f"/servers/{sid}").status_code == 404)
    r = nova.get(f"/servers/{sid}")
    assert r.json() == {"itemNotFound": {"code": 404, "message": f"Instance {sid} could not be found."}}
    assert sid not in driver._guests
    assert nova.delete(f"/servers/{sid}").status_code == 404
    assert nova.get("/servers").json()["servers"] == []


def test_deleting_a_stopped_server_and_one_that_never_got_a_host(world: dict[str, Any], api: Api) -> None:
    nova = world["alice"]
    sid = boot(world)["id"]
    action(nova, sid, {"os-stop": None})
    wait_for(nova, sid, "SHUTOFF")
    assert nova.delete(f"/servers/{sid}").status_code == 204
    until(lambda: nova.get(f"/servers/{sid}").status_code == 404)
    admin = system_context("")
    api.services.hosts.set_disabled(admin, world["host"].driver.hostname, True, "maintenance")
    r = nova.post("/servers", body(world))
    failed = wait_for(nova, r.json()["server"]["id"], "ERROR")
    assert nova.delete(f"/servers/{failed['id']}").status_code == 204
    assert nova.get(f"/servers/{failed['id']}").status_code == 404


# -- who may do what ---------------------------------------------------------------------------

def test_another_projects_server_is_404_for_show_action_update_and_delete(world: dict[str, Any]) -> None:
    sid = boot(world)["id"]
    bob = world["bob"]
    for r in (bob.get(f"/servers/{sid}"), action(bob, sid, {"os-stop": None}),
              bob.put(f"/servers/{sid}", {"server": {"name": "x"}}), bob.delete(f"/servers/{sid}"),
              bob.get(f"/servers/{sid}/os-instance-actions"), action(bob, sid, {"os-getConsoleOutput": {}})):
        assert r.status_code == 404, r.text
        assert r.json()["itemNotFound"]["message"] == f"Instance {sid} could not be found."
    assert bob.get("/servers").json()["servers"] == []
    assert world["alice"].get(f"/servers/{sid}").json()["server"]["status"] == "ACTIVE"
    assert world["admin"].get(f"/servers/{sid}").status_code == 200


def test_a_reader_lists_and_shows_but_may_not_change_anything(world: dict[str, Any]) -> None:
    sid = boot(world)["id"]
    rita = world["rita"]
    assert [s["id"] for s in rita.get("/servers").json()["servers"]] == [sid]
    assert rita.get(f"/servers/{sid}").status_code == 200
    for r in (rita.post("/servers", body(world)), action(rita, sid, {"os-stop": None}),
              rita.put(f"/servers/{sid}", {"server": {"name": "x"}}), rita.delete(f"/servers/{sid}")):
        assert r.status_code == 403, r.text
        assert "forbidden" in r.json()
    assert len(world["alice"].get("/servers").json()["servers"]) == 1


@pytest.mark.parametrize(("limits", "flavor", "quota"), [
    ({"instances": 1}, "42", "instances"), ({"cores": 1}, "3", "cores"), ({"ram": 300}, "1", "ram")])
def test_exceeding_a_quota_is_403_naming_it_and_creates_nothing(
        world: dict[str, Any], limits: dict[str, int], flavor: str, quota: str) -> None:
    admin, alice = world["admin"], world["alice"]
    r = admin.put(f"/os-quota-sets/{world['a']['project_id']}", {"quota_set": limits})
    assert r.status_code == 200, r.text
    if quota == "instances":
        boot(world)
    before = instance_count(world["api"].services)
    r = alice.post("/servers", body(world, flavor=flavor))
    assert r.status_code == 403, r.text
    message = r.json()["forbidden"]["message"]
    assert message.startswith(f"Quota exceeded for {quota}:"), message
    assert instance_count(world["api"].services) == before
    assert alice.post("/servers", body(world, flavor=flavor, min_count=2)).status_code == 403
    assert instance_count(world["api"].services) == before


def test_max_count_beyond_quota_makes_as_many_as_fit(world: dict[str, Any]) -> None:
    world["admin"].put(f"/os-quota-sets/{world['a']['project_id']}", {"quota_set": {"instances": 2}})
    r = world["alice"].post("/servers", body(world, "many", min_count=1, max_count=5))
    assert r.status_code == 202
    assert sorted(s["name"] for s in world["alice"].get("/servers").json()["servers"]) == ["many-1", "many-2"]


# -- scheduling, restarts and the power sync ---------------------------------------------------

def test_when_the_only_host_is_too_small_the_server_errors_naming_host_and_filter(world: dict[str, Any]) -> None:
    host = world["host"]
    host.start(FakeDriver(hostname=host.driver.hostname, memory_mib=1024))
    nova = world["alice"]
    r = nova.post("/servers", body(world, "big", flavor="2"))
    assert r.status_code == 202, r.text
    server = wait_for(nova, r.json()["server"]["id"], "ERROR")
    name = host.driver.hostname
    fault = server["fault"]
    assert fault["code"] == 500 and fault["message"].startswith("No valid host was found.")
    assert f"{name}: RamFilter: needs 2048 MiB, 768 MiB free of 768 MiB usable" in fault["message"]
    assert "details" not in fault
    admin_fault = world["admin"].get(f"/servers/{server['id']}").json()["server"]["fault"]
    assert f"{name}: RamFilter" in admin_fault["details"]
    assert server["OS-EXT-STS:vm_state"] == "error" and host.driver._guests == {}
    assert boot(world, flavor="1")["status"] == "ACTIVE"  # 512 MiB still fits


def test_a_disabled_host_is_rejected_by_the_compute_filter(world: dict[str, Any], api: Api) -> None:
    name = world["host"].driver.hostname
    api.services.hosts.set_disabled(system_context(""), name, True, "maintenance")
    r = world["alice"].post("/servers", body(world))
    server = wait_for(world["alice"], r.json()["server"]["id"], "ERROR")
    assert f"{name}: ComputeFilter: the host's compute service is disabled" in server["fault"]["message"]
    api.services.hosts.set_disabled(system_context(""), name, False)
    assert boot(world)["status"] == "ACTIVE"


def test_restarting_the_agent_duplicates_nothing_and_keeps_states(world: dict[str, Any]) -> None:
    nova, host = world["alice"], world["host"]
    running = boot(world, name="running")["id"]
    stopped = boot(world, name="stopped")["id"]
    action(nova, stopped, {"os-stop": None})
    wait_for(nova, stopped, "SHUTOFF")
    host.stop()
    r = nova.post("/servers", body(world, "while-down"))
    queued = r.json()["server"]["id"]
    time.sleep(0.3)
    assert nova.get(f"/servers/{queued}").json()["server"]["status"] == "BUILD"
    host.start()  # the same FakeDriver: the guests outlived the old agent
    wait_for(nova, queued, "ACTIVE")
    time.sleep(2.5)  # at least one power sync of the new agent
    assert sorted(host.driver._guests) == sorted([running, stopped, queued])
    assert wait_for(nova, running, "ACTIVE")["OS-EXT-STS:power_state"] == 1
    assert wait_for(nova, stopped, "SHUTOFF")["OS-EXT-STS:power_state"] == 4
    assert len(nova.get("/servers").json()["servers"]) == 3
    console = host.driver._guests[running].console
    assert len(console) == 1  # not booted a second time


def test_a_spawn_finished_but_never_reported_is_adopted_not_duplicated(world: dict[str, Any], api: Api) -> None:
    nova, host = world["alice"], world["host"]
    sid = boot(world)["id"]
    host.stop()
    with api.services.db.begin() as s:  # as if the old agent died between spawn and finish
        row = s.get(t.Instance, sid)
        assert row is not None
        row.vm_state = "building"
        held_by_a_dead_agent(s, row, SpawnArgs(), "req-replayed", "spawning")
    host.start()
    assert wait_for(nova, sid, "ACTIVE")["OS-EXT-STS:power_state"] == 1
    assert list(host.driver._guests) == [sid] and len(host.driver._guests[sid].console) == 1


def test_a_guest_that_dies_becomes_shutoff_through_the_power_sync(world: dict[str, Any]) -> None:
    nova, host = world["alice"], world["host"]
    sid = boot(world)["id"]
    host.driver.simulate_crash(sid)
    server = wait_for(nova, sid, "SHUTOFF", timeout=6)
    assert server["OS-EXT-STS:power_state"] == 6  # CRASHED, as Nova shows a dead guest
    listed = nova.get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert listed[0]["action"] == "stop" and "process killed (simulated)" in listed[0]["message"]
    assert action(nova, sid, {"os-start": None}).status_code == 202
    wait_for(nova, sid, "ACTIVE")


# -- bad input and headers ---------------------------------------------------------------------

def test_bad_create_bodies_are_400_and_create_nothing(world: dict[str, Any]) -> None:
    nova, services = world["alice"], world["api"].services
    raw = nova.api.http.post("/compute/v2.1/servers", content=b'{"server": ',
                             headers={**nova._h(), "Content-Type": "application/json"})
    assert raw.status_code == 400 and raw.json()["badRequest"]["code"] == 400
    assert nova.post("/servers", body(world, bogus=True)).status_code == 400
    assert nova.post("/servers", {**body(world), "extra": 1}).status_code == 400
    assert nova.post("/servers", {"server": {"name": "x"}}).status_code == 400
    big = base64.b64encode(b"x" * 65536).decode()
    r = nova.post("/servers", body(world, user_data=big))  # Nova's schema: maxLength 65535
    assert r.status_code == 400 and "user_data" in r.json()["badRequest"]["message"]
    r = nova.post("/servers", body(world, user_data="not base64!"))
    assert r.status_code == 400 and "base 64" in r.json()["badRequest"]["message"]
    assert nova.post("/servers", body(world, user_data=base64.b64encode(b"#!/bin/sh\n").decode())).status_code == 202
    assert nova.post("/servers", body(world, flavor="999")).status_code == 400
    assert nova.post("/servers", body(world, imageRef=str(uuid.uuid4()))).status_code in (400, 404)
    assert nova.post("/servers", body(world, name="")).status_code == 400
    assert nova.post("/servers", body(world, personality=[{"path": "/x", "contents": ""}])).status_code == 400
    assert nova.post("/servers", body(world, key_name="missing")).status_code in (400, 404)
    assert instance_count(services) == 1


def test_ids_that_are_not_uuids_are_404(world: dict[str, Any]) -> None:
    nova = world["alice"]
    for r in (nova.get("/servers/not-a-uuid"), nova.delete("/servers/1"), action(nova, "x", {"os-stop": None}),
              nova.put("/servers/%20", {"server": {"name": "n"}}), nova.get("/servers/x/metadata"),
              nova.get(f"/servers/{uuid.uuid4()}")):
        assert r.status_code == 404, r.text
        assert "itemNotFound" in r.json()


def test_every_compute_response_echoes_the_microversion_errors_included(world: dict[str, Any]) -> None:
    sid = boot(world)["id"]
    for version, expect in ((None, "2.1"), ("2.19", "2.19"), ("latest", "2.47")):
        nova = world["alice"].at(version)
        responses = [nova.get("/servers"), nova.get(f"/servers/{sid}"), nova.get("/servers/nope"),
                     action(nova, sid, {"os-start": None}), action(nova, sid, {"nope": None}),
                     nova.post("/servers", {"server": {}}), world["bob"].at(version).delete(f"/servers/{sid}"),
                     world["rita"].at(version).post("/servers", body(world))]
        statuses = [r.status_code for r in responses]
        assert statuses == [200, 200, 404, 409, 400, 400, 404, 403]
        for r in responses:
            assert r.headers["openstack-api-version"] == f"compute {expect}", r.url
            assert r.headers["x-openstack-nova-api-version"] == expect
    unauthenticated = world["api"].http.get("/compute/v2.1/servers",
                                            headers={"OpenStack-API-Version": "compute 2.26"})
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["openstack-api-version"] == "compute 2.26"


def test_a_server_gets_a_config_drive_only_when_asked_once_the_drive_is_not_forced(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    compute = world["api"].services.compute
    config = compute._config
    monkeypatch.setattr(compute, "_config", replace(config, compute=replace(config.compute, force_config_drive=False)))
    plain = boot(world, name="plain")
    asked = boot(world, name="asked", config_drive=True)
    refused = boot(world, name="refused", config_drive=False)
    assert (plain["config_drive"], asked["config_drive"], refused["config_drive"]) == ("", "True", "")
