"""The agent's link to the control plane: the same tests against the in-process and the HTTP link.

``LocalControlPlane`` calls the services directly; ``HttpControlPlane`` makes the same calls over
``/agent/v1`` (here against the in-process ASGI app, with a host credential).  No agent runs: the
tests play the agent's part by hand, so each protocol method is seen from the host's side.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Api, need
from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from yunstack.agent.http import HttpControlPlane
from yunstack.agent.link import Answer, ControlPlane, Outcome, work_key
from yunstack.api.app import create_app
from yunstack.compute import states
from yunstack.compute.driver import InstanceInfo, PowerState
from yunstack.compute.fake import FakeDriver
from yunstack.errors import NotFound

IM = "/image/v2"


@dataclass
class Side:
    link: ControlPlane
    host: str
    api: Api
    admin: Nova
    image: str


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(shutil.which("qemu-img") is not None, "qemu-img")
    path = tmp_path_factory.mktemp("disks") / "x.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "16M"], check=True, capture_output=True)
    return path


@pytest.fixture(params=["local", "http"])
def side(request: pytest.FixtureRequest, api: Api, qcow2: Path) -> Iterator[Side]:
    services = api.services
    host = services.config.host_name
    services.flavors.ensure_defaults()
    token = api.admin()
    h = api.headers(token)
    r = api.http.post(f"{IM}/images", json={"name": "cirros", "disk_format": "qcow2", "container_format": "bare",
                                             "visibility": "public"}, headers=h)
    image = r.json()["id"]
    r = api.http.put(f"{IM}/images/{image}/file", content=qcow2.read_bytes(),
                     headers={**h, "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    if request.param == "local":
        link: Any = services.host_link
        client = None
    else:
        client = TestClient(create_app(services), base_url="http://127.0.0.1:8080")
        link = HttpControlPlane("http://127.0.0.1:8080", host, services.hostauth.issue(host), client=client)
    # The host says it is alive, so the scheduler places servers on it.
    link.heartbeat(host, asyncio.run(FakeDriver(hostname=host).host_info()))
    try:
        yield Side(link=link, host=host, api=api, admin=Nova(api, token), image=image)
    finally:
        if client is not None:
            client.close()


def create(side: Side, name: str = "vm") -> str:
    r = side.admin.post("/servers", {"server": {"name": name, "imageRef": side.image, "flavorRef": "42",
                                                "networks": "none"}})
    assert r.status_code == 202, r.text
    return str(r.json()["server"]["id"])


def test_wait_hands_out_queued_work_once_the_agent_has_it_it_is_left_out(side: Side) -> None:
    server = create(side)
    found = side.link.wait(side.host, (), 5.0)
    assert [(w.instance_id, w.op) for w in found.work] == [(server, "spawn")]
    started = time.monotonic()
    again = side.link.wait(side.host, [work_key(w) for w in found.work], 0.3)
    assert again.work == () and again.calls == ()
    assert time.monotonic() - started >= 0.25  # it waited for news, then gave up empty


def test_a_waiting_host_is_woken_as_soon_as_work_is_queued(side: Side) -> None:
    got: list[float] = []

    def wait() -> None:
        # A wait may end early without work (the first one on a control plane also says "network"):
        # the agent just waits again, and so does this host.
        deadline = time.monotonic() + 10.0
        while (left := deadline - time.monotonic()) > 0:
            if side.link.wait(side.host, (), left).work:
                got.append(time.monotonic())
                return

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)  # let the long-poll start waiting (an earlier look would find the work at once anyway)
    queued = time.monotonic()
    create(side)
    waiter.join(10)
    assert got, "the waiting host was not woken"
    assert got[0] - queued < 3.0


def test_a_hosts_first_wait_and_a_network_change_of_its_say_network(side: Side) -> None:
    """A host's first wait on a control plane says "network" (changes may have had no one to tell);
    then only a change that concerns it does (this host is the network host: every change does)."""
    assert side.link.wait(side.host, (), 5.0).network
    assert not side.link.wait(side.host, (), 0.2).network
    answers: list[tuple[bool, float]] = []

    def wait() -> None:
        found = side.link.wait(side.host, (), 10.0)
        answers.append((found.network, time.monotonic()))

    waiter = threading.Thread(target=wait)
    waiter.start()
    changed = time.monotonic()
    r = side.api.http.post("/networking/v2.0/networks", json={"network": {"name": "n"}},
                           headers=side.api.headers(side.admin.token))
    assert r.status_code == 201, r.text
    waiter.join(10)
    ((network, at),) = answers
    assert network and at - changed < 3.0


def test_spec_and_finish_carry_a_build_to_active(side: Side) -> None:
    server = create(side)
    spec = side.link.spec(server)
    assert (spec.id, spec.image_id, spec.memory_mib) == (server, side.image, 128)
    work = side.link.wait(side.host, (), 5.0).work[0]
    assert work.op == "spawn" and work.task_id and work.attempt == 1  # claimed: the step's task, first run
    side.link.progress(server, work.request_id, states.SPAWNING)
    # A report that does not name the run holding the step changes nothing.
    side.link.finish(Outcome(instance_id=server, op="spawn", request_id=work.request_id,
                             power_state=int(PowerState.RUNNING)))
    shown = side.admin.get(f"/servers/{server}").json()["server"]
    assert (shown["status"], shown["OS-EXT-STS:task_state"]) == ("BUILD", "spawning")
    side.link.finish(Outcome(instance_id=server, op="spawn", request_id=work.request_id,
                             power_state=int(PowerState.RUNNING), task_id=work.task_id, attempt=work.attempt))
    shown = side.admin.get(f"/servers/{server}").json()["server"]
    assert (shown["status"], shown["OS-EXT-STS:task_state"]) == ("ACTIVE", None)
    assert side.link.wait(side.host, (), 0.0).work == ()


def test_an_unknown_instance_is_not_found(side: Side) -> None:
    with pytest.raises(NotFound):
        side.link.spec("00000000-0000-0000-0000-000000000000")


def test_fetch_image_writes_the_bytes_and_says_the_format(side: Side, tmp_path: Path, qcow2: Path) -> None:
    create(side)  # the host may read an image once one of its instances boots from it
    dest = tmp_path / "image"
    assert side.link.fetch_image(side.image, dest) == "qcow2"
    assert dest.read_bytes() == qcow2.read_bytes()


def test_sync_power_names_the_guests_the_control_plane_does_not_know(side: Side) -> None:
    server = create(side)
    stranger = InstanceInfo(id="11111111-1111-1111-1111-111111111111", power_state=PowerState.RUNNING)
    mine = InstanceInfo(id=server, power_state=PowerState.RUNNING)
    assert list(side.link.sync_power(side.host, [mine, stranger], [server])) == [stranger.id]


def test_network_state_is_this_hosts(side: Side) -> None:
    assert side.link.network_state(side.host).host == side.host


def test_a_console_read_goes_to_the_waiting_host_and_its_answer_comes_back(side: Side) -> None:
    server = create(side)
    work = side.link.wait(side.host, (), 5.0).work[0]
    side.link.finish(Outcome(instance_id=server, op="spawn", request_id=work.request_id,
                             power_state=int(PowerState.RUNNING), task_id=work.task_id, attempt=work.attempt))
    answered: list[str] = []

    def host() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for call in side.link.wait(side.host, (), 2.0).calls:
                side.link.answer(side.host, Answer(call_id=call.id, result=f"{call.kind} of {call.instance_id}"))
                answered.append(call.id)
                return

    agent = threading.Thread(target=host)
    agent.start()
    r = side.admin.post(f"/servers/{server}/action", {"os-getConsoleOutput": {"length": 10}})
    agent.join(10)
    assert r.status_code == 200, r.text
    assert r.json() == {"output": f"console_output of {server}"}
    assert len(answered) == 1


def test_an_answer_to_a_call_never_asked_is_not_found(side: Side) -> None:
    with pytest.raises(NotFound):
        side.link.answer(side.host, Answer(call_id="feedfacefeedface", result="x"))
