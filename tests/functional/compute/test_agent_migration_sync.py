"""The agent's power sync leaves a guest in a live migration to the migration."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.functional.compute import test_servers
from tests.functional.compute.test_servers import Host
from yunstack.compute.driver import InstanceSpec, root_disk
from yunstack.types import new_uuid

host = test_servers.host  # the fixture: this host's agent on a FakeDriver


def _in_loop(host: Host, make: Callable[[], Awaitable[object]]) -> object:
    """Run ``make()`` on the agent's own event loop (where its driver and sync live) and wait for it."""
    agent = host.agent
    assert agent is not None and agent._loop is not None

    async def run() -> object:
        return await make()

    return asyncio.run_coroutine_threadsafe(run(), agent._loop).result(30)


def test_the_power_sync_does_not_destroy_an_incoming_guest_the_control_plane_does_not_know(host: Host) -> None:
    agent = host.agent
    assert agent is not None
    spec = InstanceSpec(id=new_uuid(), name="moving", hostname="moving", vcpus=1, memory_mib=128,
                        disks=root_disk(Path("/nonexistent/base.qcow2")))
    _in_loop(host, lambda: host.driver.prepare_incoming(spec, "127.0.0.1", 49152))
    _in_loop(host, agent._sync_power)  # one pass, as the loop runs it every few seconds
    info = host.driver._guests[spec.id]
    assert info.migration == "incoming"  # still there: not destroyed as an orphan
    _in_loop(host, lambda: host.driver.abort_migration(spec.id))
    assert spec.id not in host.driver._guests
