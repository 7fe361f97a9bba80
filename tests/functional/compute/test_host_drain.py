"""`yun host drain`: disable a host, then live-migrate its servers away (``client.drain``).

Two real agents on FakeDrivers over the real protocol (``test_live_migration.two``); the drain runs
through ``YunClient`` against the in-process API, as the CLI does against a served one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.functional.compute import test_live_migration
from tests.functional.compute.test_live_migration import B
from tests.functional.compute.test_servers import action, boot, wait_for
from yunstack.api.app import create_app
from yunstack.client import ApiError, CloudCredentials, YunClient
from yunstack.client.drain import drain_host
from yunstack.wiring import Services

host, world, qcow2, two = (test_live_migration.host, test_live_migration.world, test_live_migration.qcow2,
                           test_live_migration.two)


class InProcess(httpx.BaseTransport):
    """The client's requests, answered by the app in this process (Starlette's TestClient)."""

    def __init__(self, services: Services) -> None:
        self.app = TestClient(create_app(services), base_url="http://127.0.0.1:8080")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        r = self.app.request(request.method, str(request.url), headers=dict(request.headers), content=request.read())
        return httpx.Response(r.status_code, headers=list(r.headers.multi_items()), content=r.content)

    def close(self) -> None:
        self.app.close()


def client_for(services: Services, user: str, password: str, project: str) -> YunClient:
    creds = CloudCredentials(auth_url="http://127.0.0.1:8080/identity/v3", username=user, password=password,
                             project_name=project)
    return YunClient("http://127.0.0.1:8080", credentials=creds, transport=InProcess(services))


@pytest.fixture
def admin_client(two: dict[str, Any]) -> Iterator[YunClient]:
    with client_for(two["api"].services, "admin", "adminpw", "admin") as c:
        yield c


def services(two: dict[str, Any]) -> dict[str, dict[str, Any]]:
    listed = two["admin"].get("/os-services", binary="nova-compute").json()["services"]
    return {s["host"]: s for s in listed}


def test_a_drain_disables_the_host_and_moves_running_paused_and_stopped_servers_each_as_it_is(
        two: dict[str, Any], admin_client: YunClient) -> None:
    a = two["host"].services.config.host_name
    stopped = boot(two, name="stopped", availability_zone=f"nova:{a}", nova=two["admin"])["id"]
    paused = boot(two, name="paused", availability_zone=f"nova:{a}", nova=two["admin"])["id"]
    shelved = boot(two, name="shelved", availability_zone=f"nova:{a}", nova=two["admin"])["id"]
    assert action(two["admin"], stopped, {"os-stop": None}).status_code == 202
    assert action(two["admin"], paused, {"pause": None}).status_code == 202
    assert action(two["admin"], shelved, {"shelve": None}).status_code == 202
    wait_for(two["admin"], stopped, "SHUTOFF")
    wait_for(two["admin"], paused, "PAUSED")
    wait_for(two["admin"], shelved, "SHELVED_OFFLOADED")  # on no host now: not the drain's
    rescued = boot(two, name="rescued", availability_zone=f"nova:{a}", nova=two["admin"])["id"]
    assert action(two["admin"], rescued, {"rescue": None}).status_code == 200
    wait_for(two["admin"], rescued, "RESCUE")

    results = {r.server_id: r for r in drain_host(admin_client, a, reason="new RAM", poll=0.05)}

    assert services(two)[a]["status"] == "disabled" and services(two)[a]["disabled_reason"] == "new RAM"
    for sid, status in ((two["server"], "ACTIVE"), (paused, "PAUSED"), (stopped, "SHUTOFF")):
        assert (results[sid].result, results[sid].host) == ("moved", B), results[sid]
        assert wait_for(two["admin"], sid, status)["OS-EXT-SRV-ATTR:host"] == B
    assert shelved not in results
    skipped = results[rescued]
    assert (skipped.result, skipped.host) == ("skipped", a) and skipped.why.startswith("RESCUE"), skipped
    # Draining again finds only what could not move; nothing new lands on the disabled host.
    again = drain_host(admin_client, a, poll=0.05)
    assert [(r.server_id, r.result) for r in again] == [(rescued, "skipped")]


def test_when_no_other_host_can_take_a_server_the_drain_says_why_and_it_stays(
        two: dict[str, Any], admin_client: YunClient) -> None:
    a = two["host"].services.config.host_name
    r = two["admin"].put("/os-services/disable-log-reason",
                         {"host": B, "binary": "nova-compute", "disabled_reason": "broken fan"})
    assert r.status_code == 200, r.text
    [result] = drain_host(admin_client, a, poll=0.05)
    assert (result.server_id, result.result, result.host) == (two["server"], "failed", a), result
    assert B in result.why and "disabled" in result.why, result.why
    assert wait_for(two["admin"], two["server"], "ACTIVE")["OS-EXT-SRV-ATTR:host"] == a


def test_only_an_admin_drains_and_an_unknown_host_is_an_error(two: dict[str, Any], admin_client: YunClient) -> None:
    with pytest.raises(ApiError) as unknown:
        drain_host(admin_client, "nowhere")
    assert unknown.value.status == 404
    with client_for(two["api"].services, "alice", "alice-pw", "alpha") as alice:
        with pytest.raises(ApiError) as refused:
            drain_host(alice, two["host"].services.config.host_name)
    assert refused.value.status == 403
    assert all(s["status"] == "enabled" for s in services(two).values())
