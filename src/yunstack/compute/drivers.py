"""The driver registry: ``compute.driver`` in config names one of these."""

from __future__ import annotations

from collections.abc import Callable

from yunstack.compute.driver import ComputeDriver
from yunstack.compute.fake import FakeDriver
from yunstack.compute.qemu.driver import QemuDriver
from yunstack.config import Config
from yunstack.errors import DriverMisconfigured

# The ignore goes with the branch that gives QemuDriver ``template_memory`` (mypy then reports it unused).
DRIVERS: dict[str, Callable[[Config], ComputeDriver]] = {
    "qemu": lambda config: QemuDriver(
        config, cgroup_parent=config.memory.cgroup_parent if config.memory.enabled else ""),
    "fake": lambda config: FakeDriver(hostname=config.host_name),
}


def make_driver(config: Config) -> ComputeDriver:
    try:
        factory = DRIVERS[config.compute.driver]
    except KeyError:
        raise DriverMisconfigured(detail=f"unknown compute driver {config.compute.driver!r}; "
                                  f"choose one of {sorted(DRIVERS)}") from None
    return factory(config)
