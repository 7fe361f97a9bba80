"""The host's half of attach_interface and detach_interface: hot-plug into a running QEMU."""

from __future__ import annotations

from yunstack.agent.steps.base import Host, Report, Step, observe
from yunstack.protocol import AttachInterfaceArgs, DetachInterfaceArgs, Work


async def attach_interface(host: Host, work: Work) -> Report:
    assert isinstance(work.args, AttachInterfaceArgs)
    await host.driver.attach_interface(work.instance_id, await host.nic(work.args.port_id))
    return await observe(host, work.instance_id)


async def detach_interface(host: Host, work: Work) -> Report:
    assert isinstance(work.args, DetachInterfaceArgs)
    await host.driver.detach_interface(work.instance_id, work.args.mac)
    return await observe(host, work.instance_id)


STEPS = (Step("attach_interface", attach_interface, reconcile_network=True),
         Step("detach_interface", detach_interface, reconcile_network=True))
