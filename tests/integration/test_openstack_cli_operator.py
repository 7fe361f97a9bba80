"""The real `openstack` CLI on a real `yun up` with real QEMU: server groups, compute services, usage,
and the serial console URL with a websocket that types into the tiny guest's shell."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from tests.cloud import RunningCloud, serving_cloud
from tests.integration.test_openstack_cli_compute import wait_console, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCloud]:
    with serving_cloud(tmp_path_factory.mktemp("operator")) as running:
        yield running


def test_services_groups_usage_and_the_serial_console_through_the_cli(cloud: RunningCloud) -> None:
    (service,) = cloud.osc_json("compute", "service", "list")
    assert (service["Binary"], service["State"], service["Status"]) == ("nova-compute", "up", "enabled")

    group = cloud.osc_json("server", "group", "create", "--policy", "anti-affinity", "spread")
    assert group["name"] == "spread"
    made = cloud.osc_json("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--hint",
                          f"group={group['id']}", "--wait", "con-1")
    assert made["status"] == "ACTIVE"
    second = cloud.osc_json("server", "create", "--image", "tiny", "--flavor", "m1.nano", "--hint",
                            f"group={group['id']}", "con-2")
    failed = wait_status(cloud, str(second["id"]), "ERROR")
    assert "ServerGroupAntiAffinityFilter" in str(failed.get("fault"))
    members = cloud.osc_json("server", "group", "show", "spread")["members"]
    assert str(made["id"]) in str(members)

    usage = cloud.osc_json("usage", "list")
    assert len(usage) == 1 and float(usage[0]["RAM MB-Hours"]) > 0

    url = cloud.osc_json("console", "url", "show", "--serial", "con-1")["url"]
    assert url.startswith(f"ws://127.0.0.1:{cloud.port}/compute/console/serial?token=")
    wait_console(cloud, "con-1", "YUNSTACK-READY", timeout=180)
    seen = b""
    with connect(url, subprotocols=["binary"], open_timeout=10) as ws:  # type: ignore[list-item]
        deadline = time.monotonic() + 60
        typed_at = 0.0
        while b"answer-42" not in seen:
            assert time.monotonic() < deadline, f"no answer on the serial console: {seen[-500:]!r}"
            if time.monotonic() - typed_at > 5:  # the shell may still be starting: type again
                ws.send(b"echo answer-$((6*7))\n")
                typed_at = time.monotonic()
            try:
                data = ws.recv(timeout=1)
            except TimeoutError:
                continue
            seen += data if isinstance(data, bytes) else data.encode()
    assert "answer-42" in wait_console(cloud, "con-1", "answer-42")  # console.log still records

    for name in ("con-1", "con-2"):
        cloud.osc("server", "delete", "--wait", name)
    cloud.osc("server", "group", "delete", "spread")
