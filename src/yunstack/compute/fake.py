"""``FakeDriver``: the compute driver protocol in memory, for contract and scale tests only.

No guest runs.  State changes follow the same rules as ``QemuDriver`` (the contract suite runs
against both), each boot appends a ``YUNSTACK-READY`` line to the fake console, and the host's
size is configurable so that a scale test can simulate a thousand hosts in one process.

Live migration moves a guest between two ``FakeDriver`` objects of one process (two simulated
hosts): ``prepare_incoming`` registers its address in a process-wide table that ``send`` looks up;
a cold migration's ``export_disks`` does the same for ``import_disks``.

Attached volumes are kept per guest, apart from its spec (as ``QemuDriver`` keeps them across the
specs its callers hand it); a paused guest cannot acknowledge an unplug, so detaching from one
fails with ``VolumeDetachTimeout`` at once, where QEMU would wait for it.  Volume sizes are not
modelled: ``extend_volume`` checks the guest and changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yunstack.compute.driver import (
    Capabilities,
    Disk,
    DiskKind,
    HostInfo,
    IncomingMigration,
    InstanceInfo,
    InstanceSpec,
    MigrationMode,
    MigrationStats,
    Nic,
    PowerState,
    VolumeDetachTimeout,
    check_volume,
    named_at_boot,
    next_device_name,
    require_source,
)
from yunstack.errors import Conflict, DriverError, NotFound

GIB = 1024**3


@dataclass
class _Guest:
    spec: InstanceSpec
    state: PowerState = PowerState.RUNNING
    reason: str | None = None
    pid: int | None = None
    console: list[str] = field(default_factory=list)
    balloon_bytes: int = 0
    backup: InstanceSpec | None = None
    saved: bool = False
    rescue_image: Path | None = None  # booted from this image while rescued
    disk_generation: int = 0  # bumped by each rebuild: a new root disk
    # Live migration: "incoming" (destination, waiting), "received" (destination, holds the guest),
    # "migrated" (source, sent); None when no migration is in progress.
    migration: str | None = None
    listening: str | None = None  # the destination's address while it waits
    was_running: bool = True  # the source ran (not paused) when it was sent
    exports: list[str] = field(default_factory=list)  # its disks' export addresses (cold migration)
    volumes: list[Disk] = field(default_factory=list)  # attached, in order, each with its device name
    template: str | None = None  # the memory template this run started from (a clone), None after a boot


# Addresses of destinations waiting for a guest, shared by every FakeDriver in this process.
_LISTENING: dict[str, tuple[FakeDriver, str]] = {}
# Disks served by a source for a cold migration: address -> (driver, instance id, key).
_EXPORTS: dict[str, tuple[FakeDriver, str, str]] = {}


class FakeDriver:
    """An in-memory compute driver for contract and scale tests only; it runs no guests."""

    def __init__(self, *, hostname: str = "fake-host", vcpus: int = 64, memory_mib: int = 256 * 1024,
                 local_gb: int = 4096) -> None:
        self.hostname = hostname
        self.vcpus = vcpus
        self.memory_mib = memory_mib
        self.local_gb = local_gb
        self._guests: dict[str, _Guest] = {}
        self._serial: dict[str, tuple[asyncio.Server, Path]] = {}
        self._next_pid = 10_000
        self._capabilities = Capabilities(
            accel="tcg", migration_modes=frozenset({MigrationMode.PAUSED, MigrationMode.PRECOPY}),
            block_migration=True, hotplug_nics=True, volumes=True, snapshots=True, suspend=True,
            max_vcpus=vcpus)

    async def init_host(self) -> None:
        return None

    async def host_info(self) -> HostInfo:
        on = (PowerState.RUNNING, PowerState.PAUSED)
        running = [g.spec for g in self._guests.values() if g.state in on]
        return HostInfo(
            hostname=self.hostname, vcpus=self.vcpus, memory_mib=self.memory_mib,
            memory_used_mib=sum(s.memory_mib for s in running),
            local_gb=self.local_gb,
            local_gb_used=sum(d.size_gib for g in self._guests.values() for d in g.spec.disks
                              if d.kind == DiskKind.LOCAL_OVERLAY),
            hypervisor_type="fake", hypervisor_version=1000, cpu_info="{}",
            uptime=" 00:00:00 up 1 day,  0:00,  0 users,  load average: 0.00, 0.00, 0.00", accel="tcg",
            capabilities=self._capabilities,
        )

    async def capabilities(self) -> Capabilities:
        return self._capabilities

    async def spawn(self, spec: InstanceSpec) -> None:
        if spec.id in self._guests:
            raise Conflict(detail=f"instance {spec.id} already exists on this host")
        guest = _Guest(spec=spec, state=PowerState.SHUTDOWN)
        self._guests[spec.id] = guest
        self._boot(guest)

    async def destroy(self, instance_id: str) -> None:
        guest = self._guests.pop(instance_id, None)
        if guest is not None and guest.listening is not None:
            _LISTENING.pop(guest.listening, None)
        if guest is not None:
            self._unexport(guest)
        served = self._serial.pop(instance_id, None)
        if served is not None:
            served[0].close()
            shutil.rmtree(served[1].parent, ignore_errors=True)

    async def power_off(self, instance_id: str, timeout: float | None = None) -> None:
        guest = self._get(instance_id)
        guest.console.append("reboot: Power down")
        self._off(guest, PowerState.SHUTDOWN, "powered off")
        guest.saved = False

    async def power_on(self, spec: InstanceSpec) -> None:
        guest = self._get(spec.id)
        if guest.state in (PowerState.RUNNING, PowerState.PAUSED):
            return
        guest.spec = spec
        if guest.saved:
            guest.saved = False
            self._run(guest)
        else:
            self._boot(guest)

    async def reboot(self, instance_id: str, hard: bool) -> None:
        guest = self._get(instance_id)
        if guest.state not in (PowerState.RUNNING, PowerState.PAUSED) and not hard:
            raise Conflict(detail=f"instance {instance_id} is not running; soft reboot needs a running guest")
        guest.saved = False
        self._boot(guest)

    async def pause(self, instance_id: str) -> None:
        self._running(instance_id).state = PowerState.PAUSED

    async def unpause(self, instance_id: str) -> None:
        self._running(instance_id).state = PowerState.RUNNING

    async def suspend(self, instance_id: str) -> None:
        guest = self._running(instance_id)
        self._off(guest, PowerState.SUSPENDED, "state saved to disk")
        guest.saved = True

    async def resume(self, instance_id: str) -> None:
        guest = self._get(instance_id)
        if guest.state != PowerState.SUSPENDED:
            raise Conflict(detail=f"instance {instance_id} is not suspended")
        guest.saved = False
        self._run(guest)

    async def console_output(self, instance_id: str, length: int | None = None) -> str:
        lines = self._get(instance_id).console
        return "\n".join(lines[-length:] if length else lines)

    async def serial_console(self, instance_id: str) -> str:
        """A real unix socket whose fake shell answers each line with ``fake-serial: <line>`` (and
        logs out at Ctrl-D)."""
        self._running(instance_id)
        if instance_id not in self._serial:
            path = Path(tempfile.mkdtemp(prefix="ys-fake-serial-")) / "ser.sock"
            server = await asyncio.start_unix_server(_fake_shell, path=str(path))
            self._serial[instance_id] = (server, path)
        return str(self._serial[instance_id][1])

    async def list_instances(self) -> list[InstanceInfo]:
        return [self._info(g) for _, g in sorted(self._guests.items())]

    async def get_info(self, instance_id: str) -> InstanceInfo:
        return self._info(self._get(instance_id))

    async def snapshot(self, instance_id: str, dest: Path) -> None:
        """Write an empty, valid qcow2 v3 (no backing file) of the disk's virtual size."""
        guest = self._get(instance_id)
        dest.write_bytes(_empty_qcow2(max(guest.spec.root.size_gib, 1) * GIB))

    async def resize(self, spec: InstanceSpec, new_spec: InstanceSpec) -> None:
        guest = self._get(spec.id)
        if guest.state not in (PowerState.SHUTDOWN, PowerState.CRASHED):
            raise Conflict(detail=f"instance {spec.id} must be powered off")
        guest.backup, guest.spec = guest.spec, new_spec

    async def confirm_resize(self, instance_id: str) -> None:
        self._get(instance_id).backup = None

    async def revert_resize(self, spec: InstanceSpec) -> None:
        guest = self._get(spec.id)
        if guest.state not in (PowerState.SHUTDOWN, PowerState.CRASHED):
            raise Conflict(detail=f"instance {spec.id} must be powered off")
        guest.spec, guest.backup = spec, None

    async def rebuild(self, spec: InstanceSpec) -> None:
        guest = self._get(spec.id)
        if guest.state not in (PowerState.SHUTDOWN, PowerState.CRASHED):
            raise Conflict(detail=f"instance {spec.id} must be powered off")
        guest.spec, guest.backup, guest.saved, guest.rescue_image = spec, None, False, None
        guest.disk_generation += 1

    async def rescue(self, spec: InstanceSpec, rescue_image: Path, rescue_format: str) -> None:
        guest = self._get(spec.id)
        if guest.state in (PowerState.RUNNING, PowerState.PAUSED):
            guest.console.append("reboot: Power down")
        self._off(guest, PowerState.SHUTDOWN, "powered off for rescue")
        guest.spec, guest.saved, guest.rescue_image = spec, False, rescue_image
        self._boot(guest)

    async def unrescue(self, spec: InstanceSpec) -> None:
        guest = self._get(spec.id)
        self._off(guest, PowerState.SHUTDOWN, "rescue ended")
        guest.spec, guest.saved, guest.rescue_image = spec, False, None
        self._boot(guest)

    def rescued_from(self, instance_id: str) -> Path | None:
        """Test hook: the image a rescued guest booted from (None when it is not rescued)."""
        return self._get(instance_id).rescue_image

    async def attach_interface(self, instance_id: str, nic: Nic) -> None:
        guest = self._get(instance_id)
        if all(n.mac != nic.mac for n in guest.spec.nics):
            guest.spec = replace(guest.spec, nics=(*guest.spec.nics, nic))

    async def detach_interface(self, instance_id: str, mac: str) -> None:
        guest = self._get(instance_id)
        guest.spec = replace(guest.spec, nics=tuple(n for n in guest.spec.nics if n.mac != mac.lower()))

    # ---------------------------------------------------------------- volumes

    async def attach_volume(self, instance_id: str, disk: Disk) -> str:
        serial = check_volume(disk)
        guest = self._volume_guest(instance_id)
        recorded = next((v for v in guest.volumes if v.serial == serial), None)
        if recorded is not None:
            return recorded.device
        require_source(disk)
        device = next_device_name(guest.spec, guest.volumes, rescued=guest.rescue_image is not None)
        guest.volumes.append(replace(disk, boot_index=None, device=device))
        return device

    async def detach_volume(self, instance_id: str, serial: str) -> None:
        guest = self._guests.get(instance_id)
        if guest is None or all(v.serial != serial for v in guest.volumes):
            return
        self._volume_guest(instance_id)
        if guest.state == PowerState.PAUSED:
            raise VolumeDetachTimeout(instance_id=instance_id, serial=serial, seconds=0)
        guest.volumes = [v for v in guest.volumes if v.serial != serial]

    async def extend_volume(self, instance_id: str, serial: str, size_bytes: int) -> None:
        self._get(instance_id)

    async def attached_volumes(self, instance_id: str) -> tuple[Disk, ...]:
        return tuple(self._get(instance_id).volumes)

    def _volume_guest(self, instance_id: str) -> _Guest:
        guest = self._get(instance_id)
        if guest.state == PowerState.SUSPENDED:
            raise Conflict(detail=f"instance {instance_id} is suspended: resume it to attach or detach a volume")
        return guest

    # ---------------------------------------------------------------- live migration

    async def prepare_incoming(self, spec: InstanceSpec, listen_address: str, port: int,
                               disk_port: int | None = None) -> IncomingMigration:
        if spec.id in self._guests:
            raise Conflict(detail=f"instance {spec.id} already exists on this host")
        host = f"[{listen_address}]" if ":" in listen_address else listen_address
        uri = f"tcp:{host}:{port}"
        if uri in _LISTENING:
            raise Conflict(detail=f"{uri} is already taken by another incoming migration")
        self._guests[spec.id] = _Guest(spec=spec, state=PowerState.PAUSED, reason="QEMU reports inmigrate",
                                       migration="incoming", listening=uri)
        _LISTENING[uri] = (self, spec.id)
        return IncomingMigration(instance_id=spec.id, uri=uri,
                                 disks_uri=f"nbd://{host}:{disk_port or port + 1}")

    async def send(self, instance_id: str, target: IncomingMigration, mode: MigrationMode) -> MigrationStats:
        guest = self._running(instance_id)
        if guest.migration is not None:
            raise Conflict(detail=f"instance {instance_id} is already in a migration")
        if mode not in self._capabilities.migration_modes:
            raise Conflict(detail=f"{mode} migration is not supported on {self.hostname}")
        if guest.volumes:
            raise Conflict(detail=f"instance {instance_id} has volumes attached; live migration "
                                  "of such a guest is not supported yet")
        peer = _LISTENING.get(target.uri)
        if peer is None or peer[1] != instance_id:
            raise DriverError(detail=f"migrating {instance_id}: nothing waits for it at {target.uri}")
        destination = peer[0]._guests[instance_id]
        del _LISTENING[target.uri]
        destination.listening, destination.migration = None, "received"
        destination.console = list(guest.console)
        destination.balloon_bytes = guest.balloon_bytes
        destination.was_running = guest.was_running = guest.state == PowerState.RUNNING
        guest.state, guest.reason, guest.migration = PowerState.PAUSED, "QEMU reports postmigrate", "migrated"
        return MigrationStats(mode=mode, total_ms=0, downtime_ms=0,
                              memory_bytes=guest.spec.memory_mib * 1024 * 1024)

    async def finish_incoming(self, instance_id: str, resume: bool = True) -> None:
        guest = self._get(instance_id)
        if guest.migration != "received":
            raise Conflict(detail=f"instance {instance_id} has not been received by this host")
        guest.migration = None
        self._next_pid += 1
        guest.pid = self._next_pid
        guest.state = PowerState.RUNNING if resume else PowerState.PAUSED
        guest.reason = None

    async def finish_outgoing(self, instance_id: str) -> None:
        guest = self._get(instance_id)
        if guest.migration != "migrated":
            raise Conflict(detail=f"instance {instance_id} was not migrated away; it is the only copy")
        await self.destroy(instance_id)

    async def abort_migration(self, instance_id: str) -> None:
        guest = self._guests.get(instance_id)
        if guest is None or guest.migration is None:
            return
        if guest.migration in ("incoming", "received"):
            await self.destroy(instance_id)
            return
        guest.migration, guest.reason = None, None
        guest.state = PowerState.RUNNING if guest.was_running else PowerState.PAUSED

    # ---------------------------------------------------------------- cold migration

    async def export_disks(self, instance_id: str, address: str, port: int, secret: str) -> list[str]:
        guest = self._get(instance_id)
        if guest.state not in (PowerState.SHUTDOWN, PowerState.CRASHED):
            raise Conflict(detail=f"instance {instance_id} must be powered off")
        self._unexport(guest)
        host = f"[{address}]" if ":" in address else address
        local = [i for i, d in enumerate(guest.spec.disks) if d.kind == DiskKind.LOCAL_OVERLAY]
        guest.exports = [f"nbd://{host}:{port + n}/disk{i}" for n, i in enumerate(local)]
        for uri in guest.exports:
            _EXPORTS[uri] = (self, instance_id, secret)
        return list(guest.exports)

    async def unexport_disks(self, instance_id: str) -> None:
        guest = self._guests.get(instance_id)
        if guest is not None:
            self._unexport(guest)

    async def import_disks(self, spec: InstanceSpec, disks: Sequence[str], secret: str) -> int:
        if spec.id in self._guests:
            raise Conflict(detail=f"instance {spec.id} already exists on this host")
        local = [d for d in spec.disks if d.kind == DiskKind.LOCAL_OVERLAY]
        if len(local) != len(disks):
            raise DriverError(detail=f"instance {spec.id} has {len(local)} local disks, the source exports "
                                     f"{len(disks)}")
        sources = []
        for uri in disks:
            served = _EXPORTS.get(uri)
            if served is None or served[1] != spec.id:
                raise DriverError(detail=f"copying the disks of {spec.id}: nothing is served at {uri}")
            if served[2] != secret:
                raise DriverError(detail=f"copying the disks of {spec.id}: TLS handshake failed at {uri}")
            sources.append(served)
        for uri in disks:  # each export serves one reader, then ends
            del _EXPORTS[uri]
        origin = sources[0][0]._guests[spec.id] if sources else None
        guest = _Guest(spec=spec, state=PowerState.SHUTDOWN, reason="powered off")
        if origin is not None:
            guest.disk_generation = origin.disk_generation
            origin.exports = [u for u in origin.exports if u not in disks]
        self._guests[spec.id] = guest
        return sum(d.size_gib for d in local) * GIB

    def _unexport(self, guest: _Guest) -> None:
        for uri in guest.exports:
            _EXPORTS.pop(uri, None)
        guest.exports = []

    async def set_balloon_target(self, instance_id: str, target_bytes: int) -> None:
        guest = self._running(instance_id)
        guest.balloon_bytes = min(int(target_bytes), guest.spec.memory_mib * 1024 * 1024)

    async def balloon_stats(self, instance_id: str) -> dict[str, Any]:
        guest = self._running(instance_id)
        total = guest.spec.memory_mib * 1024 * 1024
        return {"actual": guest.balloon_bytes,
                "stats": {"stat-total-memory": total, "stat-free-memory": guest.balloon_bytes // 2,
                          "stat-available-memory": guest.balloon_bytes // 2},
                "last_update": 0, "template": guest.template}

    async def rss_bytes(self, instance_id: str) -> int:
        guest = self._get(instance_id)
        return guest.balloon_bytes if guest.state in (PowerState.RUNNING, PowerState.PAUSED) else 0

    async def template_memory(self) -> dict[str, int]:
        """Each template some running guest started from, with half its RAM resident (what a booted,
        idle template guest touched); a template no clone maps any more is gone, as the agent's are."""
        on = (PowerState.RUNNING, PowerState.PAUSED)
        return {g.template: g.spec.memory_mib * 1024 * 1024 // 2
                for g in self._guests.values() if g.template is not None and g.state in on}

    def simulate_crash(self, instance_id: str) -> None:
        """Test hook: the guest's process dies as under ``kill -9``."""
        self._off(self._get(instance_id), PowerState.CRASHED, "process killed (simulated)")

    # ---------------------------------------------------------------- helpers

    def _get(self, instance_id: str) -> _Guest:
        try:
            return self._guests[instance_id]
        except KeyError:
            raise NotFound(kind="instance", id=instance_id) from None

    def _running(self, instance_id: str) -> _Guest:
        guest = self._get(instance_id)
        if guest.state not in (PowerState.RUNNING, PowerState.PAUSED):
            raise Conflict(detail=f"instance {instance_id} is not running")
        return guest

    def _run(self, guest: _Guest) -> None:
        """The guest runs from its own RAM: a resume or an incoming migration restores all of it."""
        self._next_pid += 1
        guest.state, guest.reason, guest.pid = PowerState.RUNNING, None, self._next_pid
        guest.balloon_bytes = guest.spec.memory_mib * 1024 * 1024
        guest.template = None

    def _boot(self, guest: _Guest) -> None:
        self._run(guest)
        # A boot of a template-marked spec starts from the template, as QemuDriver does when the host
        # has one (a guest that opted out of page sharing never does: the template's pages are shared).
        memory = guest.spec.memory
        if memory.template and memory.page_sharing:
            guest.template = _template_key(guest.spec)
        # A fresh boot names the volumes in order again (a detach may have left a gap).
        guest.volumes = list(named_at_boot(guest.spec, guest.volumes, rescued=guest.rescue_image is not None))
        guest.console.append(f"YUNSTACK-READY hostname={guest.spec.hostname} instance-id={guest.spec.id}")

    def _off(self, guest: _Guest, state: PowerState, reason: str) -> None:
        guest.state, guest.reason, guest.pid = state, reason, None

    def _info(self, guest: _Guest) -> InstanceInfo:
        migration = {"incoming": "incoming", "received": "incoming", "migrated": "outgoing"}.get(guest.migration or "")
        return InstanceInfo(id=guest.spec.id, power_state=guest.state, pid=guest.pid, reason=guest.reason,
                            memory_mib=guest.spec.memory_mib, vcpus=guest.spec.vcpus, migration=migration)


def _template_key(spec: InstanceSpec) -> str:
    """A stand-in for QemuDriver's template key: guests of one image, size and vCPU count share one."""
    return hashlib.sha256(f"{spec.root.source}|{spec.memory_mib}|{spec.vcpus}".encode()).hexdigest()[:16]


def _empty_qcow2(size: int) -> bytes:
    """The smallest image ``qemu-img info`` and ``check`` accept: what ``qemu-img create`` writes.

    64 KiB clusters: the header, a one-entry refcount table, one refcount block counting the four
    metadata clusters, and an all-zero L1 table (every cluster unallocated, so it reads as zeros).
    """
    cluster = 1 << 16
    l1_size = -(-size // (cluster * (cluster // 8)))
    header = struct.pack(">4sIQIIQIIQQIIQQQQII", b"QFI\xfb", 3, 0, 0, 16, size, 0, l1_size, 3 * cluster,
                         cluster, 1, 0, 0, 0, 0, 0, 4, 104)
    refcount_table = struct.pack(">Q", 2 * cluster)
    refcount_block = struct.pack(">4H", 1, 1, 1, 1)
    return (header.ljust(cluster, b"\0") + refcount_table.ljust(cluster, b"\0")
            + refcount_block.ljust(cluster, b"\0") + bytes(8 * l1_size))


async def _fake_shell(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # A line ends at "\r" as well as "\n": a terminal's Enter key sends "\r" (a guest's tty maps it
    # to "\n"); "\r\n" ends one line.  Ctrl-D on an empty line logs out, as a shell does: the
    # connection closes, and the next one gets a new shell.
    line, previous = bytearray(), b""
    try:
        while byte := await reader.read(1):
            if byte == b"\x04" and not line:
                break
            if byte in (b"\r", b"\n"):
                if not (byte == b"\n" and previous == b"\r"):
                    writer.write(b"fake-serial: " + bytes(line) + b"\r\n")
                    await writer.drain()
                line.clear()
            else:
                line += byte
            previous = byte
    finally:
        writer.close()
