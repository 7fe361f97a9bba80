"""The host's half of snapshot (createImage) and of the resize family."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from yunstack.agent.steps.base import Host, Report, Step, observe
from yunstack.compute.driver import PowerState
from yunstack.protocol import ResizeArgs, ResizeResult, RevertResizeArgs, SnapshotArgs, Work


async def upload_disk(host: Host, work: Work, image_id: str, kind: str) -> None:
    """Write the guest's disk to a temporary file and upload it as ``image_id``'s data."""
    tmp = host.cache.root / f".{kind}-{image_id}.qcow2"
    host.cache.root.mkdir(parents=True, exist_ok=True)
    try:
        await host.driver.snapshot(work.instance_id, tmp)
        await asyncio.to_thread(host.link.upload_snapshot, work.instance_id, image_id, tmp)
    finally:
        tmp.unlink(missing_ok=True)


async def snapshot(host: Host, work: Work) -> Report:
    assert isinstance(work.args, SnapshotArgs)
    await upload_disk(host, work, work.args.image_id, "snapshot")
    return await observe(host, work.instance_id)


async def resize(host: Host, work: Work) -> Report:
    assert isinstance(work.args, ResizeArgs)
    d, iid, new = host.driver, work.instance_id, work.args.flavor
    old_spec = await host.spec(iid)
    new_spec = replace(old_spec, vcpus=new.vcpus, memory_mib=new.ram).with_root(size_gib=new.disk)
    info = await d.get_info(iid)
    was_running = info.power_state in (PowerState.RUNNING, PowerState.PAUSED)
    await d.power_off(iid, host.stop_timeout)
    await d.resize(old_spec, new_spec)
    if was_running:
        await d.power_on(new_spec)
    return Report(PowerState.RUNNING if was_running else PowerState.SHUTDOWN, ResizeResult(was_running=was_running))


async def confirm_resize(host: Host, work: Work) -> Report:
    await host.driver.confirm_resize(work.instance_id)
    return await observe(host, work.instance_id)


async def revert_resize(host: Host, work: Work) -> Report:
    assert isinstance(work.args, RevertResizeArgs)
    d, iid, old = host.driver, work.instance_id, work.args.old_flavor
    spec = await host.spec(iid)
    if old is not None:
        spec = replace(spec, vcpus=old.vcpus, memory_mib=old.ram).with_root(size_gib=old.disk)
    await d.power_off(iid, host.stop_timeout)  # both drivers revert only a stopped guest
    await d.revert_resize(spec)
    await d.power_on(spec)
    return Report(PowerState.RUNNING)


STEPS = (Step("snapshot", snapshot), Step("resize", resize), Step("confirm_resize", confirm_resize),
         Step("revert_resize", revert_resize))
