"""The host's half of a live migration: each step runs on one of the two hosts (``args.host``).

The destination waits on its own address (``Host.address``) on two free ports it picks itself
(memory and device state on the first, the NBD export of the local disks on the next), so the
control plane needs to know nothing of a host's ports.  See ``docs/explanation/migration.md``.
"""

from __future__ import annotations

import contextlib
import socket

from yunstack.agent.steps.base import Host, Report, Step
from yunstack.compute.driver import IncomingMigration, MigrationMode, PowerState
from yunstack.errors import Conflict, NotFound
from yunstack.protocol import (
    IncomingResult,
    LiveMigrationAbortArgs,
    LiveMigrationFinishIncomingArgs,
    LiveMigrationSendArgs,
    SentResult,
    Work,
)

PORT_TRIES = 20


def free_run(address: str, count: int) -> int:
    """A port ``p`` such that ``p`` to ``p + count - 1`` are all free on ``address`` right now."""
    for _ in range(PORT_TRIES):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                                                      socket.SOCK_STREAM))
            first.bind((address, 0))
            port = int(first.getsockname()[1])
            try:
                for offset in range(1, count):
                    nxt = stack.enter_context(socket.socket(first.family, socket.SOCK_STREAM))
                    nxt.bind((address, port + offset))
            except OSError:
                continue
            return port
    raise Conflict(detail=f"no {count} adjacent free ports on {address}")


def free_pair(address: str) -> int:
    """A port ``p`` such that ``p`` and ``p + 1`` are both free on ``address`` right now."""
    return free_run(address, 2)


async def prepare(host: Host, work: Work) -> Report:
    """Destination: the guest's files and empty disks, a QEMU waiting for the state and the disks.

    Run again (the control plane restarted before it heard the answer), an earlier waiting guest
    is dropped first: its address was never recorded, so nothing will send to it.
    """
    spec = await host.spec(work.instance_id)
    await host.driver.abort_migration(work.instance_id)  # idempotent; leaves a guest not migrating alone
    port = free_pair(host.address)
    async with host.room(spec):
        incoming = await host.driver.prepare_incoming(spec, host.address, port, port + 1)
    return Report(PowerState.PAUSED, IncomingResult(uri=incoming.uri, disks_uri=incoming.disks_uri))


async def send(host: Host, work: Work) -> Report:
    """Source: copy disks and memory over; the guest stays here, stopped, until finish or abort."""
    args = work.args
    assert isinstance(args, LiveMigrationSendArgs)
    info = await host.driver.get_info(work.instance_id)
    if info.migration == "outgoing":
        # Sent before (a repeated step after a restart): the destination holds the guest; the
        # numbers of that send are lost with the answer that did not arrive.
        return Report(PowerState.PAUSED, SentResult(mode=args.mode, total_ms=0, downtime_ms=0))
    target = IncomingMigration(instance_id=work.instance_id, uri=args.uri, disks_uri=args.disks_uri)
    stats = await host.driver.send(work.instance_id, target, MigrationMode(args.mode))
    return Report(PowerState.PAUSED, SentResult(mode=str(stats.mode), total_ms=stats.total_ms,
                                                downtime_ms=stats.downtime_ms, memory_bytes=stats.memory_bytes,
                                                disk_bytes=stats.disk_bytes))


async def finish_incoming(host: Host, work: Work) -> Report:
    """Destination: the received guest runs (already running: a repeated step, done before)."""
    args = work.args
    assert isinstance(args, LiveMigrationFinishIncomingArgs)
    if (await host.driver.get_info(work.instance_id)).migration is not None:
        await host.driver.finish_incoming(work.instance_id, resume=args.resume)
    info = await host.driver.get_info(work.instance_id)
    return Report(info.power_state)


async def finish_outgoing(host: Host, work: Work) -> Report:
    """Source: the sent guest's process, disks and files go (refused if it was not sent)."""
    with contextlib.suppress(NotFound):  # gone already: a repeated step after a restart
        await host.driver.finish_outgoing(work.instance_id)
    host.forget(work.instance_id)
    return Report(PowerState.SHUTDOWN)


async def abort(host: Host, work: Work) -> Report:
    """Either side: undo what this host did; afterwards only the source's guest runs."""
    args = work.args
    assert isinstance(args, LiveMigrationAbortArgs)
    await host.driver.abort_migration(work.instance_id)
    if args.side == "destination":
        host.forget(work.instance_id)
        return Report(PowerState.NOSTATE)
    try:
        info = await host.driver.get_info(work.instance_id)
    except NotFound:
        return Report(PowerState.NOSTATE)
    return Report(info.power_state)


STEPS = (Step("live_migration_prepare", prepare), Step("live_migration_send", send),
         Step("live_migration_finish_incoming", finish_incoming, reconcile_network=True),
         Step("live_migration_finish_outgoing", finish_outgoing, reconcile_network=True),
         Step("live_migration_abort", abort))
