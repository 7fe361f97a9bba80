"""Live migration between two hosts, each a real agent on a FakeDriver over the real HTTP protocol.

Host A is the cloud's own host (``test_servers.host``); host B is a second agent with its own host
name, instance directory and credential, started after the server boots (so the server is on A).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.functional.compute import test_servers
from tests.functional.compute.test_agent_migration_sync import _in_loop
from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from tests.functional.compute.test_servers import WAIT, Host, action, boot, until, wait_for
from yunstack.agent.agent import Agent
from yunstack.agent.host import make_agent
from yunstack.agent.http import HttpControlPlane
from yunstack.api.app import create_app
from yunstack.compute.driver import PowerState
from yunstack.compute.fake import FakeDriver
from yunstack.db.tables import compute as t
from yunstack.db.tables import migrations as mig
from yunstack.wiring import Services

host = test_servers.host
world = test_servers.world
qcow2 = test_servers.qcow2
B = "host-b"


class OtherHost:
    """A second compute host: its own name, state directory and credential, joined over HTTP."""

    def __init__(self, services: Services, name: str, state_dir: Path) -> None:
        config = services.config
        self.config = replace(config, compute=replace(config.compute, host=name),
                              server=replace(config.server, state_dir=str(state_dir)))
        self.services = services
        self.name = name
        self.driver = FakeDriver(hostname=name)
        self.agent: Agent | None = None
        self._client: TestClient | None = None

    def start(self) -> None:
        self._client = TestClient(create_app(self.services), base_url="http://127.0.0.1:8080")
        link = HttpControlPlane("http://127.0.0.1:8080", self.name, self.services.hostauth.issue(self.name),
                                client=self._client)
        self.agent = make_agent(self.config, link, driver=self.driver)
        self.agent.poll_timeout = 2.0
        self.agent.start()

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        if self._client is not None:
            self._client.close()
            self._client = None


@pytest.fixture
def two(world: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A server of alice's on host A, then host B up; ``admin`` speaks 2.30."""
    server = boot(world)
    wait_for(world["alice"], server["id"], "ACTIVE")
    other = OtherHost(world["api"].services, B, tmp_path / "host-b")
    other.start()
    try:
        yield {**world, "server": server["id"], "b": other, "admin": world["admin"].at("2.30")}
    finally:
        other.stop()


def live(nova: Nova, server_id: str, host: str | None = None, block: Any = "auto", **extra: Any) -> Any:
    return nova.post(f"/servers/{server_id}/action",
                     {"os-migrateLive": {"host": host, "block_migration": block, **extra}})


def migrations(w: dict[str, Any], **filters: str) -> list[dict[str, Any]]:
    r = w["admin"].at("2.23").get("/os-migrations", **filters)
    assert r.status_code == 200, r.text
    return list(r.json()["migrations"])


def _done(w: dict[str, Any]) -> dict[str, Any]:
    """The server once its migration ended (no task), and that migration."""
    until(lambda: migrations(w)[0]["status"] in ("completed", "error", "cancelled"))
    return wait_for(w["admin"], w["server"], "ACTIVE")


def test_a_live_migration_moves_the_running_server_to_the_other_host_without_a_reboot(two: dict[str, Any]) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid = two["server"]
    before = a.driver._guests[sid]
    console_before = list(before.console)
    r = live(two["admin"], sid)
    assert r.status_code == 202, r.text
    assert r.content == b""
    server = _done(two)
    assert server["OS-EXT-SRV-ATTR:host"] == B
    assert sid not in a.driver._guests  # no process, no disk left on the source
    moved = b.driver._guests[sid]
    assert moved.state == PowerState.RUNNING and moved.migration is None
    assert moved.console[:len(console_before)] == console_before  # the same guest, not a fresh boot
    [m] = migrations(two)
    assert (m["status"], m["migration_type"], m["source_compute"], m["dest_compute"]) == (
        "completed", "live-migration", a.services.config.host_name, B)
    assert "links" not in m  # only in-progress live migrations link to themselves
    actions = two["alice"].get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert [x["action"] for x in actions][:1] == ["live-migration"]
    assert "reboot" not in [x["action"] for x in actions]


def test_the_downtime_and_the_bytes_moved_are_recorded(two: dict[str, Any]) -> None:
    assert live(two["admin"], two["server"], B).status_code == 202
    _done(two)
    with two["api"].services.db() as s:
        record = s.scalars(select(mig.Migration)).one()
        assert record.downtime_ms is not None and record.total_ms is not None
        assert record.memory_total_bytes is not None and record.memory_total_bytes > 0


def test_a_named_host_that_does_not_exist_or_is_the_source_is_400(two: dict[str, Any]) -> None:
    sid = two["server"]
    r = live(two["admin"], sid, "nowhere")
    assert r.status_code == 400 and "Compute host nowhere could not be found" in r.json()["badRequest"]["message"]
    r = live(two["admin"], sid, two["host"].services.config.host_name)
    assert r.status_code == 400 and "can't be the same" in r.json()["badRequest"]["message"]
    assert migrations(two) == []


def test_no_valid_destination_is_400_with_each_hosts_reason(two: dict[str, Any]) -> None:
    b: OtherHost = two["b"]
    b.stop()
    with two["api"].services.db.begin() as s:
        node = s.scalars(select(t.ComputeNode).where(t.ComputeNode.host == B)).one()
        node.disabled = True
    r = live(two["admin"], two["server"])
    assert r.status_code == 400, r.text
    message = r.json()["badRequest"]["message"]
    assert "No valid host was found" in message and f"{B}: ComputeFilter" in message


def test_the_body_follows_novas_microversions(two: dict[str, Any]) -> None:
    admin: Nova = two["admin"]
    sid = two["server"]
    r = live(admin.at("2.24"), sid)  # "auto" only from 2.25
    assert r.status_code == 400
    r = live(admin.at("2.1"), sid, block=False)  # disk_over_commit is required before 2.25
    assert r.status_code == 400 and "disk_over_commit" in r.text
    r = live(admin.at("2.25"), sid, force=True)  # force only from 2.30
    assert r.status_code == 400 and "force" in r.text
    r = live(admin.at("2.25"), sid, block=False)  # no shared storage here
    assert r.status_code == 400 and "shared storage" in r.text
    r = live(admin.at("2.25"), sid, disk_over_commit=False)  # gone in 2.25
    assert r.status_code == 400
    assert migrations(two) == []
    r = live(admin.at("2.1"), sid, B, block=False, disk_over_commit="False")  # a 2.1 client still moves it
    assert r.status_code == 202, r.text
    assert _done(two)["OS-EXT-SRV-ATTR:host"] == B


def test_only_an_admin_live_migrates_and_another_projects_server_is_404(two: dict[str, Any]) -> None:
    sid = two["server"]
    r = live(two["alice"].at("2.30"), sid)
    assert r.status_code == 403, r.text
    r = live(two["bob"].at("2.30"), sid)
    assert r.status_code == 404, r.text
    r = two["bob"].at("2.23").get(f"/servers/{sid}/migrations")
    assert r.status_code == 404
    r = two["alice"].at("2.23").get(f"/servers/{sid}/migrations")
    assert r.status_code == 403
    assert two["alice"].at("2.23").get("/os-migrations").status_code == 403
    assert migrations(two) == []


def test_a_stopped_server_is_409(two: dict[str, Any]) -> None:
    sid = two["server"]
    assert two["alice"].post(f"/servers/{sid}/action", {"os-stop": None}).status_code == 202
    wait_for(two["alice"], sid, "SHUTOFF")
    r = live(two["admin"], sid)
    assert r.status_code == 409, r.text
    assert "while it is in vm_state stopped" in r.json()["conflictingRequest"]["message"]


def test_a_failed_send_rolls_back_to_the_source_which_keeps_running(two: dict[str, Any]) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid = two["server"]

    async def broken(*args: object, **kwargs: object) -> Any:
        raise RuntimeError("the wire broke")

    a.driver.send = broken  # type: ignore[method-assign]
    assert live(two["admin"], sid).status_code == 202
    server = _done(two)
    assert server["OS-EXT-SRV-ATTR:host"] == a.services.config.host_name
    assert server["status"] == "ACTIVE" and server.get("fault") is None
    assert a.driver._guests[sid].state == PowerState.RUNNING and a.driver._guests[sid].migration is None
    assert sid not in b.driver._guests  # the destination dropped its waiting guest
    [m] = migrations(two)
    assert m["status"] == "error"
    with two["api"].services.db() as s:
        record = s.scalars(select(mig.Migration)).one()
        assert record.error is not None and "the wire broke" in record.error


def test_an_abort_rolls_back_and_the_migration_is_cancelled(two: dict[str, Any]) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid = two["server"]
    gate = asyncio.Event()
    real_send = a.driver.send

    async def slow(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await real_send(*args, **kwargs)

    a.driver.send = slow  # type: ignore[method-assign]
    admin = two["admin"].at("2.24")
    assert live(two["admin"], sid).status_code == 202
    until(lambda: bool(migrations(two)) and migrations(two)[0]["status"] == "running")
    [m] = admin.get(f"/servers/{sid}/migrations").json()["migrations"]
    assert m["server_uuid"] == sid and m["status"] == "running" and m["dest_compute"] == B
    shown = admin.get(f"/servers/{sid}/migrations/{m['id']}")
    assert shown.status_code == 200 and shown.json()["migration"]["id"] == m["id"]
    listed = migrations(two)[0]
    assert listed["links"][0]["href"].endswith(f"/servers/{sid}/migrations/{m['id']}")
    assert admin.post(f"/servers/{sid}/migrations/{m['id']}/action",
                      {"force_complete": None}).status_code == 202  # paused already: nothing to force
    r = admin.delete(f"/servers/{sid}/migrations/{m['id']}")
    assert r.status_code == 202, r.text
    assert admin.delete(f"/servers/{sid}/migrations/{m['id']}").status_code == 400  # already rolling back
    loop = a.agent._loop if a.agent is not None else None
    assert loop is not None
    loop.call_soon_threadsafe(gate.set)
    server = _done(two)
    assert server["OS-EXT-SRV-ATTR:host"] == a.services.config.host_name
    assert a.driver._guests[sid].state == PowerState.RUNNING
    assert sid not in b.driver._guests
    assert migrations(two)[0]["status"] == "cancelled"
    assert admin.get(f"/servers/{sid}/migrations").json()["migrations"] == []
    assert admin.get(f"/servers/{sid}/migrations/{m['id']}").status_code == 404


def test_server_migrations_need_their_microversions(two: dict[str, Any]) -> None:
    sid = two["server"]
    admin = two["admin"]
    assert admin.at("2.22").get(f"/servers/{sid}/migrations").status_code == 404
    assert admin.at("2.23").delete(f"/servers/{sid}/migrations/1").status_code == 404
    assert admin.at("2.24").delete(f"/servers/{sid}/migrations/1").status_code == 404  # no such migration
    r = admin.at("2.22").post(f"/servers/{sid}/migrations/1/action", {"force_complete": None})
    assert r.status_code == 409  # not migrating


def test_os_migrations_filters_and_shapes(two: dict[str, Any]) -> None:
    sid = two["server"]
    assert live(two["admin"], sid).status_code == 202
    _done(two)
    [m] = migrations(two)
    assert set(m) == {"id", "status", "instance_uuid", "source_node", "source_compute", "dest_node",
                      "dest_compute", "dest_host", "old_instance_type_id", "new_instance_type_id", "created_at",
                      "updated_at", "migration_type"}
    assert m["old_instance_type_id"] == m["new_instance_type_id"] == 42
    assert not m["created_at"].endswith("Z")
    old = two["admin"].at("2.1").get("/os-migrations").json()["migrations"][0]
    assert "migration_type" not in old
    assert migrations(two, host=B)[0]["id"] == m["id"]
    assert migrations(two, status="completed")[0]["id"] == m["id"]
    assert migrations(two, status="running") == []
    assert migrations(two, migration_type="resize") == []
    assert migrations(two, instance_uuid=sid)[0]["id"] == m["id"]


def test_a_server_with_a_port_moves_and_its_port_is_plugged_on_the_destination_first(two: dict[str, Any]) -> None:
    # The destination's network state holds the moving server's port before the binding moves:
    # without it the prepare step found no tap for the incoming guest ("Could not find port").
    api = two["api"]
    h = api.headers(api.admin())
    net = api.http.post("/networking/v2.0/networks", json={"network": {"name": "n"}}, headers=h).json()["network"]
    r = api.http.post("/networking/v2.0/subnets", json={"subnet": {"network_id": net["id"], "cidr": "10.91.0.0/24",
                                                                   "ip_version": 4}}, headers=h)
    assert r.status_code == 201, r.text
    a: Host = two["host"]
    a_name = a.services.config.host_name
    server = boot(two, nova=two["admin"], name="wired", availability_zone=f"nova:{a_name}",
                  networks=[{"uuid": net["id"]}])
    sid = server["id"]
    assert server["OS-EXT-SRV-ATTR:host"] == a_name
    r = live(two["admin"], sid, host=B)
    assert r.status_code == 202, r.text
    until(lambda: migrations(two)[0]["status"] in ("completed", "error", "cancelled"))
    assert migrations(two)[0]["status"] == "completed", migrations(two)[0]
    moved = wait_for(two["admin"], sid, "ACTIVE")
    assert moved["OS-EXT-SRV-ATTR:host"] == B and moved["addresses"] == server["addresses"]
    ports = api.http.get("/networking/v2.0/ports", params={"device_id": sid}, headers=h).json()["ports"]
    assert [p["binding:host_id"] for p in ports] == [B]
    b: OtherHost = two["b"]
    assert b.driver._guests[sid].spec.nics  # the incoming guest got its NIC on the destination


def test_deleting_a_server_during_its_live_migration_leaves_no_guest_on_either_host(
        two: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid = two["server"]
    received, release = threading.Event(), threading.Event()
    original = b.driver.finish_incoming

    async def slow(instance_id: str, resume: bool = True) -> None:
        received.set()  # the guest's state is here; it has not run here yet
        await asyncio.to_thread(release.wait, WAIT)
        await original(instance_id, resume)

    monkeypatch.setattr(b.driver, "finish_incoming", slow)
    assert live(two["admin"], sid, B).status_code == 202
    assert received.wait(WAIT)
    assert two["alice"].delete(f"/servers/{sid}").status_code == 204
    until(lambda: sid not in a.driver._guests)  # the delete went to the server's host, the source
    release.set()
    until(lambda: two["alice"].get(f"/servers/{sid}").status_code == 404)
    [m] = migrations(two)
    assert m["status"] == "error", m
    agent = b.agent
    assert agent is not None
    until(lambda: not agent._inflight)
    _in_loop(b, agent._sync_power)  # the guest that arrived belongs to no server and no migration now
    assert sid not in b.driver._guests


def test_a_paused_server_moves_live_and_stays_paused(two: dict[str, Any]) -> None:
    a: Host = two["host"]
    b: OtherHost = two["b"]
    sid = two["server"]
    assert action(two["alice"], sid, {"pause": None}).status_code == 202
    wait_for(two["alice"], sid, "PAUSED")
    assert live(two["admin"], sid, B).status_code == 202
    until(lambda: migrations(two)[0]["status"] in ("completed", "error", "cancelled"))
    server = wait_for(two["admin"], sid, "PAUSED")
    assert server["OS-EXT-SRV-ATTR:host"] == B and server["OS-EXT-STS:power_state"] == 3
    assert migrations(two)[0]["status"] == "completed"
    assert b.driver._guests[sid].state == PowerState.PAUSED and sid not in a.driver._guests
    assert action(two["alice"], sid, {"unpause": None}).status_code == 202
    wait_for(two["alice"], sid, "ACTIVE")
    assert b.driver._guests[sid].state == PowerState.RUNNING
