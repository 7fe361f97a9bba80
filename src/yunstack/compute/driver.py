"""The compute driver protocol (Nova's virt driver, slim) and the values it speaks in.

A driver runs guests on one host.  It knows nothing of the database or of the API: the agent
hands it an ``InstanceSpec`` and reads back ``InstanceInfo``.  Implementations:
``yunstack.compute.qemu.driver.QemuDriver`` (real VMs) and ``yunstack.compute.fake.FakeDriver``
(contract and scale tests only).  Every implementation passes ``tests/contract``.

Errors: ``NotFound`` for an unknown instance, ``Conflict`` when the instance is in the wrong
power state for the operation, ``DriverError`` (and its subclasses) when the backend failed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class PowerState(enum.IntEnum):
    """A guest's power state, with Nova's numeric values (``nova.compute.power_state``)."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


@dataclass(frozen=True, kw_only=True)
class ConfigDrive:
    """What goes on the OpenStack config drive (label ``config-2``)."""

    meta_data: Mapping[str, Any]
    user_data: bytes | None = None
    network_data: Mapping[str, Any] | None = None
    vendor_data: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Nic:
    """One virtio-net NIC on a tap device that the network layer created."""

    tap: str
    mac: str
    bridge: str | None = None


@dataclass(frozen=True, kw_only=True)
class InstanceSpec:
    """Everything a driver needs to build (or rebuild) one guest.

    ``base_image`` is the cached image file on this host; the guest's disk is a copy-on-write
    overlay on it.  ``disk_gib`` 0 means "the image's virtual size".
    """

    id: str
    name: str
    hostname: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    base_image: Path
    base_format: str = "qcow2"
    config_drive: ConfigDrive | None = None
    nics: tuple[Nic, ...] = ()
    balloon: bool = True
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class InstanceInfo:
    """What a driver reports about one guest."""

    id: str
    power_state: PowerState
    pid: int | None = None
    reason: str | None = None
    memory_mib: int = 0
    vcpus: int = 0


@dataclass(frozen=True, kw_only=True)
class HostInfo:
    """This host's size and use, as the resource tracker reports it."""

    hostname: str
    vcpus: int
    memory_mib: int
    memory_used_mib: int
    local_gb: int
    local_gb_used: int
    hypervisor_type: str
    hypervisor_version: int
    cpu_info: str
    uptime: str
    accel: str


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a driver supports (Nova's ``capabilities`` dict, as fields)."""

    supports_pause: bool = True
    supports_suspend: bool = True
    supports_snapshot: bool = True
    supports_resize: bool = True
    supports_balloon: bool = True
    supports_config_drive: bool = True
    supports_live_migration: bool = False
    supports_attach_interface: bool = True


@runtime_checkable
class ComputeDriver(Protocol):
    """A hypervisor driver for one host.  Every wait inside a method is bounded."""

    capabilities: Capabilities

    async def init_host(self) -> None:
        """Prepare the host (directories, accelerator probe, binaries); raise if unusable."""

    async def host_info(self) -> HostInfo:
        """Return this host's resources and what the guests use of them."""

    async def spawn(self, spec: InstanceSpec) -> None:
        """Create the disk overlay and config drive and start the guest.

        Returns once the guest runs and its control channel answers.  Raises ``Conflict`` if the
        instance already exists on this host.
        """

    async def destroy(self, instance_id: str) -> None:
        """Stop the guest hard if it runs and remove its process, disks and files; idempotent."""

    async def power_off(self, instance_id: str, timeout: float | None = None) -> None:
        """Power off gracefully (ACPI), hard after ``timeout`` seconds; the disk is kept.

        A no-op when the guest is already off; a saved (suspended) state is discarded.
        """

    async def power_on(self, spec: InstanceSpec) -> None:
        """Start the guest again from its existing disk, restoring a saved state if there is one.

        A no-op when it already runs.  ``spec`` may differ from the last one (after a resize).
        """

    async def reboot(self, instance_id: str, hard: bool) -> None:
        """Reboot: soft is ACPI power-down then start, falling back to hard; hard is a reset.

        A hard reboot of a stopped or crashed guest starts it (Nova's recovery path).
        """

    async def pause(self, instance_id: str) -> None:
        """Stop the guest's vCPUs; memory stays in the process."""

    async def unpause(self, instance_id: str) -> None:
        """Let a paused guest run again."""

    async def suspend(self, instance_id: str) -> None:
        """Save the guest's memory and device state to a file and end the process (managed save)."""

    async def resume(self, instance_id: str) -> None:
        """Start the guest from its saved state and let it run."""

    async def console_output(self, instance_id: str, length: int | None = None) -> str:
        """Return the serial console log, only its last ``length`` lines if given."""

    async def serial_console(self, instance_id: str) -> str:
        """Return the path of the unix socket that is the running guest's serial port.

        One client at a time reads the guest's output from it and types into it; the console
        log keeps recording either way.  Raises Conflict when the guest has no such socket
        (not running, or started before the driver made one).
        """

    async def list_instances(self) -> list[InstanceInfo]:
        """Return every guest on this host, found on the host itself (not in a database).

        Running guests started by an earlier driver object (before a restart) are adopted.
        """

    async def get_info(self, instance_id: str) -> InstanceInfo:
        """Return one guest's power state; a guest whose process died shows SHUTDOWN or CRASHED."""

    async def snapshot(self, instance_id: str, dest: Path) -> None:
        """Write the guest's current disk to ``dest`` as a standalone qcow2 (no backing file)."""

    async def resize(self, spec: InstanceSpec, new_spec: InstanceSpec) -> None:
        """Apply a new flavor to a stopped guest: grow its disk, keep a backup for a revert."""

    async def confirm_resize(self, instance_id: str) -> None:
        """Drop the backup that ``resize`` kept."""

    async def revert_resize(self, spec: InstanceSpec) -> None:
        """Restore the disk and spec from before ``resize``; the guest stays stopped."""

    async def rebuild(self, spec: InstanceSpec) -> None:
        """Give a powered-off guest a new root disk: a fresh overlay on ``spec.base_image``.

        The old disk, a saved state, a resize backup and a rescue disk are all dropped, and the spec
        is kept for the next ``power_on``.  The guest stays off.  Raises ``Conflict`` if it runs.
        """

    async def rescue(self, spec: InstanceSpec, rescue_image: Path, rescue_format: str) -> None:
        """Restart the guest booting from an overlay on ``rescue_image``, its own disk attached second.

        A running guest is powered off first (gracefully, bounded).  The rescue disk lives with the
        guest's files until ``unrescue``: a restart or an adoption keeps booting the rescue image.
        """

    async def unrescue(self, spec: InstanceSpec) -> None:
        """End a rescue: stop the rescue boot (hard), drop the rescue disk, start from the own disk."""

    async def attach_interface(self, instance_id: str, nic: Nic) -> None:
        """Add ``nic`` (its tap exists) to the guest: hot-plugged when it runs, else at its next start.

        Idempotent: a NIC with the same MAC already there is left as it is.
        """

    async def detach_interface(self, instance_id: str, mac: str) -> None:
        """Remove the NIC with ``mac``: unplugged from a running guest (which must let it go), and
        left out of its next start.  A MAC the guest does not have is a no-op.
        """

    async def set_balloon_target(self, instance_id: str, target_bytes: int) -> None:
        """Ask the guest's balloon to leave it ``target_bytes`` of RAM."""

    async def balloon_stats(self, instance_id: str) -> dict[str, Any]:
        """Return ``{"actual": bytes, "stats": {...}, "last_update": int}`` from the balloon."""

    async def rss_bytes(self, instance_id: str) -> int:
        """Return the resident memory of the guest's process; 0 when it is not running."""
