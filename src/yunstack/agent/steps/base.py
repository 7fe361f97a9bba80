"""What a host step may use of its agent, and what it reports.

A step is the host's half of one operation (``compute.operations`` is the control plane's): it
runs through the driver and reports what it observed, never a ``vm_state``.  Every step is safe to
run again: after a control-plane restart the same queued work is picked up and redone from the
start (powering off an off guest, recreating a rescue disk, uploading a snapshot again and
destroying an absent guest are all harmless).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from yunstack.agent.imagecache import ImageCache
from yunstack.agent.link import ControlPlane
from yunstack.compute.driver import ComputeDriver, InstanceSpec, Nic, PowerState
from yunstack.protocol import StepResult, Work
from yunstack.volume.backend import VolumeBackend
from yunstack.volume.export import NbdExports


class Host(Protocol):
    """The agent, as its steps see it (``agent.agent.Agent``)."""

    driver: ComputeDriver
    link: ControlPlane
    cache: ImageCache
    stop_timeout: float | None
    address: str  # where another host reaches this one (its tunnel address, else loopback)
    volumes: VolumeBackend | None  # the storage host's volume backend (None: this host keeps no volumes)
    exports: NbdExports | None  # the storage host's NBD exports to guests on other hosts

    async def spec(self, instance_id: str, image_id: str | None = None) -> InstanceSpec:
        """The instance's spec, its disk based on ``image_id`` if given (unshelve), else its image."""

    def room(self, spec: InstanceSpec) -> AbstractAsyncContextManager[None]:
        """Let the memory manager make room before the guest starts."""

    async def nic(self, port_id: str) -> Nic:
        """The NIC of a port just bound to this host (its tap exists once this returns)."""

    def forget(self, instance_id: str) -> None:
        """The guest left this host: the memory manager drops its policy."""


@dataclass(frozen=True)
class Report:
    """What a step observed: the guest's power state afterwards, and its typed result if it has one."""

    power: PowerState
    result: StepResult | None = None


Run = Callable[[Host, Work], Awaitable[Report]]


@dataclass(frozen=True)
class Step:
    """The host's declaration of one operation (one entry of ``agent.steps.STEPS``)."""

    name: str
    run: Run
    reconcile_network: bool = False  # its guest's NICs changed: the dataplane reconciles at once


async def progress(host: Host, work: Work, step: str) -> None:
    """Report a named step of a long operation (``protocol.steps``); the API shows it as a task state."""
    await asyncio.to_thread(host.link.progress, work.instance_id, work.request_id, step)


async def observe(host: Host, instance_id: str) -> Report:
    """The guest's power state as it is now (steps that leave it as it was)."""
    info = await host.driver.get_info(instance_id)
    return Report(info.power_state)
