"""Host identity on ``/agent/v1``, written as the attacks: a host is only ever itself.

Host A is this cloud's compute host (it runs a server); host B is another host, joined with its own
token.  B then tries everything it could to see or change A's work, on the real wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from starlette.websockets import WebSocketDisconnect

from tests.conftest import Api
from tests.contract.test_control_plane import qcow2  # noqa: F401  (the fixture)
from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from tests.functional.compute.work import drop_work
from yunstack.agent.link import Answer, Outcome
from yunstack.agent.wire import METHODS
from yunstack.api.console_relay import RELAYS, Inbox
from yunstack.compute import states
from yunstack.compute.driver import InstanceInfo, PowerState
from yunstack.compute.fake import FakeDriver
from yunstack.db.tables import hosts as h

A = "/agent/v1"


@dataclass
class Cloud:
    api: Api
    admin: Nova
    host_a: str
    cred_a: str
    host_b: str
    cred_b: str
    server: str  # on host A
    image: str  # only A's server boots from it


def add_host(api: Api, token: str, name: str) -> str:
    r = api.http.post(f"{A}/hosts", json={"host": {"name": name}}, headers=api.headers(token))
    assert r.status_code == 201, r.text
    assert r.json()["host"]["name"] == name
    return str(r.json()["host"]["join_token"])


def join(api: Api, token: str) -> tuple[int, dict[str, str]]:
    r = api.http.post(f"{A}/join", json={"join_token": token})
    return r.status_code, r.json()


def call(api: Api, cred: str | None, as_host: str, method: str, **args: object) -> tuple[int, bytes]:
    """One protocol call as ``as_host`` (the path) with ``cred``, encoded as a real agent would."""
    headers = {"Content-Type": "application/json"}
    if cred is not None:
        headers["Authorization"] = f"Bearer {cred}"
    r = api.http.post(f"{A}/hosts/{as_host}/calls/{method}", content=METHODS[method].encode_args(args),
                      headers=headers)
    return r.status_code, r.content


@pytest.fixture
def cloud(api: Api, qcow2: Path) -> Iterator[Cloud]:  # noqa: F811
    services = api.services
    services.flavors.ensure_defaults()
    token = api.admin()
    admin = Nova(api, token)
    host_a = services.config.host_name
    status, a = join(api, add_host(api, token, host_a))
    assert status == 200
    status, b = join(api, add_host(api, token, "host-b"))
    assert (status, b["host"]) == (200, "host-b")
    info = asyncio.run(FakeDriver(hostname=host_a).host_info())
    assert call(api, a["credential"], host_a, "heartbeat", host=host_a, info=info)[0] == 200
    h_ = api.headers(token)
    r = api.http.post("/image/v2/images", json={"name": "a-only", "disk_format": "qcow2",
                                                "container_format": "bare", "visibility": "public"}, headers=h_)
    image = r.json()["id"]
    api.http.put(f"/image/v2/images/{image}/file", content=qcow2.read_bytes(),
                 headers={**h_, "Content-Type": "application/octet-stream"})
    r = admin.post("/servers", {"server": {"name": "a1", "imageRef": image, "flavorRef": "42",
                                           "networks": "none"}})
    assert r.status_code == 202, r.text
    yield Cloud(api=api, admin=admin, host_a=host_a, cred_a=a["credential"], host_b="host-b",
                cred_b=b["credential"], server=r.json()["server"]["id"], image=image)


def test_a_join_token_works_once(api: Api) -> None:
    token = add_host(api, api.admin(), "h1")
    assert join(api, token)[0] == 200
    status, body = join(api, token)
    assert status == 401, body


def test_an_expired_join_token_is_refused(api: Api) -> None:
    token = add_host(api, api.admin(), "h2")
    with api.services.db.begin() as s:
        s.execute(update(h.HostJoinToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert join(api, token)[0] == 401


def test_an_unknown_join_token_is_refused(api: Api) -> None:
    assert join(api, "not-a-token")[0] == 401


def test_only_an_admin_adds_a_host(api: Api) -> None:
    from tests.functional.identity.test_identity_api import make_member

    make_member(api, api.admin(), "alpha", "alice")
    r = api.http.post(f"{A}/hosts", json={"host": {"name": "h3"}},
                      headers=api.headers(api.login("alice", "alice-pw", "alpha")))
    assert r.status_code == 403, r.text
    r = api.http.post(f"{A}/hosts", json={"host": {"name": "h3"}})
    assert r.status_code == 401


def test_a_bad_host_name_is_400(api: Api) -> None:
    r = api.http.post(f"{A}/hosts", json={"host": {"name": "../etc"}}, headers=api.headers(api.admin()))
    assert r.status_code == 400, r.text


def test_joining_again_replaces_the_hosts_credential(cloud: Cloud) -> None:
    # Used just before: the API process remembers it was good (KnownCredentials), and still
    # must refuse it the moment it is replaced.
    assert call(cloud.api, cloud.cred_b, cloud.host_b, "network_state", host=cloud.host_b)[0] == 200
    status, again = join(cloud.api, add_host(cloud.api, cloud.api.admin(), cloud.host_b))
    assert status == 200
    assert call(cloud.api, cloud.cred_b, cloud.host_b, "network_state", host=cloud.host_b)[0] == 401
    assert call(cloud.api, again["credential"], cloud.host_b, "network_state", host=cloud.host_b)[0] == 200


def test_no_credential_or_a_wrong_one_is_401(cloud: Cloud) -> None:
    assert call(cloud.api, None, cloud.host_a, "pending_work", host=cloud.host_a)[0] == 401
    assert call(cloud.api, "guessed", cloud.host_a, "pending_work", host=cloud.host_a)[0] == 401
    r = cloud.api.http.get(f"{A}/hosts/{cloud.host_a}/images/{cloud.image}")
    assert r.status_code == 401


def test_host_b_cannot_act_as_host_a_in_the_path_or_the_arguments(cloud: Cloud) -> None:
    a, b = cloud.host_a, cloud.host_b
    assert call(cloud.api, cloud.cred_b, a, "pending_work", host=a)[0] == 403
    assert call(cloud.api, cloud.cred_b, b, "pending_work", host=a)[0] == 403
    assert call(cloud.api, cloud.cred_b, b, "wait", host=a, busy=[], timeout=0.0)[0] == 403
    assert call(cloud.api, cloud.cred_b, b, "network_state", host=a)[0] == 403
    info = asyncio.run(FakeDriver(hostname=a).host_info())
    assert call(cloud.api, cloud.cred_b, b, "heartbeat", host=a, info=info)[0] == 403
    # Its own queue is empty: A's build is not B's work.
    status, body = call(cloud.api, cloud.cred_b, b, "pending_work", host=b)
    assert (status, METHODS["pending_work"].decode_result(body)) == (200, [])


def test_host_b_cannot_read_host_as_spec_or_image(cloud: Cloud) -> None:
    assert call(cloud.api, cloud.cred_b, cloud.host_b, "spec", instance_id=cloud.server)[0] == 404
    r = cloud.api.http.get(f"{A}/hosts/{cloud.host_b}/images/{cloud.image}",
                           headers={"Authorization": f"Bearer {cloud.cred_b}"})
    assert r.status_code == 404
    # A itself reads both.
    assert call(cloud.api, cloud.cred_a, cloud.host_a, "spec", instance_id=cloud.server)[0] == 200
    r = cloud.api.http.get(f"{A}/hosts/{cloud.host_a}/images/{cloud.image}",
                           headers={"Authorization": f"Bearer {cloud.cred_a}"})
    assert r.status_code == 200 and r.headers["X-Disk-Format"] == "qcow2"


def test_host_b_cannot_report_host_as_instance(cloud: Cloud) -> None:
    work = METHODS["pending_work"].decode_result(
        call(cloud.api, cloud.cred_a, cloud.host_a, "pending_work", host=cloud.host_a)[1])[0]
    forged = Outcome(instance_id=cloud.server, op="spawn", request_id=work.request_id,
                     power_state=int(PowerState.NOSTATE), error="forged by host B")
    assert call(cloud.api, cloud.cred_b, cloud.host_b, "finish", outcome=forged)[0] == 404
    assert call(cloud.api, cloud.cred_b, cloud.host_b, "progress", instance_id=cloud.server,
                request_id=work.request_id, task_state="forged")[0] == 404
    r = cloud.api.http.put(f"{A}/hosts/{cloud.host_b}/instances/{cloud.server}/snapshots/{cloud.image}",
                           content=b"evil", headers={"Authorization": f"Bearer {cloud.cred_b}"})
    assert r.status_code == 404
    server = cloud.admin.get(f"/servers/{cloud.server}").json()["server"]
    assert (server["status"], server["OS-EXT-STS:task_state"], server.get("fault")) == ("BUILD", "spawning", None)


def test_host_b_cannot_make_host_a_destroy_or_lose_its_guests(cloud: Cloud) -> None:
    seen = [InstanceInfo(id=cloud.server, power_state=PowerState.RUNNING)]
    status, body = call(cloud.api, cloud.cred_b, cloud.host_b, "sync_power", host=cloud.host_b, infos=seen,
                        busy=[])
    # To B the server is a stranger (B should destroy its own copy); A's record is untouched.
    assert (status, METHODS["sync_power"].decode_result(body)) == (200, [cloud.server])
    assert cloud.admin.get(f"/servers/{cloud.server}").json()["server"]["status"] == "BUILD"


def test_host_b_cannot_answer_a_read_asked_of_host_a(cloud: Cloud) -> None:
    hub = cloud.api.services.compute.hub
    unsubscribe = hub.subscribe(cloud.host_a, lambda: None)  # host A counts as connected
    try:
        import threading

        asked: list[str] = []

        def ask() -> None:
            try:
                hub.call(cloud.host_a, cloud.server, "console_output")
            except Exception as exc:  # the host never answers in this test
                asked.append(str(exc))

        hub.call_timeout = 10.0  # long enough for the wait below to take the read on a loaded machine
        asker = threading.Thread(target=ask)
        asker.start()
        status, body = call(cloud.api, cloud.cred_a, cloud.host_a, "wait", host=cloud.host_a,
                            busy=["x"], timeout=5.0)
        calls = METHODS["wait"].decode_result(body).calls
        assert status == 200 and len(calls) == 1
        forged = Answer(call_id=calls[0].id, result="B's lie")
        assert call(cloud.api, cloud.cred_b, cloud.host_b, "answer", host=cloud.host_b, answer=forged)[0] == 404
        asker.join(30)
        assert asked and "did not answer" in asked[0]
    finally:
        unsubscribe()


def test_a_host_that_does_not_answer_a_read_is_a_clear_409(cloud: Cloud) -> None:
    hub = cloud.api.services.compute.hub
    with cloud.api.services.db.begin() as s:
        from yunstack.db.tables import compute as t

        s.execute(update(t.Instance).where(t.Instance.id == cloud.server).values(
            vm_state=states.ACTIVE, task_state=None))
        drop_work(s, cloud.server)
    r = cloud.admin.post(f"/servers/{cloud.server}/action", {"os-getConsoleOutput": {}})
    assert r.status_code == 409
    assert f"Host {cloud.host_a} is not connected" in r.json()["conflictingRequest"]["message"]
    unsubscribe = hub.subscribe(cloud.host_a, lambda: None)  # connected, but it never answers
    hub.call_timeout = 0.5
    try:
        r = cloud.admin.post(f"/servers/{cloud.server}/action", {"os-getConsoleOutput": {}})
    finally:
        unsubscribe()
    assert r.status_code == 409
    assert f"Host {cloud.host_a} did not answer within" in r.json()["conflictingRequest"]["message"]


def test_host_b_cannot_take_the_serial_console_relay_opened_for_host_a(cloud: Cloud) -> None:
    async def opened() -> tuple[str, Inbox]:
        inbox = Inbox.here()
        session, _ = RELAYS.open(cloud.host_a, inbox)
        return session, inbox

    session, _ = asyncio.run(opened())
    try:
        attempts = [(cloud.cred_b, cloud.host_b), (cloud.cred_b, cloud.host_a), (None, cloud.host_a),
                    ("forged", cloud.host_a)]
        for cred, as_host in attempts:
            headers = {} if cred is None else {"Authorization": f"Bearer {cred}"}
            with pytest.raises(WebSocketDisconnect) as refused, cloud.api.http.websocket_connect(
                    f"{A}/hosts/{as_host}/consoles/{session}", headers=headers):
                pass
            assert refused.value.code == 1008, (cred, as_host)
        # Host A itself still can: the failed attempts did not spend the session.
        with cloud.api.http.websocket_connect(f"{A}/hosts/{cloud.host_a}/consoles/{session}",
                                              headers={"Authorization": f"Bearer {cloud.cred_a}"}):
            pass
        with pytest.raises(WebSocketDisconnect), cloud.api.http.websocket_connect(
                f"{A}/hosts/{cloud.host_a}/consoles/{session}", headers={"Authorization": f"Bearer {cloud.cred_a}"}):
            pass  # a session pairs once
    finally:
        RELAYS.forget(session)


def test_a_credential_in_use_stops_working_the_moment_its_service_is_deleted(cloud: Cloud) -> None:
    """A partitioned host that was deleted cannot come back on a credential the API had trusted."""
    b = cloud.host_b
    assert call(cloud.api, cloud.cred_b, b, "heartbeat", host=b,
                info=asyncio.run(FakeDriver(hostname=b).host_info()))[0] == 200  # checked: remembered
    r = cloud.admin.get("/os-services")
    assert r.status_code == 200, r.text
    services = r.json()["services"]
    [service] = [sv for sv in services if sv["host"] == b]
    assert cloud.admin.delete(f"/os-services/{service['id']}").status_code == 204
    assert call(cloud.api, cloud.cred_b, b, "network_state", host=b)[0] == 401
    assert call(cloud.api, cloud.cred_b, b, "heartbeat", host=b,
                info=asyncio.run(FakeDriver(hostname=b).host_info()))[0] == 401  # no row comes back



def test_host_b_cannot_report_on_host_as_volume_nor_read_the_image_it_is_made_from(cloud: Cloud) -> None:
    """A (the control host) is the storage host: a volume's steps and its image are A's alone."""
    api = cloud.api
    h_ = api.headers(cloud.admin.token)
    r = api.http.post("/volume/v3/volumes", json={"volume": {"size": 1, "imageRef": cloud.image}}, headers=h_)
    assert r.status_code == 202, r.text
    volume = r.json()["volume"]["id"]
    # No agent runs here: the create stays queued on A, and A may read the image it names.
    forged = Outcome(instance_id=volume, op="volume_create", request_id="req-forged",
                     power_state=int(PowerState.NOSTATE), error="forged by host B", resource_type="volume")
    assert call(api, cloud.cred_b, cloud.host_b, "finish", outcome=forged)[0] == 404
    # Dressed up as a server's report it is no better: no instance of that id is B's either.
    as_server = Outcome(instance_id=volume, op="volume_create", request_id="req-forged",
                        power_state=int(PowerState.NOSTATE), error="forged by host B")
    assert call(api, cloud.cred_b, cloud.host_b, "finish", outcome=as_server)[0] == 404
    shown = api.http.get(f"/volume/v3/volumes/{volume}", headers=h_).json()["volume"]
    assert shown["status"] == "creating"
    # The server on A boots from the image too, so make B's refusal about the volume's step alone:
    # a second image only the volume names.
    r = api.http.post("/image/v2/images", json={"name": "vol-only", "disk_format": "raw",
                                                "container_format": "bare", "visibility": "public"}, headers=h_)
    image = r.json()["id"]
    api.http.put(f"/image/v2/images/{image}/file", content=b"\0" * 4096,
                 headers={**h_, "Content-Type": "application/octet-stream"})
    r = api.http.post("/volume/v3/volumes", json={"volume": {"size": 1, "imageRef": image}}, headers=h_)
    assert r.status_code == 202, r.text
    r = api.http.get(f"{A}/hosts/{cloud.host_b}/images/{image}", headers={"Authorization": f"Bearer {cloud.cred_b}"})
    assert r.status_code == 404
    r = api.http.get(f"{A}/hosts/{cloud.host_a}/images/{image}", headers={"Authorization": f"Bearer {cloud.cred_a}"})
    assert r.status_code == 200
