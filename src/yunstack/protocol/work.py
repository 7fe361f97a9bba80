"""The messages of the agent protocol: work for a host, an instance's spec, and an outcome.

``Outcome`` reports what the host observed (the guest's power state, the step's result, an
error), never a ``vm_state``: which state the server is in afterwards is the control plane's
decision (``compute.operations``), so the same report means the same thing whichever host sends it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from yunstack.protocol.base import Wire
from yunstack.protocol.steps import NbdConnection, StepArgs, StepResult

ResourceType = Literal["server", "volume"]


class Work(Wire):
    """One queued step for one instance (or, ``resource_type`` volume, one volume) on this host."""

    instance_id: str  # the resource's id: a server's, or a volume's for a volume step
    request_id: str
    args: StepArgs  # discriminated by ``args.op``
    task_id: str = ""  # the durable task this step is (its report names it back)
    attempt: int = 0  # which run of that task this is (a report of an older run is refused)
    resource_type: ResourceType = "server"

    @property
    def op(self) -> str:
        return self.args.op


class ConfigDriveData(Wire):
    """What goes on the config drive (``compute.driver.ConfigDrive`` on the host)."""

    meta_data: dict[str, JsonValue]
    user_data: bytes | None = None
    network_data: dict[str, JsonValue] | None = None
    vendor_data: dict[str, JsonValue] | None = None


class SpecVolume(Wire):
    """A volume the guest has at boot; the host opens it through its volume backend."""

    volume_id: str
    boot_index: int | None = None  # 0: the root disk of a volume-backed server
    read_only: bool = False
    nbd: NbdConnection | None = None  # kept on another host: its export (else this host's own file)


class SpecData(Wire):
    """An instance's spec without host paths; the agent adds the cached image's path.

    ``image_id`` is empty for a server booted from a volume: its root is ``volumes``' boot index 0.
    """

    id: str
    name: str
    hostname: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    image_id: str
    config_drive: ConfigDriveData | None = None
    extra: dict[str, str] = Field(default_factory=dict)
    port_ids: tuple[str, ...] = ()  # the guest's NICs, in order; the dataplane knows their taps
    volumes: tuple[SpecVolume, ...] = ()  # in the order the guest sees them


class Outcome(Wire):
    """How a step ended, as the host saw it; the control plane applies it (``compute.operations``)."""

    instance_id: str
    op: str
    request_id: str
    power_state: int  # compute.driver.PowerState's value, observed after the step
    error: str | None = None
    result: StepResult | None = None
    task_id: str = ""  # the ``Work.task_id`` and ``attempt`` this reports on
    attempt: int = 0
    resource_type: ResourceType = "server"  # the ``Work``'s: a volume step's report goes to the volume service
