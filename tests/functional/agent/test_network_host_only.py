"""``[compute] enabled = false``: an agent that is a network host only (the lab's control host)."""

from __future__ import annotations

import time
from dataclasses import replace

from fastapi.testclient import TestClient

from tests.conftest import Api
from yunstack.agent.host import make_agent
from yunstack.agent.http import HttpControlPlane
from yunstack.api.app import create_app
from yunstack.compute.fake import FakeDriver
from yunstack.wiring import Services

URL = "http://127.0.0.1:8080"


def test_a_network_only_agent_serves_but_never_becomes_a_hypervisor(api: Api, services: Services) -> None:
    config = replace(services.config, compute=replace(services.config.compute, enabled=False, host="net-1"))
    client = TestClient(create_app(services), base_url=URL)
    agent = make_agent(config, HttpControlPlane(URL, "net-1", services.hostauth.issue("net-1"), client=client))
    agent.poll_timeout = 2.0
    agent.start()
    try:
        deadline = time.monotonic() + 10
        while not services.compute.hub.connected("net-1") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert services.compute.hub.connected("net-1")  # it long-polls: the control plane reaches it
        r = api.http.get("/compute/v2.1/os-hypervisors", headers=api.headers(api.admin()))
        assert r.status_code == 200 and r.json()["hypervisors"] == []
    finally:
        agent.stop()
        client.close()


def test_a_network_only_agent_runs_no_qemu_and_no_memory_manager(services: Services) -> None:
    config = replace(services.config, compute=replace(services.config.compute, enabled=False, driver="qemu"))
    agent = make_agent(config, HttpControlPlane(URL, "net-1", "unused"))
    assert isinstance(agent.driver, FakeDriver) and agent.memory is None and not agent.compute
