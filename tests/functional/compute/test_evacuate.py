"""Host down detection, fencing and evacuate, with two fake hosts whose agents speak the real protocol.

Each host is the real agent on a FakeDriver, talking to the control plane over ``/agent/v1`` with
its own credential.  Time is the host service's injected clock: a host goes down because the clock
moved past its last heartbeat, not because the test slept.  "Host A went down" is its agent
stopping while its guests stay in its driver: exactly what a host that was only cut off looks
like, which is why evacuate must fence it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Api
from tests.functional.agent.test_host_identity import call
from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from tests.functional.compute.test_servers import qcow2, until, wait_for  # noqa: F401  (qcow2: the fixture)
from tests.functional.identity.test_identity_api import make_member
from yunstack.agent.agent import Agent
from yunstack.agent.http import HttpControlPlane
from yunstack.agent.wire import METHODS
from yunstack.api.app import create_app
from yunstack.compute.driver import PowerState
from yunstack.compute.fake import FakeDriver
from yunstack.config import ComputeConfig
from yunstack.protocol import Outcome
from yunstack.types import utcnow
from yunstack.wiring import Services

A, B = "ev-a", "ev-b"
NET = "/networking/v2.0"


class Clock:
    """The host service's "now", moved by the tests."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeHost:
    """One compute host: a FakeDriver that outlives its agent (guests survive an agent that stops)."""

    def __init__(self, services: Services, name: str, cache: Path) -> None:
        self.services, self.name, self.cache = services, name, cache
        self.driver = FakeDriver(hostname=name)
        self.credential = services.hostauth.issue(name)
        self.agent: Agent | None = None
        self._client: TestClient | None = None

    def start(self) -> None:
        self._client = TestClient(create_app(self.services), base_url="http://127.0.0.1:8080")
        link = HttpControlPlane("http://127.0.0.1:8080", self.name, self.credential, client=self._client)
        self.agent = Agent(self.name, self.driver, link, image_cache=self.cache, poll_timeout=2.0)
        self.agent.start()

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None
        # A stopping agent leaves its long-poll's thread behind (agent._wait); one that reaches the
        # control plane after a test moved the clock on would mark the host seen "then".
        for thread in threading.enumerate():
            if thread.name == f"agent-wait-{self.name}":
                thread.join()
        if self._client is not None:
            self._client.close()
            self._client = None

    def guests(self) -> set[str]:
        return {i.id for i in asyncio.run(self.driver.list_instances())}

    def beat(self) -> None:
        """One resource report now (by the injected clock), as the agent sends at least once a minute."""
        info = asyncio.run(self.driver.host_info())
        self.services.host_link.heartbeat(self.name, info)


@dataclass
class Cloud:
    api: Api
    clock: Clock
    a: FakeHost
    b: FakeHost
    admin: Nova
    alice: Nova
    bob: Nova
    image: str
    net: str


@pytest.fixture
def cloud(api: Api, tmp_path: Path, qcow2: Path) -> Iterator[Cloud]:  # noqa: F811
    services = api.services
    clock = Clock()
    services.hosts.clock = clock
    services.flavors.ensure_defaults()
    token = api.admin()
    make_member(api, token, "alpha", "alice")
    make_member(api, token, "beta", "bob")
    h = api.headers(token)
    r = api.http.post("/image/v2/images", json={"name": "cirros", "disk_format": "qcow2",
                                                "container_format": "bare", "visibility": "public"}, headers=h)
    image = r.json()["id"]
    api.http.put(f"/image/v2/images/{image}/file", content=qcow2.read_bytes(),
                 headers={**h, "Content-Type": "application/octet-stream"})
    alice = Nova(api, api.login("alice", "alice-pw", "alpha"))
    ah = api.headers(alice.token)
    r = api.http.post(f"{NET}/networks", json={"network": {"name": "n1"}}, headers=ah)
    assert r.status_code == 201, r.text
    net = r.json()["network"]["id"]
    r = api.http.post(f"{NET}/subnets", json={"subnet": {"network_id": net, "cidr": "10.9.0.0/24",
                                                          "ip_version": 4}}, headers=ah)
    assert r.status_code == 201, r.text
    a, b = FakeHost(services, A, tmp_path / "cache-a"), FakeHost(services, B, tmp_path / "cache-b")
    a.start()
    b.start()
    try:
        yield Cloud(api=api, clock=clock, a=a, b=b, admin=Nova(api, token), alice=alice,
                    bob=Nova(api, api.login("bob", "bob-pw", "beta")), image=image, net=net)
    finally:
        a.stop()
        b.stop()


def services_by_host(nova: Nova, version: str | None = None) -> dict[str, dict[str, Any]]:
    r = nova.at(version).get("/os-services")
    assert r.status_code == 200, r.text
    return {s["host"]: s for s in r.json()["services"]}


def boot_on_a(cloud: Cloud, name: str = "vm", hints: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """A server of alice's on host A (B is disabled while it is scheduled)."""
    admin = cloud.admin
    assert admin.put("/os-services/disable", {"host": B, "binary": "nova-compute"}).status_code == 200
    try:
        r = cloud.alice.post("/servers", {"server": {"name": name, "imageRef": cloud.image, "flavorRef": "42",
                                                     "networks": [{"uuid": cloud.net}], **extra},
                                          **({"os:scheduler_hints": hints} if hints else {})})
        assert r.status_code == 202, r.text
        server_id = r.json()["server"]["id"]
        wait_for(cloud.alice, server_id, "ACTIVE")
    finally:
        assert admin.put("/os-services/enable", {"host": B, "binary": "nova-compute"}).status_code == 200
    server = admin.get(f"/servers/{server_id}").json()["server"]
    assert server["OS-EXT-SRV-ATTR:host"] == A
    return dict(server)


def take_a_down(cloud: Cloud) -> None:
    """A's agent stops (its guests stay), and more than the down threshold passes; B keeps beating."""
    cloud.a.stop()
    cloud.clock.advance(cloud.api.services.hosts.down_after + 1)
    cloud.b.beat()


def evacuate(nova: Nova, server_id: str, version: str | None = None, **body: Any) -> Any:
    if version is None:
        body.setdefault("onSharedStorage", False)
    return nova.at(version).post(f"/servers/{server_id}/action", {"evacuate": body})


def ports_of(cloud: Cloud, server_id: str) -> list[dict[str, Any]]:
    r = cloud.api.http.get(f"{NET}/ports", params={"device_id": server_id},
                           headers=cloud.api.headers(cloud.admin.token))
    return list(r.json()["ports"])


# -- down detection --------------------------------------------------------------------------------

def test_the_down_threshold_is_a_config_value_of_at_most_30_seconds() -> None:
    assert ComputeConfig().host_down_after <= 30.0


def _states(cloud: Cloud) -> dict[str, str]:
    return {h: s["state"] for h, s in services_by_host(cloud.admin).items()}


def test_a_host_is_up_while_its_agent_long_polls_and_down_once_it_stops_for_the_threshold(cloud: Cloud) -> None:
    limit = cloud.api.services.hosts.down_after
    # No resource report for longer than the threshold: each long-poll the agents start says they live.
    cloud.clock.advance(limit + 5)
    until(lambda: _states(cloud) == {A: "up", B: "up"})
    cloud.a.stop()
    cloud.clock.advance(limit + 1)
    until(lambda: _states(cloud) == {A: "down", B: "up"})  # B's next long-poll, by the new clock
    # A host that is down takes no new servers: the scheduler says why.
    with cloud.api.services.db() as s:
        states = {u.host: u.up for u in cloud.api.services.hosts.host_states(s)}
    assert states == {A: False, B: True}


def test_the_control_plane_ends_a_long_poll_well_before_the_down_threshold(api: Api) -> None:
    """An agent asking for a longer wait still starts its next one (and is seen) in time."""
    hosts = api.services.hosts
    assert hosts.longest_wait <= hosts.down_after * 2 / 3
    hosts.down_after = 3.0  # a longest wait of 2 s
    began = time.monotonic()
    woken = api.services.host_link.wait("h1", (), 60.0)
    assert not woken.work and time.monotonic() - began < 10


def test_a_late_write_of_the_hosts_seen_never_moves_a_hosts_time_back(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-poll noted before a resource report, written after it, leaves the report's time."""
    hosts, clock = api.services.hosts, Clock()
    hosts.clock = clock
    info = asyncio.run(FakeDriver(hostname="h1").host_info())
    api.services.host_link.heartbeat("h1", info)
    monkeypatch.setattr("yunstack.compute.hosts.SEEN_WRITE_SECONDS", 3600.0)
    hosts.seen("h2")  # a write now: the next notes wait for the hour
    hosts.seen("h1")  # noted at t
    clock.advance(hosts.down_after + 1)
    api.services.host_link.heartbeat("h1", info)  # reported at t + down_after + 1
    monkeypatch.setattr("yunstack.compute.hosts.SEEN_WRITE_SECONDS", 0.0)
    hosts.seen("h2")  # writes h1's note of t
    with api.services.db() as s:
        assert hosts.is_up(s, "h1")


# -- evacuate --------------------------------------------------------------------------------------

def test_evacuate_rebuilds_the_server_on_another_host_with_its_ports_and_fences_the_old_one(cloud: Cloud) -> None:
    server = boot_on_a(cloud)
    sid = server["id"]
    addresses = server["addresses"]
    assert addresses and sid in cloud.a.guests()
    take_a_down(cloud)

    r = evacuate(cloud.admin, sid)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"adminPass"}  # below 2.14 the new password is returned
    done = wait_for(cloud.admin, sid, "ACTIVE")
    assert done["OS-EXT-SRV-ATTR:host"] == B
    assert done["addresses"] == addresses  # same ports, same IPs ...
    assert {p["binding:host_id"] for p in ports_of(cloud, sid)} == {B}  # ... bound to the new host
    assert sid in cloud.b.guests()
    actions = cloud.admin.get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert actions[0]["action"] == "evacuate"
    # os-migrations shows the move as Nova records it.
    moves = cloud.admin.at("2.23").get("/os-migrations", migration_type="evacuation").json()["migrations"]
    assert [(m["instance_uuid"], m["migration_type"], m["status"], m["source_compute"], m["dest_compute"])
            for m in moves] == [(sid, "evacuation", "done", A, B)], moves
    # The old host's claim is gone: no queue, no spec for it.
    status, body = call(cloud.api, cloud.a.credential, A, "pending_work", host=A)
    assert (status, METHODS["pending_work"].decode_result(body)) == (200, [])
    assert call(cloud.api, cloud.a.credential, A, "spec", instance_id=sid)[0] == 404


def test_a_stopped_server_is_evacuated_to_shutoff(cloud: Cloud) -> None:
    sid = boot_on_a(cloud)["id"]
    assert cloud.alice.post(f"/servers/{sid}/action", {"os-stop": None}).status_code == 202
    wait_for(cloud.alice, sid, "SHUTOFF")
    take_a_down(cloud)
    r = evacuate(cloud.admin, sid, "2.29", host=B)
    assert (r.status_code, r.content) == (200, b"")  # from 2.14 no body
    assert wait_for(cloud.admin, sid, "SHUTOFF")["OS-EXT-SRV-ATTR:host"] == B


def test_evacuate_is_refused_while_the_source_host_is_up(cloud: Cloud) -> None:
    sid = boot_on_a(cloud)["id"]
    r = evacuate(cloud.admin, sid)
    assert r.status_code == 400, r.text
    assert r.json()["badRequest"]["message"] == f"Compute service of {A} is still in use."
    assert cloud.admin.get(f"/servers/{sid}").json()["server"]["OS-EXT-SRV-ATTR:host"] == A


def test_evacuate_is_for_admins_and_another_projects_server_is_not_found(cloud: Cloud) -> None:
    sid = boot_on_a(cloud)["id"]
    take_a_down(cloud)
    assert evacuate(cloud.alice, sid).status_code == 403
    assert evacuate(cloud.bob, sid).status_code == 404
    assert cloud.admin.get(f"/servers/{sid}").json()["server"]["OS-EXT-SRV-ATTR:host"] == A


def test_bad_evacuate_bodies_are_400_and_unknown_hosts_404(cloud: Cloud) -> None:
    sid = boot_on_a(cloud)["id"]
    take_a_down(cloud)
    assert evacuate(cloud.admin, sid, "2.1", host=B).status_code == 400  # onSharedStorage is required
    assert evacuate(cloud.admin, sid, "2.14", onSharedStorage=False).status_code == 400  # gone in 2.14
    assert evacuate(cloud.admin, sid, "2.14", force=True).status_code == 400  # not before 2.29
    assert evacuate(cloud.admin, sid, "2.29", force=True).status_code == 400  # force needs a host
    assert evacuate(cloud.admin, sid, onSharedStorage=True).status_code == 400  # no shared storage here
    assert evacuate(cloud.admin, sid, "2.29", host=A).status_code == 400  # the same host
    r = evacuate(cloud.admin, sid, "2.29", host="nowhere")
    assert r.status_code == 404 and r.json()["itemNotFound"]["message"] == "Compute host nowhere not found."


def test_when_no_host_fits_the_server_stays_and_its_fault_names_each_host(cloud: Cloud) -> None:
    sid = boot_on_a(cloud)["id"]
    take_a_down(cloud)
    assert cloud.admin.put("/os-services/disable", {"host": B, "binary": "nova-compute"}).status_code == 200
    r = evacuate(cloud.admin, sid)
    assert r.status_code == 200
    server = cloud.admin.get(f"/servers/{sid}").json()["server"]
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", A)
    request = r.headers["x-openstack-request-id"]
    action = cloud.admin.get(f"/servers/{sid}/os-instance-actions/{request}").json()["instanceAction"]
    assert (action["action"], action["message"]) == ("evacuate", "Error")
    why = action["events"][0]["traceback"]
    assert why.startswith("No valid host was found.") and f"{B}: ComputeFilter" in why and "disabled" in why
    moves = cloud.admin.at("2.23").get("/os-migrations").json()["migrations"]
    assert [(m["migration_type"], m["status"], m["source_compute"], m["dest_compute"]) for m in moves] == [
        ("evacuation", "error", A, None)], moves


def refused_evacuation(cloud: Cloud, server_id: str) -> str:
    """Evacuate ``server_id`` off the down host A where no host may take it: the server stays, and
    the reason its action records."""
    r = evacuate(cloud.admin, server_id)
    assert r.status_code == 200, r.text
    server = cloud.admin.get(f"/servers/{server_id}").json()["server"]
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", A)
    request = r.headers["x-openstack-request-id"]
    action = cloud.admin.get(f"/servers/{server_id}/os-instance-actions/{request}").json()["instanceAction"]
    return str(action["events"][0]["traceback"])


def test_an_evacuation_keeps_the_zone_the_server_was_created_in(cloud: Cloud) -> None:
    """As Nova's request spec: a server created in zone nova is not evacuated to B in az-b; one
    created without a zone is, and then shows B's zone."""
    admin = cloud.admin
    agg = admin.post("/os-aggregates", {"aggregate": {"name": "b", "availability_zone": "az-b"}}).json()["aggregate"]
    assert admin.post(f"/os-aggregates/{agg['id']}/action", {"add_host": {"host": B}}).status_code == 200
    pinned = boot_on_a(cloud, "pinned", availability_zone="nova")["id"]
    free = boot_on_a(cloud, "free")["id"]
    take_a_down(cloud)
    why = refused_evacuation(cloud, pinned)
    assert f"{B}: AvailabilityZoneFilter: host is in 'az-b', 'nova' requested" in why, why
    assert evacuate(admin, free).status_code == 200
    done = wait_for(admin, free, "ACTIVE")
    assert (done["OS-EXT-SRV-ATTR:host"], done["OS-EXT-AZ:availability_zone"]) == (B, "az-b")


def test_an_evacuation_keeps_the_servers_group_policy(cloud: Cloud) -> None:
    r = cloud.alice.at("2.15").post("/os-server-groups", {"server_group": {"name": "spread",
                                                                           "policies": ["anti-affinity"]}})
    assert r.status_code == 200, r.text
    hints = {"group": r.json()["server_group"]["id"]}
    first = boot_on_a(cloud, "first", hints)["id"]
    r = cloud.alice.post("/servers", {"server": {"name": "second", "imageRef": cloud.image, "flavorRef": "42",
                                                 "networks": [{"uuid": cloud.net}]}, "os:scheduler_hints": hints})
    assert r.status_code == 202, r.text
    second = wait_for(cloud.admin, r.json()["server"]["id"], "ACTIVE")
    assert second["OS-EXT-SRV-ATTR:host"] == B
    take_a_down(cloud)
    why = refused_evacuation(cloud, first)  # B runs the group's other member
    assert f"{B}: ServerGroupAntiAffinityFilter" in why, why


# -- fencing ---------------------------------------------------------------------------------------

def test_a_fenced_host_reporting_on_an_evacuated_server_is_refused(cloud: Cloud) -> None:
    sid = boot_on_a(cloud)["id"]
    create_request = cloud.admin.get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"][-1]
    take_a_down(cloud)
    assert evacuate(cloud.admin, sid).status_code == 200
    wait_for(cloud.admin, sid, "ACTIVE")

    # Host A comes back from its partition still believing the server is its own, and reports on it.
    stale = Outcome(instance_id=sid, op="spawn", request_id=create_request["request_id"],
                    power_state=int(PowerState.CRASHED), error="the guest died on host A")
    assert call(cloud.api, cloud.a.credential, A, "finish", outcome=stale)[0] == 404
    assert call(cloud.api, cloud.a.credential, A, "progress", instance_id=sid,
                request_id=create_request["request_id"], task_state="spawning")[0] == 404
    # Even handed to the control plane directly (a report that raced the move), it is refused.
    cloud.api.services.host_link.finish(stale)
    server = cloud.admin.get(f"/servers/{sid}").json()["server"]
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"], server.get("fault")) == ("ACTIVE", B, None)
    # A's power sync cannot touch it either: to A it is a stranger to destroy.
    from yunstack.compute.driver import InstanceInfo

    seen = [InstanceInfo(id=sid, power_state=PowerState.SHUTDOWN)]
    status, body = call(cloud.api, cloud.a.credential, A, "sync_power", host=A, infos=seen, busy=[])
    assert (status, METHODS["sync_power"].decode_result(body)) == (200, [sid])
    assert cloud.admin.get(f"/servers/{sid}").json()["server"]["status"] == "ACTIVE"


def test_the_returning_host_destroys_only_the_guests_that_were_evacuated(cloud: Cloud) -> None:
    moved = boot_on_a(cloud, "moved")["id"]
    stays = boot_on_a(cloud, "stays")["id"]
    take_a_down(cloud)
    assert evacuate(cloud.admin, moved).status_code == 200
    wait_for(cloud.admin, moved, "ACTIVE")
    assert {moved, stays} <= cloud.a.guests()  # A was cut off: both guests still run there

    cloud.a.start()  # A's agent returns: it heartbeats, then syncs power
    until(lambda: moved not in cloud.a.guests())
    assert stays in cloud.a.guests()
    assert moved in cloud.b.guests()
    for sid, host in ((moved, B), (stays, A)):
        server = cloud.admin.get(f"/servers/{sid}").json()["server"]
        assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", host)
