"""The host's half of a cold migration and of a resize to another host.

The guest is off while it moves: ``send`` (source) powers it off and serves its disks, ``finish``
(destination) copies them and starts the guest if it ran; the server then waits in VERIFY_RESIZE
with a stopped copy left on the source.  ``confirm`` (source) removes that copy; ``revert``
(destination) removes the new one and ``restore`` (source) takes the guest back, which also undoes
a move that failed.  Every step is safe to run again.  See ``docs/explanation/migration.md``.
"""

from __future__ import annotations

from yunstack.agent.steps.base import Host, Report, Step
from yunstack.agent.steps.migration import free_run
from yunstack.compute.driver import DiskKind, PowerState
from yunstack.errors import NotFound
from yunstack.protocol import (
    ColdMigrationFinishArgs,
    ColdMigrationRestoreArgs,
    ColdMigrationSendArgs,
    ExportedResult,
    Work,
)


async def send(host: Host, work: Work) -> Report:
    """Source: the guest powers off (gracefully, as a stop does) and its disks are served once each."""
    args = work.args
    assert isinstance(args, ColdMigrationSendArgs)
    d, iid = host.driver, work.instance_id
    await d.power_off(iid, host.stop_timeout)
    spec = await host.spec(iid)
    port = free_run(host.address, max(1, sum(1 for item in spec.disks if item.kind == DiskKind.LOCAL_OVERLAY)))
    uris = await d.export_disks(iid, host.address, port, args.secret)
    return Report(PowerState.SHUTDOWN, ExportedResult(disks=uris))


async def finish(host: Host, work: Work) -> Report:
    """Destination: the disks arrive (on this host's copy of the base image), the guest starts if it ran."""
    args = work.args
    assert isinstance(args, ColdMigrationFinishArgs)
    d, iid = host.driver, work.instance_id
    spec = await host.spec(iid)  # the new flavor's sizes; its ports' taps are made here first
    try:
        arrived = (await d.get_info(iid)).migration is None  # "incoming": an import cut short
    except NotFound:
        arrived = False
    if not arrived:  # else copied before: a repeated step (its answer was lost)
        await d.import_disks(spec, args.disks, args.secret)
    if not args.power_on:
        return Report(PowerState.SHUTDOWN)
    async with host.room(spec):
        await d.power_on(spec)
    return Report(PowerState.RUNNING)


async def drop(host: Host, work: Work) -> Report:
    """Either side: its copy of the guest goes (confirm on the source, revert on the destination)."""
    await host.driver.destroy(work.instance_id)
    host.forget(work.instance_id)
    return Report(PowerState.NOSTATE)


async def restore(host: Host, work: Work) -> Report:
    """Source: the exports end and the guest, still here, starts again if it ran before the move."""
    args = work.args
    assert isinstance(args, ColdMigrationRestoreArgs)
    d, iid = host.driver, work.instance_id
    await d.unexport_disks(iid)
    spec = await host.spec(iid)  # the old flavor again; the ports are back on this host
    if not args.power_on:
        return Report((await d.get_info(iid)).power_state)
    async with host.room(spec):
        await d.power_on(spec)
    return Report(PowerState.RUNNING)


STEPS = (Step("cold_migration_send", send), Step("cold_migration_finish", finish, reconcile_network=True),
         Step("cold_migration_confirm", drop), Step("cold_migration_revert", drop, reconcile_network=True),
         Step("cold_migration_restore", restore, reconcile_network=True))
