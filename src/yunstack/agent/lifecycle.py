"""The agent's side of rebuild, rescue/unrescue and shelve/shelve_offload/unshelve.

``OPS`` maps each queued op to a coroutine that carries it out through the driver and returns the
outcome.  Every step is safe to run again: after a control-plane restart the same pending work is
picked up and redone from the start (powering off an off guest, recreating a rescue disk, uploading
a snapshot again and destroying an absent guest are all harmless).  Long ops report their Nova
task-state steps (``rebuild_spawning``, ``shelving_image_uploading``, ...) through
``ControlPlane.progress`` so that the API shows them while they happen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from yunstack.agent.link import Outcome, Work
from yunstack.compute import states
from yunstack.compute.driver import PowerState
from yunstack.errors import NotFound

if TYPE_CHECKING:
    from yunstack.agent.agent import Agent

Done = Callable[..., Outcome]
Op = Callable[["Agent", Work, Done], Awaitable[Outcome]]


async def _progress(agent: Agent, work: Work, task_state: str) -> None:
    await asyncio.to_thread(agent.link.progress, work.instance_id, work.request_id, task_state)


async def rebuild(agent: Agent, work: Work, done: Done) -> Outcome:
    """Re-image: stop, a fresh root disk from the (new) image, and back to the state it was in."""
    d, iid = agent.driver, work.instance_id
    spec = await agent._spec(iid)  # the instance's image is already the new one
    await _progress(agent, work, states.REBUILD_SPAWNING)
    stopped = work.args.get("vm_state") == states.STOPPED
    try:
        await d.get_info(iid)
    except NotFound:
        # An ERROR server whose guest is gone from this host: build it anew.
        async with agent._room(spec):
            await d.spawn(spec)
        if stopped:
            await d.power_off(iid, agent.stop_timeout)
    else:
        await d.power_off(iid, agent.stop_timeout)
        await d.rebuild(spec)
        if not stopped:
            async with agent._room(spec):
                await d.power_on(spec)
    if stopped:
        return done(states.STOPPED, PowerState.SHUTDOWN, launched=True)  # a stopped server stays SHUTOFF
    return done(states.ACTIVE, PowerState.RUNNING, launched=True)


async def rescue(agent: Agent, work: Work, done: Done) -> Outcome:
    spec = await agent._spec(work.instance_id)
    image, fmt = await asyncio.to_thread(agent.cache.ensure, str(work.args["image_id"]))
    await agent.driver.rescue(spec, image, fmt)
    return done(states.RESCUED, PowerState.RUNNING)


async def unrescue(agent: Agent, work: Work, done: Done) -> Outcome:
    spec = await agent._spec(work.instance_id)
    await agent.driver.unrescue(spec)
    return done(states.ACTIVE, PowerState.RUNNING)


async def shelve(agent: Agent, work: Work, done: Done) -> Outcome:
    """Stop the guest and upload its disk as the shelve image; the offload is queued next."""
    d, iid = agent.driver, work.instance_id
    await _progress(agent, work, states.SHELVING_IMAGE_PENDING_UPLOAD)
    await d.power_off(iid, agent.stop_timeout)
    await _progress(agent, work, states.SHELVING_IMAGE_UPLOADING)
    image_id = str(work.args["image_id"])
    tmp = agent.cache.root / f".shelve-{image_id}.qcow2"
    agent.cache.root.mkdir(parents=True, exist_ok=True)
    try:
        await d.snapshot(iid, tmp)
        await asyncio.to_thread(agent.link.upload_snapshot, iid, image_id, tmp)
    finally:
        tmp.unlink(missing_ok=True)
    return done(states.SHELVED, PowerState.SHUTDOWN, offload=bool(work.args.get("offload")))


async def shelve_offload(agent: Agent, work: Work, done: Done) -> Outcome:
    """The guest leaves the host: process, disk and instance directory go; the image has its data."""
    await agent.driver.destroy(work.instance_id)
    if agent.memory is not None:
        agent.memory.forget(work.instance_id)
    return done(states.SHELVED_OFFLOADED, PowerState.SHUTDOWN)


async def unshelve(agent: Agent, work: Work, done: Done) -> Outcome:
    """Start a shelved guest: on its host if still there, else spawned anew from the shelve image."""
    d, iid = agent.driver, work.instance_id
    await _progress(agent, work, states.SPAWNING)
    try:
        await d.get_info(iid)
    except NotFound:
        # Offloaded: the new root disk is an overlay on the shelve image.
        image_id = work.args.get("image_id")
        spec = await agent._spec(iid, image_id=str(image_id) if image_id else None)
        async with agent._room(spec):
            await d.spawn(spec)
    else:
        spec = await agent._spec(iid)
        async with agent._room(spec):
            await d.power_on(spec)
    return done(states.ACTIVE, PowerState.RUNNING, launched=True)


OPS: dict[str, Op] = {"rebuild": rebuild, "rescue": rescue, "unrescue": unrescue, "shelve": shelve,
                      "shelve_offload": shelve_offload, "unshelve": unshelve}
# After these the guest's NICs changed hosts (gone or back): the dataplane reconciles at once.
NETWORK_CHANGING = frozenset({"shelve_offload", "unshelve"})
# A failure of these leaves the server as its guest is (with a fault), not in ERROR (as Nova).
KEEPS_STATE = frozenset({"shelve"})
