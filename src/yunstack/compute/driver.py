"""The compute driver protocol (Nova's virt driver, slim) and the values it speaks in.

A driver runs guests on one host.  It knows nothing of the database or of the API: the agent
hands it an ``InstanceSpec`` and reads back ``InstanceInfo``.  Implementations:
``yunstack.compute.qemu.driver.QemuDriver`` (real VMs) and ``yunstack.compute.fake.FakeDriver``
(contract and scale tests only).  Every implementation passes ``tests/contract``.

Errors: ``NotFound`` for an unknown instance, ``Conflict`` when the instance is in the wrong
power state for the operation, ``DriverError`` (and its subclasses) when the backend failed.
Volumes add two of their own, defined here because they belong to the seam: ``VolumeSourceNotFound``
(a ``NotFound``) and ``VolumeDetachTimeout`` (a ``DriverUnavailable``: the guest may still let go).
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from yunstack.errors import DriverUnavailable, NotFound, ValidationFailed


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
    # What DHCP gives the port on its IPv4 subnet (None: no DHCP there), which a memory template's
    # clone sets before its lease comes (identity.py).  Not kept in the instance's spec file.
    ipv4: Ipv4Config | None = None


@dataclass(frozen=True, kw_only=True)
class Ipv4Config:
    """The address, default gateway, DNS and MTU that a port's DHCP lease carries."""

    address: str  # with its prefix length: "10.0.0.5/24"
    gateway: str | None
    dns: tuple[str, ...]
    domain: str
    mtu: int


class DiskKind(enum.StrEnum):
    """Where a guest disk's data lives."""

    LOCAL_OVERLAY = "local-overlay"  # a qcow2 overlay in the instance directory on a cached base image
    VOLUME = "volume"  # an attached volume: a block device or file the driver does not own


@dataclass(frozen=True, kw_only=True)
class NbdSource:
    """Where a volume kept on another host is served over NBD (``yunstack.volume.export.Export``).

    The client proves itself with TLS-PSK: ``psk_identity`` and ``psk_key`` (hex digits) must be in
    the serving daemon's key file.  The key is a secret: it is left out of ``repr``.
    """

    host: str  # an IP address or a host name
    port: int
    export: str  # the NBD export name
    psk_identity: str
    psk_key: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class RbdSource:
    """A volume that is a Ceph RBD image, opened by QEMU's own ``rbd`` driver (librbd).

    ``conf`` is the ceph.conf of this host (its ``keyring`` holds the cephx key of ``user``): no
    secret travels with the disk.
    """

    pool: str
    image: str
    namespace: str = ""
    conf: str = ""
    user: str = ""


@dataclass(frozen=True, kw_only=True)
class Disk:
    """One guest disk.

    For a local overlay ``source`` is the cached base image (``format`` its format) and the driver
    keeps the overlay with the guest's files; ``size_gib`` 0 means the base image's virtual size.
    For a volume ``source`` is the device or file itself, or, with ``nbd``, the volume is reached
    over NBD and ``source`` only names it in messages (its path on its storage host, say); such a
    volume's ``format`` is raw: the export serves the volume's data.  ``cache`` None means the driver's
    configured mode.  ``boot_index`` None: not bootable.  ``serial`` is the virtio-blk serial; for a
    volume its id, so the guest finds it at ``/dev/disk/by-id/virtio-<first 20 characters>`` (as on
    Nova with libvirt: virtio-blk keeps 20 bytes of it).
    """

    kind: DiskKind = DiskKind.LOCAL_OVERLAY
    source: Path
    format: str = "qcow2"
    size_gib: int = 0
    device: str = "vda"
    bus: str = "virtio"
    boot_index: int | None = 1
    read_only: bool = False
    cache: str | None = None
    serial: str | None = None
    nbd: NbdSource | None = None
    rbd: RbdSource | None = None

    @property
    def remote(self) -> bool:
        """Whether QEMU reaches the volume over a network protocol (nothing on this host's disks)."""
        return self.nbd is not None or self.rbd is not None


VOLUME_FORMATS = ("qcow2", "raw")
VOLUME_CACHE_MODES = ("none", "writeback", "writethrough")  # QEMU's cache= modes a driver accepts
# A serial goes into QEMU's option syntax and into device ids: no commas, no spaces, no surprises.
_SERIAL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What an NbdSource may hold: it comes from another host and goes into QEMU's options and a key file.
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_EXPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_PSK_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # no ':' (the key file's separator)
_PSK_KEY = re.compile(r"^(?:[0-9a-fA-F]{2}){16,64}$")  # 128 to 512 bits


class VolumeSourceNotFound(NotFound):
    """Raised when a volume's file or block device is not there (on attach, or at a guest's start)."""

    message = "Volume {serial}: its source {path} does not exist on this host."


class VolumeDetachTimeout(DriverUnavailable):
    """Raised when a running guest did not release a volume in time; the volume stays attached.

    The unplug request stays pending in QEMU: a guest that acknowledges it later (or reboots) lets
    go of the device, and a repeated ``detach_volume`` then completes at once.
    """

    message = ("Instance {instance_id} did not release volume {serial} within {seconds:.0f} s (the guest must "
               "acknowledge the unplug; a paused or hung guest cannot); the volume stays attached.")


def check_volume(disk: Disk) -> str:
    """Return the serial of ``disk`` if it can be attached as a volume; ``ValidationFailed`` says why not.

    Its source is not looked at here (``require_source`` does that).
    """
    if disk.kind != DiskKind.VOLUME:
        raise ValidationFailed(detail=f"only a volume disk can be attached, not a {disk.kind} disk")
    if disk.serial is None or not _SERIAL.match(disk.serial):
        raise ValidationFailed(detail=f"a volume needs a serial of letters, digits, '.', '_' or '-', "
                                      f"not {disk.serial!r}")
    if disk.format not in VOLUME_FORMATS:
        raise ValidationFailed(detail=f"volume format must be one of {', '.join(VOLUME_FORMATS)}, not {disk.format!r}")
    if disk.bus != "virtio":
        raise ValidationFailed(detail=f"volume bus must be virtio, not {disk.bus!r}")
    if disk.cache not in (None, *VOLUME_CACHE_MODES):
        raise ValidationFailed(detail=f"volume cache must be one of {', '.join(VOLUME_CACHE_MODES)}, "
                                      f"not {disk.cache!r}")
    if disk.nbd is not None:
        check_nbd(disk.nbd)
        if disk.format != "raw":
            raise ValidationFailed(detail=f"a volume over NBD is raw (its export serves the data), not {disk.format!r}")
    if disk.rbd is not None:
        check_rbd(disk.rbd)
        if disk.format != "raw" or disk.nbd is not None:
            raise ValidationFailed(detail="an RBD volume is raw and reached through librbd alone")
    return disk.serial


def check_rbd(rbd: RbdSource) -> None:
    """Raise ``ValidationFailed`` unless ``rbd`` names a pool, an image, a namespace and a user we accept
    and ``conf`` is an absolute path (they go into QEMU's options)."""
    for what, value, required in (("pool", rbd.pool, True), ("image", rbd.image, True),
                                  ("namespace", rbd.namespace, False), ("user", rbd.user, False)):
        if (value or required) and not _EXPORT_NAME.fullmatch(value):
            raise ValidationFailed(detail=f"an RBD {what} is letters, digits, '.', '_' or '-', not {value!r}")
    if rbd.conf and (not rbd.conf.startswith("/") or any(c in rbd.conf for c in ",:=\n\0")):
        raise ValidationFailed(detail=f"an RBD conf is an absolute path without ',', ':' or '=', not {rbd.conf!r}")


def check_nbd(nbd: NbdSource) -> None:
    """Raise ``ValidationFailed`` unless ``nbd`` holds a host, a port, an export name and a key we accept."""
    try:
        ipaddress.ip_address(nbd.host)
    except ValueError:
        if not _HOST_NAME.fullmatch(nbd.host):
            raise ValidationFailed(detail=f"an NBD host is an IP address or a host name, not {nbd.host!r}") from None
    if isinstance(nbd.port, bool) or not isinstance(nbd.port, int) or not 1 <= nbd.port <= 65535:
        raise ValidationFailed(detail=f"an NBD port is 1..65535, not {nbd.port!r}")
    if not _EXPORT_NAME.fullmatch(nbd.export):
        raise ValidationFailed(detail=f"an NBD export name is letters, digits, '.', '_' or '-', not {nbd.export!r}")
    if not _PSK_IDENTITY.fullmatch(nbd.psk_identity):
        raise ValidationFailed(detail=f"a PSK identity is letters, digits, '.', '_' or '-', "
                                      f"not {nbd.psk_identity!r}")
    if not _PSK_KEY.fullmatch(nbd.psk_key):
        raise ValidationFailed(detail="a PSK key is 32 to 128 hex digits, an even number of them")


def require_source(disk: Disk) -> None:
    """Raise ``VolumeSourceNotFound`` when the volume's file or device is missing (over NBD: nothing to look at)."""
    if not disk.remote and not disk.source.exists():
        raise VolumeSourceNotFound(serial=disk.serial or "(no serial)", path=str(disk.source))


def disk_device_name(index: int) -> str:
    """The name Linux gives its ``index``-th virtio disk: ``vda`` ... ``vdz``, ``vdaa``, ``vdab`` ..."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return "vd" + letters


def _boot_disks(spec: InstanceSpec, rescued: bool) -> int:
    """How many virtio disks a guest has before its volumes: rescue disk, own disks, config drive."""
    own = sum(1 for d in spec.disks if d.kind != DiskKind.VOLUME)
    return int(rescued) + own + int(spec.config_drive is not None)


def named_at_boot(spec: InstanceSpec, volumes: Sequence[Disk], *, rescued: bool = False) -> tuple[Disk, ...]:
    """``volumes`` with the device names a guest gives them at boot.

    virtio-blk disks are named in PCI order, and a driver puts a guest's volumes after its rescue
    disk, its own disks and its config drive (QEMU: behind root ports, which Linux walks last).
    """
    first = _boot_disks(spec, rescued)
    return tuple(replace(v, device=disk_device_name(first + i)) for i, v in enumerate(volumes))


def next_device_name(spec: InstanceSpec, volumes: Sequence[Disk], *, rescued: bool = False) -> str:
    """The name a running guest most likely gives a volume plugged in now: the lowest one it has free.

    Linux hands out the lowest free virtio-blk index, so a name a detached volume left is reused.
    """
    used = {disk_device_name(i) for i in range(_boot_disks(spec, rescued))} | {v.device for v in volumes}
    return next(name for name in map(disk_device_name, itertools.count()) if name not in used)


@dataclass(frozen=True, kw_only=True)
class MemoryBacking:
    """How guest RAM is backed (the memory manager decides it per guest; applied at each start).

    ``page_sharing`` False starts QEMU with ``mem-merge=off``: KSM never merges this guest (a
    cross-VM side channel closed).  ``thp`` False turns transparent huge pages off for the QEMU
    process.  ``hugepages`` is ``none``: explicit hugepage backing is not offered yet.  ``template``
    asks for a start from a memory template.
    """

    page_sharing: bool = True
    thp: bool = True
    hugepages: Literal["none"] = "none"
    # Start from a memory template when the host has one (docs/explanation/memory-templates.md);
    # the first such guest of an image and flavor boots, and the host makes the template beside it.
    template: bool = False


@dataclass(frozen=True, kw_only=True)
class InstanceSpec:
    """Everything a driver needs to build (or rebuild) one guest.

    ``disks`` in guest order; the first is the root disk: a local overlay on the image or, for a
    server booted from a volume, that volume (boot index 0).
    """

    id: str
    name: str
    hostname: str
    vcpus: int
    memory_mib: int
    disks: tuple[Disk, ...]
    config_drive: ConfigDrive | None = None
    nics: tuple[Nic, ...] = ()
    balloon: bool = True
    memory: MemoryBacking = field(default_factory=MemoryBacking)

    def __post_init__(self) -> None:
        if not self.disks:
            raise ValueError("a spec needs a root disk")
        first = self.disks[0]
        if first.kind != DiskKind.LOCAL_OVERLAY and first.boot_index != 0:
            raise ValueError("the first disk of a spec is its root: a local overlay, or a volume with boot index 0")

    @property
    def root(self) -> Disk:
        """The root disk (the overlay on the image, or the boot volume)."""
        return self.disks[0]

    @property
    def volume_backed(self) -> bool:
        """Whether the guest boots from a volume (it has no disk of the driver's own)."""
        return self.disks[0].kind == DiskKind.VOLUME

    def with_root(self, **changes: Any) -> InstanceSpec:
        """This spec with the root disk changed (a new size after a resize, a new image after a rebuild)."""
        return replace(self, disks=(replace(self.root, **changes), *self.disks[1:]))


def root_disk(image: Path, image_format: str = "qcow2", size_gib: int = 0) -> tuple[Disk, ...]:
    """The usual disk list: one local overlay on ``image``."""
    return (Disk(source=image, format=image_format, size_gib=size_gib),)


@dataclass(frozen=True, kw_only=True)
class InstanceInfo:
    """What a driver reports about one guest."""

    id: str
    power_state: PowerState
    pid: int | None = None
    reason: str | None = None
    memory_mib: int = 0
    vcpus: int = 0
    # "incoming" (a destination waiting for or holding a guest not yet resumed) or "outgoing" (a
    # source that sent it and waits for finish or abort); None outside a migration.  A power sync
    # must leave such a guest to its migration: it is neither an orphan nor stopped by itself.
    migration: str | None = None


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
    capabilities: Capabilities = field(default_factory=lambda: Capabilities())
    # The address other hosts reach this one at (its VXLAN and migration endpoint); the agent
    # fills it in, the driver does not know it.  "" from an agent too old to say.
    host_ip: str = ""


class MigrationMode(enum.StrEnum):
    """How a running guest moves to another host.

    ``paused``: stop the vCPUs, copy memory and disks, resume on the destination (downtime = the
    whole copy; the only safe mode under TCG on QEMU 7.2, whose precopy loses dirty pages of a
    guest that writes memory).  ``precopy``: copy while it runs, then a short stop (with
    auto-converge).  ``postcopy``: resume at once on the destination and fault pages over.
    """

    PAUSED = "paused"
    PRECOPY = "precopy"
    POSTCOPY = "postcopy"


@dataclass(frozen=True, kw_only=True)
class IncomingMigration:
    """Where a destination waits for a guest, as ``prepare_incoming`` returns it to the source.

    ``uri`` takes the memory and device state (``tcp:HOST:PORT``); ``disks_uri`` (``nbd://HOST:PORT``)
    takes the guest's local disks, one export per disk named after it; None when nothing is copied.
    """

    instance_id: str
    uri: str
    disks_uri: str | None = None


@dataclass(frozen=True, kw_only=True)
class MigrationStats:
    """What ``send`` measured on the source."""

    mode: MigrationMode
    total_ms: int
    downtime_ms: int
    memory_bytes: int = 0
    disk_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a driver can do on this host; reported in ``HostInfo`` and used by the scheduler.

    ``accel`` is the accelerator guests get (``kvm`` or ``tcg``); ``migration_modes`` the live
    migration modes that are safe here (empty: no live migration); ``block_migration`` whether
    local disks move with the guest (no shared storage needed).
    """

    accel: str = "tcg"
    migration_modes: frozenset[MigrationMode] = frozenset()
    block_migration: bool = False
    hotplug_nics: bool = True
    volumes: bool = False
    snapshots: bool = True
    suspend: bool = True
    max_vcpus: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (the heartbeat and the host table carry it)."""
        return {"accel": self.accel, "migration_modes": sorted(m.value for m in self.migration_modes),
                "block_migration": self.block_migration, "hotplug_nics": self.hotplug_nics,
                "volumes": self.volumes, "snapshots": self.snapshots, "suspend": self.suspend,
                "max_vcpus": self.max_vcpus}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Capabilities:
        """The inverse of ``to_dict``; unknown keys (from a newer host) are ignored."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "migration_modes" in known:
            known["migration_modes"] = frozenset(
                MigrationMode(m) for m in known["migration_modes"] if m in set(MigrationMode))
        return cls(**known)


@runtime_checkable
class ComputeDriver(Protocol):
    """A hypervisor driver for one host.  Every wait inside a method is bounded."""

    async def init_host(self) -> None:
        """Prepare the host (directories, accelerator probe, binaries); raise if unusable."""

    async def host_info(self) -> HostInfo:
        """Return this host's resources, what the guests use of them, and the capabilities."""

    async def capabilities(self) -> Capabilities:
        """What this driver can do on this host (after ``init_host``: the accelerator is probed)."""

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
        """Give a powered-off guest a new root disk: a fresh overlay on ``spec.root.source``.

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

    # ------------------------------------------------------------ volumes
    # The driver keeps what attach_volume attached as part of the guest (QEMU: in its spec file), so
    # a hard reboot, a stop and start, a rescue, a rebuild, a resize and a restarted driver all keep
    # the volumes.  A spec handed to spawn, power_on, rescue, unrescue, rebuild, resize or
    # revert_resize need not list them: the attached ones (those whose serial the spec does not
    # list) come after the spec's own disks, in the order they were attached, and a start opens them
    # after the root disk and the config drive.  A volume's source is never the driver's: destroy
    # forgets the attachment and leaves the file or device alone, and snapshot, rebuild, resize and
    # export_disks/import_disks deal in local disks only (a cold move does not carry volumes: the
    # caller attaches them again on the destination).  A suspended guest neither gains nor loses a
    # volume (its saved state holds its devices): Conflict.

    async def attach_volume(self, instance_id: str, disk: Disk) -> str:
        """Attach ``disk`` (kind VOLUME, ``serial`` set, ``source`` a file or block device, ``format``
        qcow2 or raw, ``read_only``; or ``nbd`` set and ``format`` raw: a volume of another host) and
        return the device name the guest most likely sees (``vdb``...).

        Running or paused guest: hot-plugged (QEMU: ``blockdev-add`` + ``device_add`` on a free PCIe
        root port; over NBD first ``object-add`` of its TLS-PSK credentials, whose key file the
        driver keeps with the guest's files until the volume is detached).  Stopped guest: recorded
        only; its next start opens it.  ``boot_index`` is dropped (an attached volume is a data
        disk) and ``device`` is chosen by the driver.
        Idempotent: a volume with this serial already attached returns its device name and changes
        nothing.  Raises ``VolumeSourceNotFound`` when the source is missing, ``ValidationFailed``
        for a disk that is not an attachable volume, ``Conflict`` when no hot-plug slot is free or
        the guest is suspended, ``NotFound`` for an unknown instance.
        """

    async def detach_volume(self, instance_id: str, serial: str) -> None:
        """Detach the volume with ``serial``.

        Running or paused guest: unplugged, which the guest must acknowledge within a bound (QEMU:
        ``device_del``, wait for ``DEVICE_DELETED``, ``blockdev-del``); if it does not, raises
        ``VolumeDetachTimeout`` and the volume stays attached (nothing half removed).  Stopped
        guest: forgotten.  A volume that is not attached, or an unknown instance: a no-op.
        """

    async def extend_volume(self, instance_id: str, serial: str, size_bytes: int) -> None:
        """Tell a running (or paused) guest that the attached volume is now ``size_bytes`` large.

        QEMU resizes its node (``block_resize``): a raw block device or file that grew is re-read,
        and a qcow2 image (which only the QEMU holding it may write while it runs) is grown by QEMU
        itself; the guest sees the new capacity at once.  Shrinking raises ``DriverError``.  A
        stopped guest, or a volume it does not have: a no-op.  ``NotFound`` for an unknown instance.
        """

    async def attached_volumes(self, instance_id: str) -> tuple[Disk, ...]:
        """Return the volumes attached to the guest, in order, each with its ``device`` name."""

    # ------------------------------------------------------------ live migration
    # The steps, in order: prepare_incoming (destination), send (source), finish_incoming
    # (destination), finish_outgoing (source).  Until finish_incoming the source's guest can take
    # over again: abort_migration on both sides leaves exactly one running guest, the source's.

    async def prepare_incoming(self, spec: InstanceSpec, listen_address: str, port: int,
                               disk_port: int | None = None) -> IncomingMigration:
        """Make ``spec``'s guest on this host wait for the source's state on ``listen_address:port``.

        Local disks are created empty (on the same base image) and served for the source to fill
        on ``disk_port`` (``port + 1`` when not given).  Raises ``Conflict`` if the instance exists.
        """

    async def send(self, instance_id: str, target: IncomingMigration, mode: MigrationMode) -> MigrationStats:
        """Copy the running (or paused) guest's disks and memory to ``target``.

        Returns when the destination holds the whole guest; the source's guest stays stopped (not
        gone) until ``finish_outgoing``.  On any failure the source's guest runs on as before.
        Raises ``Conflict`` for a mode this driver does not support (see ``capabilities``), and for
        a guest with attached volumes (the destination would not have them).
        """

    async def finish_incoming(self, instance_id: str, resume: bool = True) -> None:
        """Let the migrated guest run on this (the destination) host.

        ``resume`` False: the guest was paused by its user before the move and stays paused here.
        """

    async def finish_outgoing(self, instance_id: str) -> None:
        """Remove the migrated guest's process and disks from this (the source) host.

        Raises ``Conflict`` when the guest here was not migrated away (it would be the only copy).
        """

    async def abort_migration(self, instance_id: str) -> None:
        """Undo a migration on either side: the destination drops its guest, the source's resumes.

        Idempotent; a guest with no migration in progress is left alone.  Raises ``Conflict`` on a
        destination whose guest already runs (``finish_incoming`` happened: finish, do not abort).
        """

    # ------------------------------------------------------------ cold migration and resize
    # The guest is powered off while its disks move: export_disks (source), import_disks
    # (destination), then destroy on the side that loses (the source on confirm, the
    # destination on revert) and unexport_disks on the source when it keeps the guest.

    async def export_disks(self, instance_id: str, address: str, port: int, secret: str) -> list[str]:
        """Serve the powered-off guest's local disks, read-only, one client each, on ``address``.

        Disk ``i`` is served on ``port + i``; the client must present the pre-shared key ``secret``
        (64 hex digits).  Returns the exports' URIs in the spec's disk order.  Run again, the
        earlier exports end first.  Raises ``Conflict`` while the guest runs.
        """

    async def unexport_disks(self, instance_id: str) -> None:
        """End the guest's exports (idempotent; ``destroy`` ends them too)."""

    async def import_disks(self, spec: InstanceSpec, disks: Sequence[str], secret: str) -> int:
        """Create ``spec``'s guest here, powered off, with its local disks copied from ``disks``.

        Each copy keeps only what the guest wrote, on this host's base image (``spec``'s disk
        source), grown to ``spec``'s size.  Returns the bytes copied.  While it copies,
        ``get_info`` says ``migration`` "incoming"; an import cut short says so too, and a new
        import starts it over.  Raises ``Conflict`` if the guest arrived here already; leaves
        nothing behind when it fails.
        """

    async def set_balloon_target(self, instance_id: str, target_bytes: int) -> None:
        """Ask the guest's balloon to leave it ``target_bytes`` of RAM."""

    async def balloon_stats(self, instance_id: str) -> dict[str, Any]:
        """Return ``{"actual": bytes, "stats": {...}, "last_update": int, "template": key | None}``.

        ``template`` is the key of the memory template whose RAM file the guest's running QEMU maps
        (a clone: its balloon must never inflate, docs/explanation/memory-templates.md section 5),
        None for a guest that booted.
        """

    async def template_memory(self) -> dict[str, int]:
        """Return template key -> bytes of that template's RAM file resident in the host page cache
        (shared by its clones, counted once)."""

    async def rss_bytes(self, instance_id: str) -> int:
        """Return the resident memory of the guest's process; 0 when it is not running."""
