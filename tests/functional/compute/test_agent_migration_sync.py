"""The agent's power sync leaves a guest in a live migration to the migration while it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from tests.functional.compute import test_servers
from tests.functional.compute.test_servers import Host
from yunstack.compute.driver import InstanceSpec, root_disk
from yunstack.db.tables import migrations as mig
from yunstack.types import new_uuid

host = test_servers.host  # the fixture: this host's agent on a FakeDriver


def _in_loop(host: Host, make: Callable[[], Awaitable[object]]) -> object:
    """Run ``make()`` on the agent's own event loop (where its driver and sync live) and wait for it."""
    agent = host.agent
    assert agent is not None and agent._loop is not None

    async def run() -> object:
        return await make()

    return asyncio.run_coroutine_threadsafe(run(), agent._loop).result(30)


def test_an_incoming_guest_is_kept_while_its_migration_runs_and_removed_once_it_ended(host: Host) -> None:
    agent = host.agent
    assert agent is not None
    spec = InstanceSpec(id=new_uuid(), name="moving", hostname="moving", vcpus=1, memory_mib=128,
                        disks=root_disk(Path("/nonexistent/base.qcow2")))
    now = datetime.now(UTC)
    with host.services.db.begin() as s:
        s.add(mig.Migration(uuid=new_uuid(), instance_uuid=spec.id, project_id="p", user_id="u",
                            migration_type="live-migration", status="preparing", source_compute="elsewhere",
                            dest_compute=host.services.config.host_name, created_at=now, updated_at=now))
    _in_loop(host, lambda: host.driver.prepare_incoming(spec, "127.0.0.1", 49152))
    _in_loop(host, agent._sync_power)  # one pass, as the loop runs it every few seconds
    assert host.driver._guests[spec.id].migration == "incoming"  # the migration's: not an orphan
    with host.services.db.begin() as s:  # the migration ended (the server was deleted during it)
        s.scalars(select(mig.Migration).where(mig.Migration.instance_uuid == spec.id)).one().status = "error"
    _in_loop(host, agent._sync_power)
    assert spec.id not in host.driver._guests  # a copy nobody will finish or abort: removed
