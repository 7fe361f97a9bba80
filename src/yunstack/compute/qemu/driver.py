"""``QemuDriver``: one daemonized QEMU process per guest, files in ``instances_path/<id>/``.

The instance directory is the whole truth about a guest (``spec.json``, ``disk.qcow2``,
``config.iso``, ``console.log``, ``qemu.log``, ``qmp.sock``, ``qemu.pid``, ``intent``,
``ports.json``), attached volumes included (disks of ``spec.json``; their files are elsewhere and
never the driver's), so a new driver object, for instance after a control-plane restart, finds and
adopts running guests without a database.  Operations on one guest are serialized by a per-guest lock, which also keeps
its QMP monitor (one client at a time) uncontended.  Status reads (``get_info``, ``list_instances``,
``balloon_stats``) never take that lock: they talk to a second monitor of their own
(``InstancePaths.status_qmp``) under a short per-guest status lock, so a snapshot, a suspend or a
migration that holds the guest for seconds never stalls the agent's power sync or the memory manager.

Each QEMU starts in its own memory cgroup ``<cgroup_parent>/<instance-id>`` (v1 or v2): the child
joins it before exec, because on v1 charges do not follow a moved task, and what QEMU allocated
before a later move (~12 MiB) would stay with the agent's cgroup.  The daemon is moved there again
once its pidfile appears, in case the child could not join.  The memory manager sets the leaf's
limits.  Without a writable memory hierarchy guests run without a cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import yunstack.cgroups as cgroups
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
    check_volume,
    next_device_name,
    require_source,
)
from yunstack.compute.qemu import (
    disk,
    diskcopy,
    host,
    hotplug,
    identity,
    migration,
    pagecache,
    process,
    savestate,
    specfile,
    template,
    templatestore,
    volumes,
)
from yunstack.compute.qemu.accel import choose_accel
from yunstack.compute.qemu.cmdline import (
    CLONE_PENDING,
    MAX_SOCKET_PATH,
    InstancePaths,
    PortLayout,
    VolumeIds,
    build_argv,
    thp_disabled,
)
from yunstack.compute.qemu.configdrive import build_iso
from yunstack.compute.qemu.qmp import QmpSession, open_session, wait_for_qmp
from yunstack.config import Config
from yunstack.errors import (
    Conflict,
    DriverError,
    DriverMisconfigured,
    DriverUnavailable,
    NotFound,
    ValidationFailed,
)

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
QMP_READY_TIMEOUT = 15.0
# How long a clone of a memory template that has its identity may take to say YUNSTACK-READY (its
# user data included) before its config drive is plugged in all the same.
CLONE_READY_TIMEOUT = 60.0
_PAUSED = {"paused", "suspended", "inmigrate", "postmigrate", "prelaunch", "finish-migrate",
           "save-vm", "restore-vm", "debug", "watchdog", "colo", "io-error"}
_CRASHED = {"internal-error", "guest-panicked"}
MAX_VCPUS = 255  # QEMU's limit for a pc/q35 guest without an IOMMU (x2APIC beyond that)


def socket_dir(instances: Path) -> Path:
    """A short, stable run directory for this installation's QMP sockets (keyed by the instances dir)."""
    key = hashlib.sha256(str(instances.resolve()).encode()).hexdigest()[:10]
    base = Path("/run/yunstack") if os.geteuid() == 0 else Path(f"/tmp/yunstack-{os.geteuid()}")
    return base / key


class QemuDriver:
    """Runs guests as QEMU processes on this host (KVM when a probe proves it works, else TCG)."""

    def __init__(self, config: Config, *, genisoimage: str = "genisoimage", cgroup_parent: str = "yunstack",
                 stats_interval: int = 2) -> None:
        self._config = config
        self._qemu = config.qemu
        self._cache_modes: dict[Path, str] = {}
        self._root = config.instances_path
        self._socket_dir = socket_dir(self._root)
        self._genisoimage = genisoimage
        self._locks: dict[str, asyncio.Lock] = {}
        self._status_locks: dict[str, asyncio.Lock] = {}
        self._sending: set[str] = set()  # guests whose send runs (abort_migration cancels it)
        self._cgroup_parent = cgroup_parent
        self._cgroups: cgroups.MemoryCgroups | None = cgroups.detect() if cgroup_parent else None
        self._stats_interval = stats_interval
        # Each guest's last measured dirty rate and when: QEMU answers nothing while a window is
        # being measured, and every reader of balloon_stats (the memory manager, a test, a
        # benchmark) would otherwise see a rate only when it happened to end a window itself.
        self._dirty_rates: dict[str, tuple[int, float]] = {}
        self._qemu_version_text: str | None = None
        self.templates = templatestore.TemplateStore(self._root / ".templates", self._socket_dir, self._qemu)

    # ---------------------------------------------------------------- host

    async def init_host(self) -> None:
        for binary in (self._qemu.binary, self._qemu.qemu_img, self._qemu.qemu_nbd, self._genisoimage):
            if shutil.which(binary) is None:
                raise DriverMisconfigured(detail=f"{binary} is not installed or not on PATH")
        self._root.mkdir(parents=True, exist_ok=True)
        self._socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._paths("0" * 36)  # raises if the QMP socket path would be too long
        await self._undo_unfinished_clones()
        await asyncio.to_thread(self._prune_cgroups)
        await asyncio.to_thread(self.templates.prune)
        await choose_accel(self._qemu)

    async def _undo_unfinished_clones(self) -> None:
        """Remove every guest an agent that died was starting from a memory template.

        Such a guest runs as its template still (its identity was not taken).  Its spawn did not
        finish, so its task runs again and, finding nothing, starts it anew; an adopted half-made
        clone would run as somebody else for good.
        """
        if not self._root.is_dir():
            return
        for marker in self._root.glob(f"*/{CLONE_PENDING}"):
            instance_id = marker.parent.name
            log.warning("instance %s: its start from a memory template was interrupted; undone, its spawn "
                        "starts it again", instance_id)
            await self._remove(instance_id, self._paths(instance_id))

    async def host_info(self) -> HostInfo:
        self._root.mkdir(parents=True, exist_ok=True)
        total_mib, used_mib = host.meminfo_mib()
        if self._config.memory.budget_bytes > 0:  # the guests' budget is all this host has for them
            total_mib = min(total_mib, self._config.memory.budget_bytes // (1024 * 1024))
            used_mib = min(used_mib, total_mib)
        total_gb, used_gb = host.disk_gb(self._root)
        return HostInfo(
            hostname=self._config.host_name, vcpus=os.cpu_count() or 1, memory_mib=total_mib,
            memory_used_mib=used_mib, local_gb=total_gb, local_gb_used=used_gb,
            hypervisor_type="QEMU", hypervisor_version=host.hypervisor_version(await self._qemu_version()),
            cpu_info=host.cpu_info(),
            uptime=host.uptime(), accel=await choose_accel(self._qemu), capabilities=await self.capabilities(),
        )

    async def capabilities(self) -> Capabilities:
        accel = await choose_accel(self._qemu)
        # QEMU 7.2's TCG loses dirty pages during precopy (a writing guest comes out corrupted):
        # only paused migration is safe there.  Postcopy is not offered (no userfaultfd set-up).
        modes = {MigrationMode.PAUSED, MigrationMode.PRECOPY} if accel == "kvm" else {MigrationMode.PAUSED}
        return Capabilities(accel=accel, migration_modes=frozenset(modes), block_migration=True,
                            hotplug_nics=True, volumes=True, snapshots=True, suspend=True,
                            max_vcpus=MAX_VCPUS)

    # ---------------------------------------------------------------- lifecycle

    async def spawn(self, spec: InstanceSpec) -> None:
        paths = self._paths(spec.id)
        async with self._lock(spec.id):
            if paths.dir.exists():
                raise Conflict(detail=f"instance {spec.id} already exists on this host")
            paths.dir.mkdir(parents=True, mode=0o700)
            try:
                specfile.save_spec(paths, spec)
                if await self._from_template(spec, paths):
                    return
                await self._create_local_disks(spec, paths)
                await self._start(spec, paths)
            except BaseException:
                await self._remove(spec.id, paths)
                raise

    async def _from_template(self, spec: InstanceSpec, paths: InstancePaths) -> bool:
        """Start ``spec`` from its memory template if the host has one; True when it did.

        Without one, the caller boots the guest and the host makes the template in the background
        for the next.  A clone that fails to start is undone and the caller boots it: a template is
        an optimisation, never a reason for a failed create.
        """
        why = templatestore.ineligible(spec, self._qemu.machine)
        if why is not None:
            if spec.memory.template:
                log.info("instance %s boots without a memory template: %s", spec.id, why)
            return False
        accel = await choose_accel(self._qemu)
        cache = self._disk_cache(paths.dir)
        key = await asyncio.to_thread(templatestore.key_of, spec, self._qemu, accel,
                                      await self._qemu_version(), cache)
        found = self.templates.ready(key)
        if found is None:
            self.templates.build_soon(spec, key, accel, cache)
            return False
        try:
            await self._clone(spec, paths, found, accel, cache)
        except DriverError as exc:
            log.warning("instance %s could not start from memory template %s, boots instead: %s",
                        spec.id, key, exc.text)
            if (pid := process.read_pid(paths)) is not None:
                await process.kill(pid, spec.id)
            paths.disk.unlink(missing_ok=True)
            paths.clone_pending.unlink(missing_ok=True)  # what boots now is no clone
            self.templates.forget(key, exc.text)
            return False
        return True

    async def _clone(self, spec: InstanceSpec, paths: InstancePaths, found: templatestore.Template, accel: str,
                     cache: str) -> None:
        """Start ``spec`` from ``found``: its RAM mapped private (copy on write), its device state
        loaded, its NICs (the template's devices) on its own taps.  Then its identity goes to its
        identity port, which the guest takes at once (``identity``), and once the guest says it is
        ready, its config drive is plugged in for a later reboot (docs/explanation/memory-templates.md)."""
        drive = spec.config_drive
        if drive is None:  # templatestore.ineligible
            raise DriverError(detail="a clone takes its identity from its config drive's files; it has none")
        message = identity.message(drive, templatestore.macs(spec), identity.HostKey(),
                                   addresses=[(n.mac, n.ipv4) for n in spec.nics if n.ipv4])
        # The template's frozen overlay is small (what its boot wrote); a copy keeps the clone's disk
        # chain an ordinary one (overlay on the cached image), so snapshots and moves need nothing new.
        await asyncio.to_thread(shutil.copyfile, found.disk, paths.disk)
        await build_iso(drive, paths.config_iso, genisoimage=self._genisoimage)
        layout = templatestore.layout(spec)
        argv = build_argv(replace(spec, config_drive=None), paths, self._qemu, accel, incoming=True,
                          disk_cache=cache, layout=layout, template_ram=found.ram)
        specfile.save_layout(paths, layout)
        specfile.write_intent(paths, "running")
        paths.clone_pending.touch()
        loop = asyncio.get_running_loop()
        began = loop.time()
        pid = await self._launch(spec, paths, argv)
        launched = loop.time()
        async with self._qmp(paths, spec.id) as qmp:
            await template.start(qmp, found.state, spec.id, savestate.timeout_for(spec.memory_mib))
            # Off again, so that a later save or migration of this guest carries all its RAM (its
            # mapping is private) and an ordinary QEMU can take it.
            await qmp.execute("migrate-set-capabilities", template.IGNORE_SHARED_OFF)
        await identity.send(paths.identity, message, f"instance {spec.id}")
        # The guest has its identity (it answered) and is running its user data: from here on the
        # clone is the server, and nothing undoes it (a boot now would run the user data twice).
        paths.clone_pending.unlink()
        sent = loop.time()
        await self._poll_balloon(spec, paths)
        # The config drive, for a later boot, only once the guest is ready: its hot-plug costs the
        # guest's kernel about half a second under TCG, which its resume need not wait for.  A
        # guest slower than that (long user data) gets it then anyway.
        ready: float | None = None
        try:
            await templatestore.wait_marker(paths, pid, spec.id, CLONE_READY_TIMEOUT, f"instance {spec.id}")
            ready = loop.time()
        except DriverError as exc:
            log.warning("instance %s: %s; its config drive is plugged in now", spec.id, exc.text)
        if layout.config is not None:
            try:
                async with self._qmp(paths, spec.id) as qmp:
                    await hotplug.plug_config_drive(qmp, paths.config_iso, layout.config)
            except DriverError as exc:
                log.warning("instance %s runs without its config drive (a later boot reads the metadata "
                            "service instead): %s", spec.id, exc.text)
        log.info("instance %s started from memory template %s: QEMU up in %.0f ms, identity taken at %.0f ms, "
                 "ready at %s", spec.id, found.key, (launched - began) * 1000, (sent - began) * 1000,
                 "-" if ready is None else f"{(ready - began) * 1000:.0f} ms")

    async def _qemu_version(self) -> str:
        """``qemu --version``'s answer, read once: the host's hypervisor version and a template key's input."""
        if self._qemu_version_text is None:
            self._qemu_version_text = (await disk.run_tool([self._qemu.binary, "--version"],
                                                           "reading the QEMU version", 30.0)).strip()
        return self._qemu_version_text

    async def destroy(self, instance_id: str) -> None:
        paths = self._paths(instance_id)
        async with self._lock(instance_id):
            await self._remove(instance_id, paths)
        self._locks.pop(instance_id, None)
        self._status_locks.pop(instance_id, None)
        self._dirty_rates.pop(instance_id, None)

    async def power_off(self, instance_id: str, timeout: float | None = None) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            pid = process.live_pid(paths, instance_id)
            if pid is not None:
                await self._graceful_stop(pid, paths, instance_id,
                                          self._qemu.stop_timeout if timeout is None else timeout)
            specfile.write_intent(paths, "shutoff")
            paths.saved_state.unlink(missing_ok=True)
            paths.pidfile.unlink(missing_ok=True)

    async def power_on(self, spec: InstanceSpec) -> None:
        paths = self._existing(spec.id)
        async with self._lock(spec.id):
            if process.live_pid(paths, spec.id) is not None:
                return
            spec = self._keep_volumes(paths, spec)
            specfile.save_spec(paths, spec)
            if paths.saved_state.exists():
                await self._restore(spec, paths)
            else:
                await self._start(spec, paths)

    async def reboot(self, instance_id: str, hard: bool) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            spec = specfile.load_spec(paths)
            pid = process.live_pid(paths, instance_id)
            if pid is None:
                if not hard:
                    raise Conflict(detail=f"instance {instance_id} is not running; a soft reboot needs it")
                paths.saved_state.unlink(missing_ok=True)
                await self._start(spec, paths)
                return
            if not hard:
                async with self._qmp(paths, instance_id) as qmp:
                    await qmp.execute("system_powerdown")
                if await process.wait_gone(pid, instance_id, self._qemu.stop_timeout):
                    await self._start(spec, paths)
                    return
            async with self._qmp(paths, instance_id) as qmp:
                await qmp.execute("system_reset")
                if (await qmp.execute("query-status"))["status"] != "running":
                    await qmp.execute("cont")

    async def pause(self, instance_id: str) -> None:
        await self._command(instance_id, "stop")

    async def unpause(self, instance_id: str) -> None:
        await self._command(instance_id, "cont")

    async def suspend(self, instance_id: str) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            pid = self._require_running(paths, instance_id)
            spec = specfile.load_spec(paths)
            async with self._qmp(paths, instance_id) as qmp:
                timeout = savestate.timeout_for(spec.memory_mib)
                await savestate.save(qmp, paths.saved_state, instance_id, timeout)
                specfile.write_intent(paths, "suspended")
                with contextlib.suppress(DriverUnavailable):  # QEMU may hang up before answering
                    await qmp.execute("quit")
            if not await process.wait_gone(pid, instance_id, 10.0):
                await process.kill(pid, instance_id)

    async def resume(self, instance_id: str) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            if process.live_pid(paths, instance_id) is not None or not paths.saved_state.exists():
                raise Conflict(detail=f"instance {instance_id} is not suspended")
            await self._restore(specfile.load_spec(paths), paths)

    # ---------------------------------------------------------------- rebuild and rescue

    async def rebuild(self, spec: InstanceSpec) -> None:
        paths = self._existing(spec.id)
        async with self._lock(spec.id):
            self._require_off(paths, spec.id)
            # The new overlay is made aside and renamed over the old disk: either disk, never half.
            fresh = paths.dir / "disk.qcow2.rebuild"
            fresh.unlink(missing_ok=True)
            try:
                await disk.create_overlay(self._qemu.qemu_img, spec.root.source, spec.root.format, fresh,
                                          spec.root.size_gib * disk.GIB)
                fresh.replace(paths.disk)
            finally:
                fresh.unlink(missing_ok=True)
            for stale in (paths.disk_backup, paths.spec_backup, paths.rescue_disk, paths.saved_state):
                stale.unlink(missing_ok=True)
            specfile.save_spec(paths, self._keep_volumes(paths, spec))  # volumes stay attached (Nova)
            specfile.write_intent(paths, "shutoff")

    async def rescue(self, spec: InstanceSpec, rescue_image: Path, rescue_format: str) -> None:
        paths = self._existing(spec.id)
        async with self._lock(spec.id):
            pid = process.live_pid(paths, spec.id)
            if pid is not None:
                await self._graceful_stop(pid, paths, spec.id, self._qemu.stop_timeout)
            paths.saved_state.unlink(missing_ok=True)
            paths.pidfile.unlink(missing_ok=True)
            part = paths.dir / "disk.rescue.qcow2.part"
            part.unlink(missing_ok=True)
            try:
                await disk.create_overlay(self._qemu.qemu_img, rescue_image, rescue_format, part, 0)
                part.replace(paths.rescue_disk)
            finally:
                part.unlink(missing_ok=True)
            spec = self._keep_volumes(paths, spec)
            specfile.save_spec(paths, spec)
            await self._start(spec, paths)

    async def unrescue(self, spec: InstanceSpec) -> None:
        paths = self._existing(spec.id)
        async with self._lock(spec.id):
            pid = process.live_pid(paths, spec.id)
            if pid is not None:
                await self._graceful_stop(pid, paths, spec.id, 0.0)  # the rescue OS has nothing to save
            paths.rescue_disk.unlink(missing_ok=True)
            paths.pidfile.unlink(missing_ok=True)
            spec = self._keep_volumes(paths, spec)
            specfile.save_spec(paths, spec)
            await self._start(spec, paths)

    # ---------------------------------------------------------------- interfaces

    async def attach_interface(self, instance_id: str, nic: Nic) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            spec = specfile.load_spec(paths)
            if any(n.mac == nic.mac for n in spec.nics):
                return
            if process.live_pid(paths, instance_id) is not None:
                async with self._qmp(paths, instance_id) as qmp:
                    port = await hotplug.plug(qmp, nic, self._qemu.machine)
                # Where it sits, for a restore of a saved state (the same devices in the same ports).
                layout = specfile.load_layout(paths) or PortLayout()
                specfile.save_layout(paths, layout.nic_plugged(nic.mac, port))
            # spec.json is what a reboot, a restart or an adopting driver builds the guest from.
            specfile.save_spec(paths, replace(spec, nics=(*spec.nics, nic)))

    async def detach_interface(self, instance_id: str, mac: str) -> None:
        paths = self._existing(instance_id)
        mac = mac.lower()
        async with self._lock(instance_id):
            spec = specfile.load_spec(paths)
            if process.live_pid(paths, instance_id) is not None:
                async with self._qmp(paths, instance_id) as qmp:
                    await hotplug.unplug(qmp, mac, f"instance {instance_id}")
                layout = specfile.load_layout(paths)
                if layout is not None:
                    specfile.save_layout(paths, layout.nic_unplugged(mac))
            specfile.save_spec(paths, replace(spec, nics=tuple(n for n in spec.nics if n.mac != mac)))

    # ---------------------------------------------------------------- volumes
    # Attached volumes are VOLUME disks of spec.json (see the seam for what keeps them); ports.json
    # says where each sits in the running QEMU, for a restore of a saved state.

    async def attach_volume(self, instance_id: str, disk: Disk) -> str:
        serial = check_volume(disk)
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            pid = self._require_not_saved(paths, instance_id)
            spec = specfile.load_spec(paths)
            recorded = volumes.find(spec, serial)
            if recorded is not None and pid is None:
                return recorded.device
            item = recorded or replace(disk, boot_index=None, device=next_device_name(
                spec, volumes.attached(spec), rescued=paths.rescue_disk.exists()))
            require_source(item)
            if pid is not None:  # running or paused; a recorded one the guest lost (see seam) comes back
                try:
                    await self._plug(paths, instance_id, item)
                except BaseException:
                    if recorded is None and item.nbd is not None:  # its key goes with it
                        volumes.remove_key(paths.nbd_keys(VolumeIds.of(item).device))
                    raise
            if recorded is None:
                specfile.save_spec(paths, replace(spec, disks=(*spec.disks, item)))
            return item.device

    async def detach_volume(self, instance_id: str, serial: str) -> None:
        paths = self._paths(instance_id)
        if not paths.spec.exists():
            return
        async with self._lock(instance_id):
            if not paths.spec.exists():  # destroyed while we waited
                return
            spec = specfile.load_spec(paths)
            if volumes.find(spec, serial) is None:
                return
            if self._require_not_saved(paths, instance_id) is not None:
                async with self._qmp(paths, instance_id) as qmp:
                    await volumes.unplug(qmp, serial, instance_id)
                layout = specfile.load_layout(paths) or PortLayout()
                specfile.save_layout(paths, layout.unplugged(VolumeIds.for_serial(serial).device))
            specfile.save_spec(paths, volumes.without(spec, serial))
            volumes.remove_key(paths.nbd_keys(VolumeIds.for_serial(serial).device))

    async def extend_volume(self, instance_id: str, serial: str, size_bytes: int) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            if volumes.find(specfile.load_spec(paths), serial) is None:
                return
            if process.live_pid(paths, instance_id) is not None:
                async with self._qmp(paths, instance_id) as qmp:
                    await volumes.resize(qmp, serial, size_bytes, f"instance {instance_id}")

    async def attached_volumes(self, instance_id: str) -> tuple[Disk, ...]:
        return volumes.attached(specfile.load_spec(self._existing(instance_id)))

    async def _plug(self, paths: InstancePaths, instance_id: str, item: Disk) -> None:
        cached = self._volume_cached(item)
        assert cached.cache is not None
        key_dir = paths.nbd_keys(VolumeIds.of(item).device)
        if item.nbd is not None:
            volumes.write_key(key_dir, item.nbd)
        async with self._qmp(paths, instance_id) as qmp:
            port = await volumes.plug(qmp, cached, cached.cache, not item.remote and item.source.is_block_device(),
                                      self._qemu.machine, key_dir)
        layout = specfile.load_layout(paths) or PortLayout()  # none: started before volumes, no volume ports
        specfile.save_layout(paths, layout.plugged(VolumeIds.of(item).device, port))

    def _require_not_saved(self, paths: InstancePaths, instance_id: str) -> int | None:
        """The running guest's PID (None when it is off); Conflict when it is suspended.

        A saved state holds the guest's devices: a volume added or removed meanwhile would not match it.
        """
        pid = process.live_pid(paths, instance_id)
        if pid is None and paths.saved_state.exists():
            raise Conflict(detail=f"instance {instance_id} is suspended: resume it to attach or detach a volume")
        return pid

    # ---------------------------------------------------------------- live migration
    # intent: "incoming" on a destination until finish_incoming; "outgoing-running" or
    # "outgoing-paused" on a source from send until finish_outgoing or abort (what to resume).

    async def prepare_incoming(self, spec: InstanceSpec, listen_address: str, port: int,
                               disk_port: int | None = None) -> IncomingMigration:
        paths = self._paths(spec.id)
        async with self._lock(spec.id):
            if paths.dir.exists():
                raise Conflict(detail=f"instance {spec.id} already exists on this host")
            paths.dir.mkdir(parents=True, mode=0o700)
            try:
                specfile.save_spec(paths, spec)
                await self._create_local_disks(spec, paths)
                await self._start(spec, paths, incoming=True)
                specfile.write_intent(paths, "incoming")
                async with self._qmp(paths, spec.id) as qmp:
                    return await migration.listen(qmp, listen_address, port, disk_port or port + 1, spec.id)
            except BaseException:
                await self._remove(spec.id, paths)
                raise

    async def send(self, instance_id: str, target: IncomingMigration, mode: MigrationMode) -> MigrationStats:
        paths = self._existing(instance_id)
        if mode not in (await self.capabilities()).migration_modes:
            raise Conflict(detail=f"{mode} migration is not supported on this host "
                                  f"({await choose_accel(self._qemu)})")
        async with self._lock(instance_id):
            self._require_running(paths, instance_id)
            if specfile.read_intent(paths) != "running":
                raise Conflict(detail=f"instance {instance_id} is already in a migration")
            spec = specfile.load_spec(paths)
            if volumes.attached(spec):
                # The destination is built from the caller's spec, which lists no volumes: its
                # devices would not match the state sent (and local volumes do not move).
                raise Conflict(detail=f"instance {instance_id} has volumes attached; live migration "
                                      "of such a guest is not supported yet")
            layout = specfile.load_layout(paths)
            if layout is not None and layout.identity != PortLayout.fresh(spec).identity:
                raise Conflict(detail=f"instance {instance_id} was started before guests of memory templates had "
                                      "an identity port, which its destination would have; live migration of "
                                      "such a guest is not supported (stop and start it, or migrate it cold)")
            if layout is not None and not layout.rebuilt_from(spec):
                # Its destination, built from the spec, would put that NIC elsewhere and refuse the state.
                raise Conflict(detail=f"instance {instance_id} had an interface attached while it ran; "
                                      "live migration of such a guest is not supported yet (stop and start "
                                      "it, or migrate it cold)")
            self._sending.add(instance_id)
            try:
                async with self._qmp(paths, instance_id) as qmp:
                    was = (await qmp.execute("query-status"))["status"]
                    specfile.write_intent(paths, "outgoing-running" if was == "running" else "outgoing-paused")
                    try:
                        return await migration.send(qmp, target, mode, instance_id,
                                                    savestate.timeout_for(spec.memory_mib))
                    except BaseException:
                        specfile.write_intent(paths, "running")
                        raise
            finally:
                self._sending.discard(instance_id)

    async def finish_incoming(self, instance_id: str, resume: bool = True) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            if specfile.read_intent(paths) != "incoming":
                raise Conflict(detail=f"instance {instance_id} is not an incoming migration")
            self._require_running(paths, instance_id)
            spec = specfile.load_spec(paths)
            async with self._qmp(paths, instance_id) as qmp:
                status = await migration.wait_received(qmp, instance_id, savestate.timeout_for(spec.memory_mib))
                await qmp.execute("nbd-server-stop")
                if status == "paused":  # a paused migration (a precopy one runs by itself already)
                    if resume:  # a guest its user paused stays paused
                        await qmp.execute("cont")
                elif status not in ("running",):
                    raise DriverError(detail=f"migrating {instance_id}: the guest arrived {status}")
            specfile.write_intent(paths, "running")

    async def finish_outgoing(self, instance_id: str) -> None:
        paths = self._paths(instance_id)
        if not paths.spec.exists():
            return  # already cleaned up
        async with self._lock(instance_id):
            if not specfile.read_intent(paths).startswith("outgoing-"):
                raise Conflict(detail=f"instance {instance_id} was not migrated away; it is the only copy")
            await self._remove(instance_id, paths)
        self._locks.pop(instance_id, None)
        self._status_locks.pop(instance_id, None)

    async def abort_migration(self, instance_id: str) -> None:
        paths = self._paths(instance_id)
        if not paths.spec.exists():
            return
        if instance_id in self._sending:
            # send holds the guest's lock and main monitor: cancel through the status monitor, and
            # send itself rolls back (the guest runs again) before it lets go of the lock.
            with contextlib.suppress(DriverError):
                async with self._status_qmp(paths, instance_id) as qmp:
                    await migration.cancel(qmp)
        async with self._lock(instance_id):
            intent = specfile.read_intent(paths)
            if intent == "incoming":
                await self._remove(instance_id, paths)
                self._status_locks.pop(instance_id, None)
                return
            if not intent.startswith("outgoing-"):
                return
            if process.live_pid(paths, instance_id) is not None:
                async with self._qmp(paths, instance_id) as qmp:
                    status = (await qmp.execute("query-status"))["status"]
                    if status != "running" and intent == "outgoing-running":
                        await qmp.execute("cont")  # from postmigrate this re-activates the disks too
            specfile.write_intent(paths, "running")
        if not paths.spec.exists():
            self._locks.pop(instance_id, None)

    # ---------------------------------------------------------------- cold migration
    # The exports' pidfiles and the key live in the instance directory, so ``destroy`` (and a new
    # driver after a restart) finds them; ``_remove`` ends the exports before the files go.

    async def export_disks(self, instance_id: str, address: str, port: int, secret: str) -> list[str]:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            self._require_off(paths, instance_id)
            await self._unexport(paths)
            spec = specfile.load_spec(paths)
            key_dir = diskcopy.write_key(paths.dir / "export-key", secret)
            uris: list[str] = []
            try:
                for index, item in enumerate(spec.disks):
                    # Local overlays only: a volume is not the guest's to copy (it stays on its storage).
                    if item.kind == DiskKind.LOCAL_OVERLAY:
                        uris.append(await diskcopy.serve(self._qemu.qemu_nbd, paths.local_disk(index), address,
                                                         port + len(uris), index, key_dir,
                                                         paths.dir / f"export{index}.pid"))
            except BaseException:
                await self._unexport(paths)
                raise
            return uris

    async def unexport_disks(self, instance_id: str) -> None:
        paths = self._paths(instance_id)
        if paths.spec.exists():
            async with self._lock(instance_id):
                await self._unexport(paths)

    async def import_disks(self, spec: InstanceSpec, disks: Sequence[str], secret: str) -> int:
        paths = self._paths(spec.id)
        async with self._lock(spec.id):
            if paths.dir.exists():
                if specfile.read_intent(paths) != "importing":
                    raise Conflict(detail=f"instance {spec.id} already exists on this host")
                await self._remove(spec.id, paths)  # an import that was cut short: start over
            local = [(i, d) for i, d in enumerate(spec.disks) if d.kind == DiskKind.LOCAL_OVERLAY]
            if len(local) != len(disks):
                raise DriverError(detail=f"instance {spec.id} has {len(local)} local disks, "
                                         f"the source exports {len(disks)}")
            paths.dir.mkdir(parents=True, mode=0o700)
            try:
                specfile.write_intent(paths, "importing")
                key_dir = diskcopy.write_key(paths.dir / "import-key", secret)
                copied = 0
                for (index, item), source in zip(local, disks, strict=True):
                    copied += await diskcopy.pull(self._qemu.qemu_img, source, key_dir, item.source, item.format,
                                                  paths.local_disk(index), item.size_gib * disk.GIB)
                shutil.rmtree(key_dir, ignore_errors=True)
                specfile.save_spec(paths, spec)
                specfile.write_intent(paths, "shutoff")
                return copied
            except BaseException:
                await self._remove(spec.id, paths)
                raise

    async def _unexport(self, paths: InstancePaths) -> None:
        for pidfile in sorted(paths.dir.glob("export*.pid")):
            index = int(pidfile.stem.removeprefix("export") or 0)
            await diskcopy.stop(pidfile, paths.local_disk(index))
        shutil.rmtree(paths.dir / "export-key", ignore_errors=True)

    # ---------------------------------------------------------------- state

    async def console_output(self, instance_id: str, length: int | None = None) -> str:
        paths = self._existing(instance_id)
        return "\n".join(process.log_tail(paths.console, length or 0))

    async def serial_console(self, instance_id: str) -> str:
        paths = self._existing(instance_id)
        if process.live_pid(paths, instance_id) is None:
            raise Conflict(detail=f"instance {instance_id} is not running")
        if not paths.serial.is_socket():
            raise Conflict(detail=f"instance {instance_id} was started without a serial console socket; "
                                  "a hard reboot gives it one")
        return str(paths.serial)

    async def list_instances(self) -> list[InstanceInfo]:
        if not self._root.is_dir():
            return []
        found = []
        for entry in sorted(self._root.iterdir()):
            if _ID.match(entry.name) and (entry / "spec.json").exists():
                try:
                    found.append(await self.get_info(entry.name))
                except (NotFound, DriverError):
                    # Destroyed between the listing and the read (its spec is gone): not a guest any more.
                    # A spec that is still there but unreadable is a real fault, and says so.
                    if (entry / "spec.json").exists():
                        raise
        return found

    async def get_info(self, instance_id: str) -> InstanceInfo:
        paths = self._existing(instance_id)
        spec = specfile.load_spec(paths)  # replaced atomically: never half-written
        state, pid, reason = await self._power_state(paths, instance_id)
        intent = specfile.read_intent(paths)
        arriving = intent in ("incoming", "importing")  # a live migration's, or a cold move's disks
        migration = "incoming" if arriving else "outgoing" if intent.startswith("outgoing-") else None
        return InstanceInfo(id=instance_id, power_state=state, pid=pid, reason=reason,
                            memory_mib=spec.memory_mib, vcpus=spec.vcpus, migration=migration)

    async def rss_bytes(self, instance_id: str) -> int:
        pid = process.live_pid(self._existing(instance_id), instance_id)
        return 0 if pid is None else process.rss_bytes(pid)

    # ---------------------------------------------------------------- disks

    async def snapshot(self, instance_id: str, dest: Path) -> None:
        # The root disk only: attached volumes are not the guest's local disks (Nova snapshots them
        # through the volume service), and their sources are only ever read by QEMU here.
        paths = self._existing(instance_id)
        qemu_img = self._qemu.qemu_img
        async with self._lock(instance_id):
            if process.live_pid(paths, instance_id) is None:
                await disk.convert_standalone(qemu_img, paths.disk, dest)
                return
            # "stop" flushes QEMU's caches (qcow2 metadata too), so the file is consistent
            # while the vCPUs stand still; -U reads it despite QEMU's lock.
            async with self._qmp(paths, instance_id) as qmp:
                running = (await qmp.execute("query-status"))["status"] == "running"
                if running:
                    await qmp.execute("stop")
                try:
                    await disk.convert_standalone(qemu_img, paths.disk, dest, force_share=True)
                finally:
                    if running:
                        await qmp.execute("cont")

    async def resize(self, spec: InstanceSpec, new_spec: InstanceSpec) -> None:
        paths = self._existing(spec.id)
        async with self._lock(spec.id):
            self._require_off(paths, spec.id)
            await asyncio.to_thread(shutil.copy2, paths.disk, paths.disk_backup)
            shutil.copy2(paths.spec, paths.spec_backup)
            try:
                if new_spec.root.size_gib:
                    await disk.resize(self._qemu.qemu_img, paths.disk, new_spec.root.size_gib * disk.GIB)
            except BaseException:
                paths.disk_backup.replace(paths.disk)
                paths.spec_backup.unlink(missing_ok=True)
                raise
            specfile.save_spec(paths, self._keep_volumes(paths, new_spec))

    async def confirm_resize(self, instance_id: str) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            paths.disk_backup.unlink(missing_ok=True)
            paths.spec_backup.unlink(missing_ok=True)

    async def revert_resize(self, spec: InstanceSpec) -> None:
        paths = self._existing(spec.id)
        async with self._lock(spec.id):
            self._require_off(paths, spec.id)
            if paths.disk_backup.exists():
                paths.disk_backup.replace(paths.disk)
            paths.spec_backup.unlink(missing_ok=True)
            specfile.save_spec(paths, self._keep_volumes(paths, spec))  # the volumes attached now

    # ---------------------------------------------------------------- memory

    async def set_balloon_target(self, instance_id: str, target_bytes: int) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            pid = self._require_running(paths, instance_id)
            async with self._qmp(paths, instance_id) as qmp:
                key = templatestore.template_of(pid, self.templates.root)
                if key is not None and int(target_bytes) < int((await qmp.execute("query-balloon"))["actual"]):
                    # QEMU 7.2 discards a ballooned page by punching a hole into the RAM block's
                    # file, even a private mapping's: the template under every other clone.
                    raise Conflict(detail=f"instance {instance_id} started from memory template {key}: "
                                   "inflating its balloon would punch holes into the template's shared RAM file")
                await qmp.execute("balloon", {"value": int(target_bytes)})

    async def template_memory(self) -> dict[str, int]:
        return await asyncio.to_thread(self._template_memory)

    def _template_memory(self) -> dict[str, int]:
        """Each template's RAM file in the page cache, by key; retired templates no clone maps any
        more are removed first (a memory manager pass is the store's clock for that)."""
        self.templates.prune_retired()
        resident: dict[str, int] = {}
        try:
            for key, ram in self.templates.ram_files():
                with contextlib.suppress(FileNotFoundError):  # dropped or pruned meanwhile
                    resident[key] = resident.get(key, 0) + pagecache.resident_bytes(ram)
        except OSError as exc:
            raise DriverError(detail=f"measuring the memory templates' page cache: {exc}") from exc
        return resident

    async def balloon_stats(self, instance_id: str) -> dict[str, Any]:
        paths = self._existing(instance_id)
        device = "/machine/peripheral/balloon0"
        pid = self._require_running(paths, instance_id)
        key = templatestore.template_of(pid, self.templates.root)
        async with self._status_qmp(paths, instance_id) as qmp:
            actual = (await qmp.execute("query-balloon"))["actual"]
            polling = {"path": device, "property": "guest-stats-polling-interval"}
            if not await qmp.execute("qom-get", polling):
                await qmp.execute("qom-set", {**polling, "value": 2})
            stats = await qmp.execute("qom-get", {"path": device, "property": "guest-stats"})
            # Not for a clone: the page sampler reads sampled pages of guest RAM, which for a clone is
            # the template's file, where reading a page nobody wrote puts a zeroed page into the page
            # cache, with the file's read-around (8 MiB on a virtio disk).  One window took a 512 MiB
            # template from the 152 MiB its guest wrote to all 512 MiB, charged to the clone's cgroup.
            measured = await _dirty_rate(qmp) if key is None else None
        now = asyncio.get_running_loop().time()
        if measured is not None:
            self._dirty_rates[instance_id] = (measured, now)
        last = self._dirty_rates.get(instance_id)
        dirty_rate = last[0] if last is not None and now - last[1] <= DIRTY_RATE_FRESH_S else None
        return {"actual": int(actual), "stats": dict(stats.get("stats", {})),
                "last_update": int(stats.get("last-update", 0)), "dirty_rate": dirty_rate,
                "template": key}

    # ---------------------------------------------------------------- helpers

    def _paths(self, instance_id: str) -> InstancePaths:
        if not _ID.match(instance_id):
            raise ValidationFailed(detail=f"instance id {instance_id!r} is not a plain name")
        # /run is a tmpfs: after a host reboot the directory is gone (and so are the old guests).
        self._socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        paths = InstancePaths(self._root.resolve() / instance_id, self._socket_dir)
        if len(str(paths.status_qmp)) > MAX_SOCKET_PATH:
            raise DriverMisconfigured(
                detail=f"QMP socket path {paths.status_qmp} is longer than {MAX_SOCKET_PATH} bytes; "
                "choose a shorter compute.instances_dir")
        return paths

    def _existing(self, instance_id: str) -> InstancePaths:
        paths = self._paths(instance_id)
        if not paths.spec.exists():
            raise NotFound(kind="instance", id=instance_id)
        return paths

    def _lock(self, instance_id: str) -> asyncio.Lock:
        return self._locks.setdefault(instance_id, asyncio.Lock())

    def _qmp(self, paths: InstancePaths, instance_id: str) -> AbstractAsyncContextManager[QmpSession]:
        return open_session(paths.qmp, f"instance {instance_id}")

    @contextlib.asynccontextmanager
    async def _status_qmp(self, paths: InstancePaths, instance_id: str) -> AsyncIterator[QmpSession]:
        """A session on the status monitor, for reads only; never behind the per-guest operation lock.

        A guest started before there was a status monitor has only the main one: its reads share it
        (and may wait for an operation's session) until its next start.
        """
        socket = paths.status_qmp if paths.status_qmp.is_socket() else paths.qmp
        async with self._status_locks.setdefault(instance_id, asyncio.Lock()), \
                open_session(socket, f"instance {instance_id}") as qmp:
            yield qmp

    def _require_running(self, paths: InstancePaths, instance_id: str) -> int:
        pid = process.live_pid(paths, instance_id)
        if pid is None:
            raise Conflict(detail=f"instance {instance_id} is not running")
        return pid

    def _require_off(self, paths: InstancePaths, instance_id: str) -> None:
        if process.live_pid(paths, instance_id) is not None or paths.saved_state.exists():
            raise Conflict(detail=f"instance {instance_id} must be powered off")

    async def _command(self, instance_id: str, command: str, args: dict[str, object] | None = None) -> None:
        paths = self._existing(instance_id)
        async with self._lock(instance_id):
            self._require_running(paths, instance_id)
            async with self._qmp(paths, instance_id) as qmp:
                await qmp.execute(command, args)

    def _disk_cache(self, directory: Path) -> str:
        """``cache=`` for disks under ``directory``; the O_DIRECT probe runs once per file system."""
        key = directory.parent
        if key not in self._cache_modes:
            self._cache_modes[key] = disk.cache_mode(self._qemu.disk_cache, directory)
        return self._cache_modes[key]

    def _volume_cached(self, item: Disk) -> Disk:
        """A volume with its ``cache`` resolved on its source (other disks as they are)."""
        if item.kind != DiskKind.VOLUME or item.cache is not None:
            return item
        if item.remote:  # nothing on this host to probe: "auto" is O_DIRECT's "none"
            return replace(item, cache=self._qemu.disk_cache if self._qemu.disk_cache in disk.DISK_CACHE_MODES
                           else "none")
        return replace(item, cache=disk.volume_cache_mode(self._qemu.disk_cache, item.source))

    def _keep_volumes(self, paths: InstancePaths, spec: InstanceSpec) -> InstanceSpec:
        """A caller's ``spec`` with the volumes the guest has attached (the caller may not list them)."""
        return volumes.keep_attached(spec, specfile.load_spec(paths))

    async def _start(self, spec: InstanceSpec, paths: InstancePaths, *, incoming: bool = False) -> int:
        rescued = paths.rescue_disk.exists()
        # A restored state needs the ports and devices it was saved with; anything else starts afresh.
        layout = specfile.load_layout(paths) if incoming else None
        if not incoming and (renamed := volumes.named(spec, rescued)) != spec:
            spec = renamed
            specfile.save_spec(paths, spec)
        for item in volumes.attached(spec):
            require_source(item)
            if item.nbd is not None:  # QEMU reads its key file as it starts
                volumes.write_key(paths.nbd_keys(VolumeIds.of(item).device), item.nbd)
        if spec.config_drive is not None:
            await build_iso(spec.config_drive, paths.config_iso, genisoimage=self._genisoimage)
        layout = layout or PortLayout.fresh(spec)
        argv = build_argv(replace(spec, disks=tuple(map(self._volume_cached, spec.disks))), paths, self._qemu,
                          await choose_accel(self._qemu), incoming=incoming, disk_cache=self._disk_cache(paths.dir),
                          rescue_disk=paths.rescue_disk if rescued else None, layout=layout,
                          host_devices={d.source for d in volumes.attached(spec)
                                        if not d.remote and d.source.is_block_device()})
        specfile.save_layout(paths, layout)
        specfile.write_intent(paths, "running")
        pid = await self._launch(spec, paths, argv)
        await self._poll_balloon(spec, paths)
        return pid

    async def _launch(self, spec: InstanceSpec, paths: InstancePaths, argv: list[str]) -> int:
        """Start QEMU with ``argv`` in the guest's cgroup and wait for its monitor."""
        pid = await process.launch(argv, paths, spec.id, disable_thp=thp_disabled(spec),
                                   cgroup_procs=self._cgroup_procs(spec.id))
        self._place_in_cgroup(spec.id, pid)  # if it could not join before exec
        try:
            await wait_for_qmp(paths.qmp, f"instance {spec.id}",
                               asyncio.get_running_loop().time() + QMP_READY_TIMEOUT)
        except DriverError as exc:
            await process.kill(pid, spec.id)
            raise DriverError(detail=f"{exc.text}; {process.last_words(paths)}") from exc
        return pid

    async def _poll_balloon(self, spec: InstanceSpec, paths: InstancePaths) -> None:
        if spec.balloon and self._stats_interval > 0:
            # The guest reports balloon stats only when polled; the memory manager needs them.
            try:
                async with self._qmp(paths, spec.id) as qmp:
                    await qmp.execute("qom-set", {"path": "/machine/peripheral/balloon0",
                                                  "property": "guest-stats-polling-interval",
                                                  "value": self._stats_interval})
            except DriverError as exc:
                log.warning("instance %s: balloon stats polling not enabled: %s", spec.id, exc.text)

    async def _create_local_disks(self, spec: InstanceSpec, paths: InstancePaths) -> None:
        """An overlay for each local disk (volumes exist already and are not the driver's)."""
        for index, item in enumerate(spec.disks):
            if item.kind == DiskKind.LOCAL_OVERLAY:
                await disk.create_overlay(self._qemu.qemu_img, item.source, item.format,
                                          paths.local_disk(index), item.size_gib * disk.GIB)

    def _cgroup_procs(self, instance_id: str) -> Path | None:
        """The guest's cgroup's ``cgroup.procs``, created now, for QEMU to start in (None: no cgroup)."""
        if self._cgroups is None:
            return None
        try:
            return self._cgroups.create(cgroups.leaf_name(self._cgroup_parent, instance_id)) / "cgroup.procs"
        except DriverError as exc:
            log.warning("instance %s runs without its memory cgroup: %s", instance_id, exc.text)
            return None

    def _place_in_cgroup(self, instance_id: str, pid: int) -> None:
        if self._cgroups is None:
            return
        try:
            self._cgroups.move(cgroups.leaf_name(self._cgroup_parent, instance_id), pid)
        except DriverError as exc:
            log.warning("instance %s runs without its memory cgroup: %s", instance_id, exc.text)

    def _prune_cgroups(self) -> None:
        """Remove empty VM cgroups left by guests that died without ``destroy`` (busy ones stay)."""
        if self._cgroups is None or not self._cgroups.exists(self._cgroup_parent):
            return
        for entry in self._cgroups.path(self._cgroup_parent).iterdir():
            if entry.is_dir() and _ID.match(entry.name) and not self._cgroups.pids(
                    cgroups.leaf_name(self._cgroup_parent, entry.name)):
                self._cgroups.remove(cgroups.leaf_name(self._cgroup_parent, entry.name), timeout=0.0)

    def _remove_cgroup(self, instance_id: str) -> None:
        if self._cgroups is not None:
            self._cgroups.remove(cgroups.leaf_name(self._cgroup_parent, instance_id))

    async def _restore(self, spec: InstanceSpec, paths: InstancePaths) -> None:
        pid = await self._start(spec, paths, incoming=True)
        try:
            async with self._qmp(paths, spec.id) as qmp:
                timeout = savestate.timeout_for(spec.memory_mib)
                await savestate.restore(qmp, paths.saved_state, spec.id, timeout)
        except BaseException:
            await process.kill(pid, spec.id)
            specfile.write_intent(paths, "suspended")
            raise
        paths.saved_state.unlink(missing_ok=True)

    async def _graceful_stop(self, pid: int, paths: InstancePaths, instance_id: str, timeout: float) -> None:
        try:
            async with self._qmp(paths, instance_id) as qmp:
                await qmp.execute("system_powerdown")
        except DriverError:
            timeout = 0.0  # QMP is gone or refuses: only a hard stop is left
        if await process.wait_gone(pid, instance_id, timeout):
            return
        try:
            async with self._qmp(paths, instance_id) as qmp:
                await qmp.execute("quit")
        except DriverError:
            pass
        if not await process.wait_gone(pid, instance_id, 5.0):
            await process.kill(pid, instance_id)

    async def _remove(self, instance_id: str, paths: InstancePaths) -> None:
        # Only the instance directory goes: an attached volume's source lives elsewhere and is
        # forgotten with spec.json, never removed.
        pid = process.read_pid(paths)
        if pid is not None:
            await process.kill(pid, instance_id)
        if paths.dir.is_dir():
            await self._unexport(paths)
        await asyncio.to_thread(self._remove_cgroup, instance_id)
        await asyncio.to_thread(shutil.rmtree, paths.dir, True)
        paths.qmp.unlink(missing_ok=True)
        paths.status_qmp.unlink(missing_ok=True)
        paths.serial.unlink(missing_ok=True)
        paths.identity.unlink(missing_ok=True)

    async def _power_state(
        self, paths: InstancePaths, instance_id: str
    ) -> tuple[PowerState, int | None, str | None]:
        pid = process.live_pid(paths, instance_id)
        if pid is not None:
            try:
                async with self._status_qmp(paths, instance_id) as qmp:
                    status = (await qmp.execute("query-status"))["status"]
            except DriverUnavailable as exc:
                return PowerState.NOSTATE, pid, exc.text
            if status == "running":
                return PowerState.RUNNING, pid, None
            if status in _CRASHED:
                return PowerState.CRASHED, pid, f"QEMU reports {status}"
            if status == "shutdown":
                return PowerState.SHUTDOWN, pid, "guest shut down; QEMU still exiting"
            return PowerState.PAUSED, pid, None if status == "paused" else f"QEMU reports {status}"
        intent = specfile.read_intent(paths)
        if intent == "suspended" and paths.saved_state.exists():
            return PowerState.SUSPENDED, None, "state saved to disk"
        if intent == "shutoff":
            return PowerState.SHUTDOWN, None, "powered off"
        stale = process.read_pid(paths)
        if stale is not None:  # QEMU removes its pidfile on any orderly exit
            return PowerState.CRASHED, None, (
                f"QEMU process {stale} ended without an orderly exit (killed or crashed); "
                + process.last_words(paths, 2))
        signals = [line for line in process.log_tail(paths.qemu_log, 3) if "terminating on signal" in line]
        return PowerState.SHUTDOWN, None, signals[-1] if signals else "guest powered itself off"


DIRTY_WINDOW_S = 1  # QEMU's dirty-rate sampling window, seconds
DIRTY_RATE_FRESH_S = 30.0  # a measured rate older than this is not reported (measuring stopped working)


async def _dirty_rate(qmp: QmpSession) -> int | None:
    """The bytes per second the guest dirtied in the last sampling window; then the next window starts.

    QEMU's ``calc-dirty-rate`` (page sampling, its default mode) hashes 512 sampled pages per GiB
    at a window's start and end: a few hundred microseconds of work, under TCG as under KVM, and
    no dirty logging that would slow the guest.  The memory balancer weighs a move's cost with it
    (a guest that dirties fast copies longer).  Each collection reads the window the previous one
    started, so nobody waits for it.  None until one window ended, or when QEMU refuses (an older
    QEMU, or a measurement it will not run during a migration).
    """
    try:
        got = await qmp.execute("query-dirty-rate")
        if got.get("status") != "measuring":
            await qmp.execute("calc-dirty-rate", {"calc-time": DIRTY_WINDOW_S})
    except DriverError:
        return None
    return int(got["dirty-rate"]) << 20 if got.get("status") == "measured" and "dirty-rate" in got else None
