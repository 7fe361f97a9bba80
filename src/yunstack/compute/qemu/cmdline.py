"""Build a guest's QEMU argv: a pure function of the spec, the paths, the config and the accel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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

    @property
    def serial(self) -> Path:
        """The serial console's unix socket (the interactive console); as long as the QMP path."""
        if self.socket_dir is not None:
            return self.socket_dir / f"{self.dir.name}.ser"
        return self.dir / "ser.sock"

    @property
    def qemu_log(self) -> Path:
        return self.dir / "qemu.log"

    @property
    def qmp(self) -> Path:
        if self.socket_dir is not None:
            return self.socket_dir / f"{self.dir.name}.qmp"
        return self.dir / "qmp.sock"

    @property
    def status_qmp(self) -> Path:
        """A second QMP monitor for status reads only, so they never queue behind an operation's session.

        QEMU serves one client per monitor at a time: a snapshot or a migration holds the main one
        for seconds, and a ``query-status`` on the same socket would wait for it.
        """
        if self.socket_dir is not None:
            return self.socket_dir / f"{self.dir.name}.sqmp"
        return self.dir / "qmp-status.sock"

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
) -> list[str]:
    """Return the argv that starts ``spec`` as a daemonized QEMU process.

    ``accel`` is ``"kvm"`` or ``"tcg"``.  With ``incoming`` QEMU waits for a saved state
    (``migrate-incoming`` over QMP) instead of booting.  Paths must be absolute: a daemonized
    QEMU changes its directory to ``/``.  ``disk_cache`` is QEMU's ``cache=`` of disks that do not
    choose their own (``none`` = O_DIRECT: guest data is not cached a second time in host memory).  With
    ``rescue_disk`` the guest boots from that disk (the first virtio disk, ``vda``) and its own
    root disk comes second (``vdb``), as Nova's libvirt rescue lays them out.
    """
    if disk_cache not in DISK_CACHE_MODES:
        raise ValueError(f"disk_cache must be one of {', '.join(DISK_CACHE_MODES)}, not {disk_cache!r}")
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"accel must be 'kvm' or 'tcg', not {accel!r}")
    accel_arg = "kvm" if accel == "kvm" else f"tcg,tb-size={qemu.tcg_tb_size_mib}"
    machine = qemu.machine
    if not spec.memory.page_sharing:
        machine += ",mem-merge=off"
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
    for index, disk in enumerate(spec.disks):
        argv += disk_args(index, disk, paths, disk_cache, boot_shift=1 if rescue_disk is not None else 0)
    if spec.config_drive is not None:
        argv += [
            "-drive", f"file={paths.config_iso},if=none,id=config0,format=raw,readonly=on",
            "-device", "virtio-blk-pci,drive=config0,id=virtio-config0",
        ]
    for index, nic in enumerate(spec.nics):
        argv += [
            "-netdev", f"tap,id=net{index},ifname={nic.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net{index},id=nic{index},mac={nic.mac},romfile=",
        ]
    if qemu.machine.split(",")[0].startswith(("q35", "pc-q35")):
        # q35's root bus cannot hot-plug: empty root ports are where attached interfaces go.
        for index in range(HOTPLUG_PORTS):
            argv += ["-device", f"pcie-root-port,id={HOTPLUG_PREFIX}{index},chassis={index + 1},bus=pcie.0"]
    argv += [
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=rng0",
    ]
    if spec.balloon:
        argv += ["-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on"]
    if incoming:
        argv += ["-incoming", "defer"]
    return argv
