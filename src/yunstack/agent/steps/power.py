"""The host's half of spawn, delete and the power verbs."""

from __future__ import annotations

from yunstack.agent.steps.base import Host, Report, Step
from yunstack.compute.driver import PowerState
from yunstack.errors import Conflict
from yunstack.protocol import RebootArgs, SpawnResult, Work


async def spawn(host: Host, work: Work) -> Report:
    d, iid = host.driver, work.instance_id
    spec = await host.spec(iid)
    try:
        async with host.room(spec):
            await d.spawn(spec)
    except Conflict:
        # Already exists: an earlier agent started it before a restart; adopt, don't duplicate.
        info = await d.get_info(iid)
        if info.power_state != PowerState.RUNNING:
            await d.power_on(spec)
        return Report(PowerState.RUNNING, SpawnResult(adopted=True))
    return Report(PowerState.RUNNING, SpawnResult())


async def delete(host: Host, work: Work) -> Report:
    await host.driver.destroy(work.instance_id)
    host.forget(work.instance_id)
    return Report(PowerState.NOSTATE)


async def stop(host: Host, work: Work) -> Report:
    await host.driver.power_off(work.instance_id, host.stop_timeout)
    return Report(PowerState.SHUTDOWN)


async def start(host: Host, work: Work) -> Report:
    await host.driver.power_on(await host.spec(work.instance_id))
    return Report(PowerState.RUNNING)


async def reboot(host: Host, work: Work) -> Report:
    hard = isinstance(work.args, RebootArgs) and work.args.type == "HARD"
    await host.driver.reboot(work.instance_id, hard=hard)
    return Report(PowerState.RUNNING)


async def pause(host: Host, work: Work) -> Report:
    await host.driver.pause(work.instance_id)
    return Report(PowerState.PAUSED)


async def unpause(host: Host, work: Work) -> Report:
    await host.driver.unpause(work.instance_id)
    return Report(PowerState.RUNNING)


async def suspend(host: Host, work: Work) -> Report:
    await host.driver.suspend(work.instance_id)
    return Report(PowerState.SUSPENDED)


async def resume(host: Host, work: Work) -> Report:
    await host.driver.resume(work.instance_id)
    return Report(PowerState.RUNNING)


STEPS = (Step("spawn", spawn), Step("delete", delete, reconcile_network=True), Step("stop", stop),
         Step("start", start), Step("reboot", reboot), Step("pause", pause), Step("unpause", unpause),
         Step("suspend", suspend), Step("resume", resume))
