"""Build a guest's QEMU argv: a pure function of the spec, the paths, the config and the accel."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yunstack.compute.driver import Disk, DiskKind, InstanceSpec
from yunstack.compute.qemu.disk import DISK_CACHE_MODES
from yunstack.config import QemuConfig

# Longest path a unix socket address may hold (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107

# The root disk's block node: live migration exports it over NBD on the destination.
ROOT_NODE = "root0"
# Empty PCIe root ports for hot-plugged NICs (q35 only; the pc machine hot-plugs on its root bus).
HOTPLUG_PORTS = 4
HOTPLUG_PREFIX = "hotplug"
# Seconds a guest's I/O on a volume over NBD waits for a lost connection to come back before it
# fails: a storage daemon killed and restarted within them completes it, data intact (docs/spikes/nbd).
NBD_RECONNECT_DELAY = 15
# The memory backend of a guest whose RAM is a template file (its RAM block's name in the state).
TEMPLATE_RAM_ID = "pc.ram"
# Root ports beyond HOTPLUG_PORTS of a guest laid out for memory templates: its config drive sits
# behind the first, its NICs behind the others (docs/explanation/memory-templates.md).
TEMPLATE_PORTS = 4
# The virtio-serial port over which a clone of a memory template is given its identity (the tiny
# image's yunstack-hotplug reads it; docs/explanation/memory-templates.md).
IDENTITY_PORT = "org.yunstack.identity"
IDENTITY_CHARDEV = "identity0"
# The instance directory's marker of a start from a memory template not finished (InstancePaths.clone_pending).
CLONE_PENDING = "clone-pending"


def laid_out_for_templates(spec: InstanceSpec) -> bool:
    """Whether the guest's config drive and NICs sit behind root ports, as a memory template's clone
    plugs them in after it resumes.

    A function of what the server asked for (its flavor's or image's ``yunstack:memory_template``,
    fixed at its create), not of whether it may start from a template now (page sharing can be
    turned off for its project later): so the guest has the same devices whether it booted or was
    started from a template, and a migration's destination or a restore, built from the spec,
    builds them alike.  NICs beyond ``TEMPLATE_PORTS - 1`` sit on the root bus.
    """
    return spec.memory.template and spec.balloon


def is_q35(machine: str) -> bool:
    """True for the q35 machine, whose root bus cannot hot-plug (devices that may leave need a root port)."""
    return machine.split(",")[0].startswith(("q35", "pc-q35"))


def thp_disabled(spec: InstanceSpec) -> bool:
    """True when the spec's memory backing turns THP off (QEMU 7.2 madvises guest RAM MADV_HUGEPAGE
    unconditionally and has no property to stop it, so process.launch sets PR_SET_THP_DISABLE)."""
    return not spec.memory.thp


@dataclass(frozen=True)
class InstancePaths:
    """The files of one instance, inside ``config.instances_path / <id>``, and its QMP socket.

    A unix socket path may not exceed 107 bytes, so the socket lives in a short per-installation
    run directory (``socket_dir``) when one is given, named after the instance.
    """

    dir: Path
    socket_dir: Path | None = None

    @property
    def disk(self) -> Path:
        """The root disk's overlay."""
        return self.dir / "disk.qcow2"

    def local_disk(self, index: int) -> Path:
        """The overlay of the guest's ``index``-th disk (a local overlay); 0 is the root disk."""
        return self.disk if index == 0 else self.dir / f"disk{index}.qcow2"

    @property
    def disk_backup(self) -> Path:
        return self.dir / "disk.qcow2.resize-backup"

    @property
    def rescue_disk(self) -> Path:
        """While it exists the guest is rescued: it boots from it, its own disk attached second."""
        return self.dir / "disk.rescue.qcow2"

    @property
    def config_iso(self) -> Path:
        return self.dir / "config.iso"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    def _socket(self, suffix: str, name: str) -> Path:
        """A unix socket of the instance: ``<socket_dir>/<id>.<suffix>``, or ``name`` in its directory."""
        if self.socket_dir is not None:
            return self.socket_dir / f"{self.dir.name}.{suffix}"
        return self.dir / name

    @property
    def serial(self) -> Path:
        """The serial console's unix socket (the interactive console); as long as the QMP path."""
        return self._socket("ser", "ser.sock")

    @property
    def identity(self) -> Path:
        """The identity port's unix socket (``IDENTITY_PORT``), of a guest laid out for memory templates."""
        return self._socket("id", "identity.sock")

    @property
    def clone_pending(self) -> Path:
        """While it exists, the guest is being started from a memory template and has not taken its
        identity yet: an agent that died meanwhile undoes it at its start."""
        return self.dir / CLONE_PENDING

    @property
    def qemu_log(self) -> Path:
        return self.dir / "qemu.log"

    @property
    def qmp(self) -> Path:
        return self._socket("qmp", "qmp.sock")

    @property
    def status_qmp(self) -> Path:
        """A second QMP monitor for status reads only, so they never queue behind an operation's session.

        QEMU serves one client per monitor at a time: a snapshot or a migration holds the main one
        for seconds, and a ``query-status`` on the same socket would wait for it.
        """
        return self._socket("sqmp", "qmp-status.sock")

    @property
    def pidfile(self) -> Path:
        return self.dir / "qemu.pid"

    @property
    def spec(self) -> Path:
        return self.dir / "spec.json"

    @property
    def spec_backup(self) -> Path:
        return self.dir / "spec.json.resize-backup"

    @property
    def saved_state(self) -> Path:
        return self.dir / "managed-save.state"

    @property
    def intent(self) -> Path:
        return self.dir / "intent"

    def nbd_keys(self, device: str) -> Path:
        """The directory of the TLS-PSK key (``keys.psk``) of the volume over NBD whose device is ``device``."""
        return self.dir / "nbd" / device

    @property
    def ports(self) -> Path:
        """The running QEMU's root ports and which volume sits behind which (``PortLayout``)."""
        return self.dir / "ports.json"


def drive_id(index: int) -> str:
    """The ``-drive`` id of the guest's ``index``-th disk (``disk0`` is the root)."""
    return f"disk{index}"


def node_name(index: int) -> str:
    """The block node of the guest's ``index``-th disk (live migration exports it over NBD)."""
    return ROOT_NODE if index == 0 else f"node{index}"


def disk_args(index: int, disk: Disk, paths: InstancePaths, disk_cache: str, boot_shift: int = 0) -> list[str]:
    """``-drive`` and ``-device`` for one disk; a local overlay lives in the instance directory."""
    if disk.bus != "virtio":
        raise ValueError(f"disk bus {disk.bus!r} is not supported (virtio only)")
    cache = disk.cache or disk_cache
    if cache not in DISK_CACHE_MODES:
        raise ValueError(f"disk cache must be one of {', '.join(DISK_CACHE_MODES)}, not {cache!r}")
    if disk.kind == DiskKind.LOCAL_OVERLAY:
        file, fmt = paths.local_disk(index), "qcow2"
    else:
        file, fmt = disk.source, disk.format
    drive = f"file={file},if=none,id={drive_id(index)},node-name={node_name(index)},format={fmt}," \
            f"discard=unmap,cache={cache}" + (",readonly=on" if disk.read_only else "")
    device = f"virtio-blk-pci,drive={drive_id(index)},id=virtio-{drive_id(index)}"
    if disk.boot_index is not None:
        device += f",bootindex={disk.boot_index + boot_shift}"
    return ["-drive", drive, "-device", device]


@dataclass(frozen=True)
class VolumeIds:
    """The QEMU names of one volume: its device, its two block nodes (format on top of file; over
    NBD raw on top of the nbd node) and, over NBD, its TLS credentials object.

    Derived from the serial (or, without one, the source path) through a hash: node names may not
    exceed 31 bytes and must start with a letter, and a volume id is 36 characters.
    """

    device: str
    node: str
    file: str
    tls: str

    @classmethod
    def of(cls, disk: Disk) -> VolumeIds:
        return cls.for_serial(disk.serial if disk.serial is not None else str(disk.source))

    @classmethod
    def for_serial(cls, serial: str) -> VolumeIds:
        key = "vol-" + hashlib.sha256(serial.encode()).hexdigest()[:16]
        return cls(device=key, node=f"{key}-fmt", file=f"{key}-file", tls=f"{key}-tls")


@dataclass(frozen=True)
class PortLayout:
    """A q35 QEMU's hot-plug root ports (``hotplug0`` ...) and the port each volume sits behind.

    A fresh start puts volume ``i`` behind port ``HOTPLUG_PORTS + i``, so the first ``HOTPLUG_PORTS``
    stay free for hot-plugs; a hot-plugged volume takes whichever port is free; a detached one
    frees its port.  A guest laid out for memory templates (``laid_out_for_templates``) has
    ``TEMPLATE_PORTS`` more before its volumes: its config drive behind the first (``config``), its
    NICs behind the next ones (``nics``), and the identity port (``identity``).  A NIC plugged in
    later is recorded in ``nics`` too.  Restoring a saved state needs the very devices and ports
    that were saved, so the driver records the layout of the QEMU that runs (``InstancePaths.ports``).
    """

    ports: int = HOTPLUG_PORTS
    volumes: Mapping[str, str] = field(default_factory=dict)  # VolumeIds.device -> root port id
    nics: Mapping[str, str] = field(default_factory=dict)  # MAC -> root port id
    config: str | None = None  # the config drive's root port; None: on the root bus
    # The identity port (a virtio-serial device): a guest laid out for templates has one, unless it
    # was started before yunstack gave it one (2026-12-06); its saved state has none then.
    identity: bool = False

    @classmethod
    def fresh(cls, spec: InstanceSpec) -> PortLayout:
        devices = [VolumeIds.of(d).device for d in spec.disks if d.kind == DiskKind.VOLUME]
        first, nics, config = HOTPLUG_PORTS, {}, None
        if laid_out_for_templates(spec):
            first = HOTPLUG_PORTS + TEMPLATE_PORTS
            config = f"{HOTPLUG_PREFIX}{HOTPLUG_PORTS}"
            nics = {n.mac: f"{HOTPLUG_PREFIX}{HOTPLUG_PORTS + 1 + i}"
                    for i, n in enumerate(spec.nics[:TEMPLATE_PORTS - 1])}
        return cls(first + len(devices), {device: f"{HOTPLUG_PREFIX}{first + i}" for i, device in enumerate(devices)},
                   nics, config, identity=laid_out_for_templates(spec))

    def plugged(self, device: str, port: str | None) -> PortLayout:
        return self if port is None else replace(self, volumes={**self.volumes, device: port})

    def unplugged(self, device: str) -> PortLayout:
        return replace(self, volumes={d: p for d, p in self.volumes.items() if d != device})

    def rebuilt_from(self, spec: InstanceSpec) -> bool:
        """Whether a QEMU built from ``spec`` alone (a migration's destination) has this layout's
        NICs and config drive where this one has them: not after an interface was plugged in."""
        fresh = PortLayout.fresh(spec)
        return (dict(self.nics), self.config, self.identity) == (dict(fresh.nics), fresh.config, fresh.identity)

    def nic_plugged(self, mac: str, port: str | None) -> PortLayout:
        return self if port is None else replace(self, nics={**self.nics, mac: port})

    def nic_unplugged(self, mac: str) -> PortLayout:
        return replace(self, nics={m: p for m, p in self.nics.items() if m != mac})


def volume_nodes(disk: Disk, cache: str, host_device: bool) -> list[dict[str, Any]]:
    """The ``blockdev-add`` arguments of a volume: the file (or block device), then the format on it.

    ``cache`` is a ``-drive cache=`` mode; for nodes it is O_DIRECT or not (``none`` is), and the
    write cache is the device's (``volume_device``), as ``-drive`` splits it.
    """
    ids = VolumeIds.of(disk)
    common = {"cache": {"direct": cache == "none", "no-flush": False}, "discard": "unmap", "read-only": disk.read_only}
    if disk.nbd is not None:
        nbd = disk.nbd
        return [{"driver": "nbd", "node-name": ids.file, "export": nbd.export, "tls-creds": ids.tls,
                 "server": {"type": "inet", "host": nbd.host, "port": str(nbd.port)},
                 "reconnect-delay": NBD_RECONNECT_DELAY, **common},
                {"driver": "raw", "node-name": ids.node, "file": ids.file, **common}]
    if disk.rbd is not None:
        rbd = disk.rbd
        options = {k: v for k, v in (("namespace", rbd.namespace), ("conf", rbd.conf), ("user", rbd.user)) if v}
        return [{"driver": "rbd", "node-name": ids.file, "pool": rbd.pool, "image": rbd.image, **options, **common},
                {"driver": "raw", "node-name": ids.node, "file": ids.file, **common}]
    return [{"driver": "host_device" if host_device else "file", "node-name": ids.file,
             "filename": str(disk.source), **common},
            {"driver": disk.format, "node-name": ids.node, "file": ids.file, **common}]


def tls_object(disk: Disk, key_dir: Path) -> dict[str, str]:
    """The ``object-add`` arguments of a volume's TLS-PSK client credentials (its key file in ``key_dir``)."""
    if disk.nbd is None:
        raise ValueError(f"volume {disk.serial} is not reached over NBD: it has no TLS credentials")
    return {"qom-type": "tls-creds-psk", "id": VolumeIds.of(disk).tls, "endpoint": "client",
            "dir": str(key_dir), "username": disk.nbd.psk_identity}


def volume_device(disk: Disk, cache: str) -> dict[str, str]:
    """The ``device_add`` arguments of a volume's virtio-blk device (no ``bus``: the caller places it)."""
    ids = VolumeIds.of(disk)
    props = {"driver": "virtio-blk-pci", "drive": ids.node, "id": ids.device,
             "write-cache": "off" if cache == "writethrough" else "on"}
    if disk.serial is not None:
        props["serial"] = disk.serial
    return props


def volume_args(disk: Disk, cache: str, host_device: bool, bus: str | None, boot_index: int | None,
                key_dir: Path | None = None) -> list[str]:
    """``-blockdev`` (JSON: a path may hold a comma) twice and ``-device`` for one volume; over NBD
    first ``-object`` with its TLS credentials, whose key file is in ``key_dir``."""
    if disk.format not in ("qcow2", "raw"):
        raise ValueError(f"volume format must be qcow2 or raw, not {disk.format!r}")
    if cache not in DISK_CACHE_MODES:
        raise ValueError(f"disk cache must be one of {', '.join(DISK_CACHE_MODES)}, not {cache!r}")
    argv = []
    if disk.nbd is not None:
        if key_dir is None:
            raise ValueError(f"volume {disk.serial} over NBD needs the directory of its key")
        argv += ["-object", json.dumps(tls_object(disk, key_dir), separators=(",", ":"))]
    for node in volume_nodes(disk, cache, host_device):
        argv += ["-blockdev", json.dumps(node, separators=(",", ":"))]
    props = volume_device(disk, cache)
    device = ",".join(f"{k}={v}" for k, v in props.items() if k != "driver")
    device = f"{props['driver']},{device}" + (f",bus={bus}" if bus else "")
    if boot_index is not None:
        device += f",bootindex={boot_index}"
    return [*argv, "-device", device]


def name_arg(instance_id: str) -> str:
    """The ``-name`` value; ``process.is_guest_process`` looks for it in /proc/PID/cmdline."""
    return f"guest={instance_id},debug-threads=on"


def build_argv(
    spec: InstanceSpec,
    paths: InstancePaths,
    qemu: QemuConfig,
    accel: str,
    *,
    incoming: bool = False,
    disk_cache: str = "writeback",
    rescue_disk: Path | None = None,
    layout: PortLayout | None = None,
    host_devices: Collection[Path] = (),
    template_ram: Path | None = None,
    template_shared: bool = False,
    dead_end_nics: bool = False,
) -> list[str]:
    """Return the argv that starts ``spec`` as a daemonized QEMU process.

    ``accel`` is ``"kvm"`` or ``"tcg"``.  With ``incoming`` QEMU waits for a saved state
    (``migrate-incoming`` over QMP) instead of booting.  Paths must be absolute: a daemonized
    QEMU changes its directory to ``/``.  ``disk_cache`` is QEMU's ``cache=`` of disks that do not
    choose their own (``none`` = O_DIRECT: guest data is not cached a second time in host memory).  With
    ``rescue_disk`` the guest boots from that disk (the first virtio disk, ``vda``) and its own
    root disk comes second (``vdb``), as Nova's libvirt rescue lays them out.

    Volumes (``DiskKind.VOLUME`` disks) come after the config drive as ``-blockdev`` nodes and a
    virtio-blk device with the volume's serial; their cache is their own ``cache`` or ``disk_cache``
    (the driver resolves ``auto`` per volume), and ``host_devices`` names the sources that are block
    devices.  On q35 each sits behind a root port of ``layout`` (``PortLayout.fresh`` when None), so
    it can be unplugged like a hot-plugged one.  A volume over NBD reads its TLS-PSK key from
    ``paths.nbd_keys``, which the caller fills before QEMU starts.

    With ``template_ram`` the guest's RAM is that file (a memory template,
    docs/explanation/memory-templates.md): mapped shared when ``template_shared`` (the template
    guest, whose RAM the file keeps), else private, copy on write (a guest started from it).  The
    balloon then has no free page reporting: QEMU 7.2 discards a reported page by punching a hole
    into the file even through a private mapping, which would change every other guest's template.
    A guest laid out for templates has the identity port (``IDENTITY_PORT``, on ``paths.identity``).
    With ``dead_end_nics`` (the template guest) each NIC's backend is a hub of its own that leads
    nowhere, so the template never sends a frame; a clone has the same NICs on its taps.
    """
    if disk_cache not in DISK_CACHE_MODES:
        raise ValueError(f"disk_cache must be one of {', '.join(DISK_CACHE_MODES)}, not {disk_cache!r}")
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"accel must be 'kvm' or 'tcg', not {accel!r}")
    accel_arg = "kvm" if accel == "kvm" else f"tcg,tb-size={qemu.tcg_tb_size_mib}"
    machine = qemu.machine
    if not spec.memory.page_sharing:
        machine += ",mem-merge=off"
    if template_ram is not None:
        machine += f",memory-backend={TEMPLATE_RAM_ID}"
    argv = [
        qemu.binary,
        "-name", name_arg(spec.id),
        "-machine", machine,
        "-accel", accel_arg,
        "-cpu", "host" if accel == "kvm" else "max",
        "-m", str(spec.memory_mib),
        "-smp", str(spec.vcpus),
        "-uuid", spec.id,
        "-nodefaults", "-no-user-config", "-display", "none",
        "-daemonize", "-pidfile", str(paths.pidfile),
        # -D keeps QEMU's stderr (our qemu.log) open after it daemonizes, so runtime errors
        # such as "terminating on signal" land in the log.
        "-D", str(paths.dir / "qemu-debug.log"),
        "-qmp", f"unix:{paths.qmp},server=on,wait=off",
        "-qmp", f"unix:{paths.status_qmp},server=on,wait=off",
        # The serial port is a socket for the interactive console (one client at a time; output is
        # dropped while none is connected) and, through logfile=, still every byte in console.log.
        "-chardev", f"socket,id=console0,path={paths.serial},server=on,wait=off,logfile={paths.console},"
                    "logappend=on",
        "-device", "isa-serial,chardev=console0",
    ]
    if rescue_disk is not None:
        argv += [
            "-drive", f"file={rescue_disk},if=none,id=rescue0,format=qcow2,discard=unmap,cache={disk_cache}",
            "-device", "virtio-blk-pci,drive=rescue0,id=virtio-rescue0,bootindex=1",
        ]
    boot_shift = 1 if rescue_disk is not None else 0
    for index, disk in enumerate(spec.disks):
        if disk.kind != DiskKind.VOLUME:
            argv += disk_args(index, disk, paths, disk_cache, boot_shift=boot_shift)
    q35 = is_q35(qemu.machine)
    layout = layout or PortLayout.fresh(spec)
    # Devices behind root ports come after the ports (QEMU needs a bus before what sits on it);
    # those on the root bus keep their place, so their PCI slots do not move.
    behind_ports: list[str] = []
    if spec.config_drive is not None:
        argv += ["-drive", f"file={paths.config_iso},if=none,id=config0,format=raw,readonly=on"]
        device = "virtio-blk-pci,drive=config0,id=virtio-config0"
        if q35 and layout.config is not None:
            behind_ports += ["-device", f"{device},bus={layout.config}"]
        else:
            argv += ["-device", device]
    for index, nic in enumerate(spec.nics):
        port = layout.nics.get(nic.mac) if q35 else None
        argv += ["-netdev", f"hubport,id=net{index},hubid={index}" if dead_end_nics
                 else f"tap,id=net{index},ifname={nic.tap},script=no,downscript=no"]
        device = f"virtio-net-pci,netdev=net{index},id=nic{index},mac={nic.mac},romfile="
        (behind_ports if port else argv).extend(["-device", device + (f",bus={port}" if port else "")])
    if q35:
        # q35's root bus cannot hot-plug: empty root ports are where attached interfaces go.
        for index in range(max(layout.ports, HOTPLUG_PORTS)):
            argv += ["-device", f"pcie-root-port,id={HOTPLUG_PREFIX}{index},chassis={index + 1},bus=pcie.0"]
    argv += behind_ports
    for disk in (d for d in spec.disks if d.kind == DiskKind.VOLUME):
        device = VolumeIds.of(disk).device
        if q35 and device not in layout.volumes:
            raise ValueError(f"volume {disk.serial or disk.source} has no root port in the layout")
        boot_index = None if disk.boot_index is None else disk.boot_index + boot_shift
        argv += volume_args(disk, disk.cache or disk_cache, not disk.remote and disk.source in host_devices,
                            layout.volumes[device] if q35 else None, boot_index, paths.nbd_keys(device))
    argv += [
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=rng0",
    ]
    if layout.identity:
        argv += [
            "-chardev", f"socket,id={IDENTITY_CHARDEV},path={paths.identity},server=on,wait=off",
            # Port 0 is reserved for a console: the identity port is port 1 of 2.
            "-device", "virtio-serial-pci,id=identity-serial0,max_ports=2",
            "-device", f"virtserialport,bus=identity-serial0.0,chardev={IDENTITY_CHARDEV},name={IDENTITY_PORT}",
        ]
    if template_ram is not None:
        mem_path = str(template_ram).replace(",", ",,")  # QEMU's escape for a comma in an option value
        argv += ["-object", f"memory-backend-file,id={TEMPLATE_RAM_ID},mem-path={mem_path},"
                            f"size={spec.memory_mib}M,share={'on' if template_shared else 'off'}"]
    if spec.balloon:
        reporting = "off" if template_ram is not None else "on"
        argv += ["-device", f"virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting={reporting}"]
    if incoming:
        argv += ["-incoming", "defer"]
    return argv
