"""A crash between a create's rows and its queued work, or between a delete and its port release,
leaves nothing stuck: the agent's sync errors the server with a reason and frees what it held.

The crash is simulated where it happens: the network allocation dies with an unexpected error,
after the rows were committed and before the spawn was queued (what kill -9 does at that moment).
tests/integration/test_crash_restart.py does it with a real kill -9 of `yun up`.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_servers import body, until, wait_for
from tests.functional.network.conftest import Net
from yunstack.compute import agentlink
from yunstack.compute.inflight import CreatesInFlight
from yunstack.identity.context import system_context
from yunstack.types import new_uuid

world, host, qcow2 = servers.world, servers.host, servers.qcow2


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real grace (10 s) is for creates in flight; tests need not wait for it.
    monkeypatch.setattr(agentlink, "INTERRUPTED_CREATE_AFTER", timedelta(seconds=0.3))


def _network(world: dict[str, Any]) -> tuple[Net, str]:
    neutron = Net(world["api"], world["alice"].token)
    made = neutron.network("n1")
    neutron.subnet(made["id"], "10.31.0.0/24")
    return neutron, made["id"]


def _ports(neutron: Net, **params: str) -> list[dict[str, Any]]:
    r = neutron.get("/ports", **params)
    assert r.status_code == 200, r.text
    return list(r.json()["ports"])


def test_a_create_cut_off_before_its_spawn_was_queued_errors_with_a_reason_and_frees_its_port(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    neutron, net_id = _network(world)
    network = world["api"].services.network
    real = network.allocate_for_instance

    made: list[str] = []

    def allocate_then_die(*args: Any, **kwargs: Any) -> Any:
        made.extend(p.id for p in real(*args, **kwargs))
        raise RuntimeError("killed")  # the process dies here: the port exists, the spawn is not queued

    monkeypatch.setattr(network, "allocate_for_instance", allocate_then_die)
    nova = world["alice"]
    r = nova.post("/servers", body(world, "cut", networks=[{"uuid": net_id}]))
    assert r.status_code == 500
    monkeypatch.setattr(network, "allocate_for_instance", real)  # (undo() would undo the short grace too)
    [server] = nova.get("/servers").json()["servers"]
    assert len(made) == 1  # what the crash left behind: a port, and a row with no work

    errored = wait_for(nova, server["id"], "ERROR")
    assert "interrupted" in errored["fault"]["message"]
    until(lambda: _ports(neutron, device_id=server["id"]) == [], timeout=30.0)
    assert neutron.get(f"/ports/{made[0]}").status_code == 404
    assert world["host"].driver._guests == {}  # nothing was started
    # Its address is free again: no port holds anything on the network any more.
    assert [p for p in _ports(neutron, network_id=net_id) if p["device_owner"].startswith("compute:")] == []


def test_ports_of_a_server_that_is_gone_are_freed_by_the_sync(world: dict[str, Any]) -> None:
    neutron, net_id = _network(world)
    services = world["api"].services
    gone = new_uuid()
    # A delete that removed the row and was killed before releasing the port leaves exactly this.
    services.network.allocate_for_instance(system_context(world["a"]["project_id"]), gone,
                                           services.config.host_name, [{"uuid": net_id}], [], hostname="gone")
    assert len(_ports(neutron, device_id=gone)) == 1
    until(lambda: _ports(neutron, device_id=gone) == [], timeout=30.0)


def test_a_slow_create_still_running_in_this_process_is_not_called_interrupted(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    _neutron, net_id = _network(world)
    services = world["api"].services
    real = services.network.allocate_for_instance
    link = services.host_link
    real_sync = link.sync_power
    syncs: list[float] = []

    def counted_sync(*args: Any, **kwargs: Any) -> Any:
        syncs.append(time.monotonic())
        return real_sync(*args, **kwargs)

    def slow_allocate(ctx: Any, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        # Held past the grace until two repair passes have looked at the build.
        began = time.monotonic()
        until(lambda: len([at for at in syncs if at > began + 0.3]) >= 2, timeout=60.0)
        assert nova.get(f"/servers/{instance_id}").json()["server"]["status"] == "BUILD"
        return real(ctx, instance_id, *args, **kwargs)

    nova = world["alice"]
    monkeypatch.setattr(link, "sync_power", counted_sync)
    monkeypatch.setattr(services.network, "allocate_for_instance", slow_allocate)
    r = nova.post("/servers", body(world, "slow", networks=[{"uuid": net_id}]))
    assert r.status_code == 202, r.text
    wait_for(nova, r.json()["server"]["id"], "ACTIVE")


def test_a_create_of_another_process_slower_than_the_grace_is_errored_once_and_never_spawned(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    neutron, net_id = _network(world)
    network = world["api"].services.network
    # The repair pass runs in a process that does not know this create (another API worker).
    monkeypatch.setattr(world["api"].services.host_link, "_creating", CreatesInFlight())
    real = network.allocate_for_instance
    nova = world["alice"]
    errored = threading.Event()

    def slow_allocate(ctx: Any, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        # Hold the create here until the sync has called it interrupted.
        until(lambda: nova.get(f"/servers/{instance_id}").json()["server"]["status"] == "ERROR")
        errored.set()
        return real(ctx, instance_id, *args, **kwargs)

    monkeypatch.setattr(network, "allocate_for_instance", slow_allocate)
    r = nova.post("/servers", body(world, "slow", networks=[{"uuid": net_id}]))
    assert r.status_code == 202, r.text
    assert errored.is_set()
    sid = r.json()["server"]["id"]
    server = wait_for(nova, sid, "ERROR")
    assert "interrupted" in server["fault"]["message"]
    assert _ports(neutron, device_id=sid) == []
    assert world["host"].driver._guests == {}
