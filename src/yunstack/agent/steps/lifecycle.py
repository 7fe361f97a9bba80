"""The host's half of rebuild, rescue/unrescue and shelve/shelve_offload/unshelve.

Long steps report their named progress (``protocol.steps``: ``rebuild_spawning``,
``shelving_image_uploading``, ...) so that the API shows Nova's task states while they happen.
"""

from __future__ import annotations

import asyncio

from yunstack.agent.steps.base import Host, Report, Step, progress
from yunstack.agent.steps.images import upload_disk
from yunstack.compute.driver import PowerState
from yunstack.errors import NotFound
from yunstack.protocol import RebuildArgs, RescueArgs, ShelveArgs, UnshelveArgs, Work
from yunstack.protocol.steps import (
    REBUILD_SPAWNING,
    SHELVING_IMAGE_PENDING_UPLOAD,
    SHELVING_IMAGE_UPLOADING,
    SPAWNING,
)


async def rebuild(host: Host, work: Work) -> Report:
    """Re-image: stop, a fresh root disk from the (new) image, and back to the power state it had."""
    assert isinstance(work.args, RebuildArgs)
    d, iid, stopped = host.driver, work.instance_id, work.args.keep_stopped
    spec = await host.spec(iid)  # the instance's image is already the new one
    await progress(host, work, REBUILD_SPAWNING)
    try:
        await d.get_info(iid)
    except NotFound:
        # An ERROR server whose guest is gone from this host: build it anew.
        async with host.room(spec):
            await d.spawn(spec)
        if stopped:
            await d.power_off(iid, host.stop_timeout)
    else:
        await d.power_off(iid, host.stop_timeout)
        await d.rebuild(spec)
        if not stopped:
            async with host.room(spec):
                await d.power_on(spec)
    return Report(PowerState.SHUTDOWN if stopped else PowerState.RUNNING)


async def rescue(host: Host, work: Work) -> Report:
    assert isinstance(work.args, RescueArgs)
    spec = await host.spec(work.instance_id)
    image, fmt = await asyncio.to_thread(host.cache.ensure, work.args.image_id)
    await host.driver.rescue(spec, image, fmt)
    return Report(PowerState.RUNNING)


async def unrescue(host: Host, work: Work) -> Report:
    await host.driver.unrescue(await host.spec(work.instance_id))
    return Report(PowerState.RUNNING)


async def shelve(host: Host, work: Work) -> Report:
    """Stop the guest and upload its disk as the shelve image; the control plane queues the offload."""
    assert isinstance(work.args, ShelveArgs)
    await progress(host, work, SHELVING_IMAGE_PENDING_UPLOAD)
    await host.driver.power_off(work.instance_id, host.stop_timeout)
    await progress(host, work, SHELVING_IMAGE_UPLOADING)
    await upload_disk(host, work, work.args.image_id, "shelve")
    return Report(PowerState.SHUTDOWN)


async def shelve_offload(host: Host, work: Work) -> Report:
    """The guest leaves the host: process, disk and instance directory go; the image has its data."""
    await host.driver.destroy(work.instance_id)
    host.forget(work.instance_id)
    return Report(PowerState.SHUTDOWN)


async def unshelve(host: Host, work: Work) -> Report:
    """Start a shelved guest: on its host if still there, else spawned anew from the shelve image."""
    assert isinstance(work.args, UnshelveArgs)
    d, iid = host.driver, work.instance_id
    await progress(host, work, SPAWNING)
    try:
        await d.get_info(iid)
    except NotFound:
        # Offloaded: the new root disk is an overlay on the shelve image.
        spec = await host.spec(iid, image_id=work.args.image_id)
        async with host.room(spec):
            await d.spawn(spec)
    else:
        spec = await host.spec(iid)
        async with host.room(spec):
            await d.power_on(spec)
    return Report(PowerState.RUNNING)


STEPS = (Step("rebuild", rebuild), Step("rescue", rescue), Step("unrescue", unrescue), Step("shelve", shelve),
         Step("shelve_offload", shelve_offload, reconcile_network=True),
         Step("unshelve", unshelve, reconcile_network=True))
