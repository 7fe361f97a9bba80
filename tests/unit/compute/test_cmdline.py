"""The QEMU argv is a pure function of spec, paths, config and accel: checked as a table."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from yunstack.compute.driver import (
    ConfigDrive,
    Disk,
    DiskKind,
    InstanceSpec,
    MemoryBacking,
    NbdSource,
    Nic,
    check_volume,
    require_source,
    root_disk,
)
from yunstack.compute.qemu import accel, disk, host, specfile
from yunstack.compute.qemu.cmdline import InstancePaths, VolumeIds, build_argv
from yunstack.config import QemuConfig
from yunstack.errors import DriverMisconfigured, ValidationFailed

PATHS = InstancePaths(Path("/var/lib/yunstack/instances/abc"))
SPEC = InstanceSpec(id="abc", name="vm", hostname="vm1", vcpus=2, memory_mib=256,
                    disks=root_disk(Path("/cache/base.qcow2"), size_gib=1))
KEY = "0123456789abcdef" * 4
NBD = NbdSource(host="192.0.2.10", port=10809, export="vol2", psk_identity="yunstack", psk_key=KEY)
NBD_VOLUME = Disk(kind=DiskKind.VOLUME, source=Path("/var/lib/yunstack/volumes/vol2.qcow2"), format="raw",
                  device="vdc", boot_index=None, serial="vol2", nbd=NBD)


def _pairs(argv: list[str]) -> list[tuple[str, str]]:
    return [(argv[i], argv[i + 1]) for i in range(1, len(argv) - 1) if argv[i].startswith("-")]


@pytest.mark.parametrize(
    ("spec", "config", "accel_name", "present", "absent"),
    [
        (SPEC, QemuConfig(), "tcg",
         [("-accel", "tcg,tb-size=32"), ("-cpu", "max"), ("-machine", "q35"), ("-m", "256"),
          ("-smp", "2"), ("-name", "guest=abc,debug-threads=on"),
          ("-pidfile", "/var/lib/yunstack/instances/abc/qemu.pid"),
          ("-qmp", "unix:/var/lib/yunstack/instances/abc/qmp.sock,server=on,wait=off"),
          ("-qmp", "unix:/var/lib/yunstack/instances/abc/qmp-status.sock,server=on,wait=off"),
          ("-chardev", "socket,id=console0,path=/var/lib/yunstack/instances/abc/ser.sock,server=on,wait=off,"
                       "logfile=/var/lib/yunstack/instances/abc/console.log,logappend=on"),
          ("-drive", "file=/var/lib/yunstack/instances/abc/disk.qcow2,if=none,id=disk0,node-name=root0,"
                     "format=qcow2,discard=unmap,cache=writeback"),
          ("-device", "virtio-blk-pci,drive=disk0,id=virtio-disk0,bootindex=1"),
          ("-device", "virtio-rng-pci,rng=rng0"),
          ("-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on"),
          ("-device", "pcie-root-port,id=hotplug0,chassis=1,bus=pcie.0")],
         ["-incoming", "-no-shutdown", "-netdev", "config0"]),
        (SPEC, QemuConfig(machine="pc", tcg_tb_size_mib=64), "kvm",
         [("-accel", "kvm"), ("-cpu", "host"), ("-machine", "pc")], ["tb-size", "pcie-root-port"]),
        (InstanceSpec(**{**SPEC.__dict__, "balloon": False,
                         "config_drive": ConfigDrive(meta_data={"uuid": "abc"}),
                         "nics": (Nic(tap="tap0", mac="52:54:00:00:00:01"),)}),
         QemuConfig(), "tcg",
         [("-drive", "file=/var/lib/yunstack/instances/abc/config.iso,if=none,id=config0,format=raw,"
                     "readonly=on"),
          ("-netdev", "tap,id=net0,ifname=tap0,script=no,downscript=no"),
          ("-device", "virtio-net-pci,netdev=net0,id=nic0,mac=52:54:00:00:00:01,romfile=")],
         ["virtio-balloon-pci"]),
    ],
    ids=["tcg-defaults", "kvm", "config-drive-nic-no-balloon"],
)
def test_build_argv(spec: InstanceSpec, config: QemuConfig, accel_name: str,
                    present: list[tuple[str, str]], absent: list[str]) -> None:
    argv = build_argv(spec, PATHS, config, accel_name)
    assert argv[0] == config.binary
    assert {"-nodefaults", "-no-user-config", "-daemonize"} <= set(argv)
    assert ("-display", "none") in _pairs(argv)
    for pair in present:
        assert pair in _pairs(argv)
    joined = " ".join(argv)
    for word in absent:
        assert word not in joined


def test_a_restore_waits_for_incoming_state() -> None:
    assert build_argv(SPEC, PATHS, QemuConfig(), "tcg", incoming=True)[-2:] == ["-incoming", "defer"]


def test_the_root_disk_cache_mode_is_passed_and_checked(tmp_path: Path) -> None:
    argv = build_argv(SPEC, PATHS, QemuConfig(), "tcg", disk_cache="none")
    assert any(a.startswith("file=") and a.endswith(",cache=none") for a in argv)
    with pytest.raises(ValueError, match="disk_cache"):
        build_argv(SPEC, PATHS, QemuConfig(), "tcg", disk_cache="unsafe")
    # auto probes O_DIRECT where the disks live (ext4 and xfs can; tmpfs cannot)
    assert disk.cache_mode("auto", tmp_path) == ("none" if disk.supports_direct_io(tmp_path) else "writeback")
    assert not list(tmp_path.iterdir())  # the probe file is gone
    assert disk.cache_mode("writethrough", tmp_path) == "writethrough"
    with pytest.raises(DriverMisconfigured, match="disk_cache"):
        disk.cache_mode("directsync", tmp_path)


def test_an_unknown_accel_is_refused() -> None:
    with pytest.raises(ValueError, match="accel"):
        build_argv(SPEC, PATHS, QemuConfig(), "xen")


def test_the_kvm_probe_boots_the_guests_firmware_from_a_disk_that_exits(tmp_path: Path) -> None:
    disk = tmp_path / "probe.img"
    accel.write_probe_disk(disk)
    data = disk.read_bytes()
    assert len(data) == 1 << 20 and data[:512] == accel.probe_boot_sector() and data[510:512] == b"\x55\xaa"
    # Like a boot loader: into protected mode (mov cr0,eax), an iretd there, then the exit port.
    code = data[:64]
    assert code.index(bytes([0x0F, 0x22, 0xC0])) < code.index(0xCF) < code.index(bytes([0xE6, 0xF4]))
    argv = accel.probe_argv(QemuConfig(), "kvm", disk)
    assert ("-cpu", "host") in _pairs(argv) and "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv
    assert "-bios" not in argv  # the firmware the guests boot is the one probed


async def test_the_probe_runs_a_guest_and_a_configured_accel_skips_it() -> None:
    # the firmware under TCG on a loaded CI machine can take longer than the 3 s a KVM probe gets
    usable, why = await accel.probe(QemuConfig(kvm_probe_timeout=60.0), "tcg")
    assert usable, why
    assert await accel.choose_accel(QemuConfig(accel="tcg")) == "tcg"
    usable, why = await accel.probe(QemuConfig(binary="/nonexistent/qemu"), "tcg")
    assert not usable and "cannot run" in why


@pytest.mark.parametrize(("text", "version"), [
    ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)", 7002022),
    ("QEMU emulator version 8.2.0", 8002000),
    ("garbage", 0),
])
def test_hypervisor_version(text: str, version: int) -> None:
    assert host.hypervisor_version(text) == version


def test_the_spec_file_round_trips(tmp_path: Path) -> None:
    spec = InstanceSpec(**{**SPEC.__dict__, "config_drive": ConfigDrive(
        meta_data={"uuid": "abc"}, user_data=b"\x00bin", network_data={"links": []}),
        "nics": (Nic(tap="tap0", mac="52:54:00:00:00:01", bridge="br0"),),
        "memory": MemoryBacking(page_sharing=False, thp=False),
        "disks": (*SPEC.disks, Disk(kind=DiskKind.VOLUME, source=Path("/dev/vg/vol1"), format="raw",
                                    device="vdb", boot_index=None, read_only=True, cache="none"), NBD_VOLUME)})
    paths = InstancePaths(tmp_path)
    specfile.save_spec(paths, spec)
    assert specfile.load_spec(paths) == spec
    assert paths.spec.stat().st_mode & 0o777 == 0o600


async def test_auto_accel_is_decided_by_a_bounded_probe_and_cached() -> None:
    config = QemuConfig(kvm_probe_timeout=3.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    chosen = await accel.choose_accel(config)
    assert chosen in ("kvm", "tcg") and loop.time() - started < config.kvm_probe_timeout + 15  # slack: loaded CI
    assert await accel.choose_accel(config) == chosen
    with pytest.raises(DriverMisconfigured):
        await accel.choose_accel(QemuConfig(accel="xen"))


def test_each_disk_of_the_spec_gets_a_drive_and_a_volume_keeps_its_own_options() -> None:
    volume = Disk(kind=DiskKind.VOLUME, source=Path("/dev/vg/vol1"), format="raw", device="vdb",
                  boot_index=None, read_only=True, cache="none", serial="vol1")
    argv = build_argv(InstanceSpec(**{**SPEC.__dict__, "disks": (*SPEC.disks, volume)}), PATHS, QemuConfig(), "tcg",
                      rescue_disk=Path("/var/lib/yunstack/instances/abc/disk.rescue.qcow2"))
    pairs = _pairs(argv)
    # A volume is two -blockdev nodes (JSON: a comma in a path is safe) and a device with its serial,
    # behind a root port of its own so that it can be unplugged after a restart too.
    nodes = [json.loads(v) for k, v in pairs if k == "-blockdev" and "vol-" in v]
    (file_node,) = [n for n in nodes if n.get("filename") == "/dev/vg/vol1"]
    (fmt_node,) = [n for n in nodes if n["driver"] == "raw"]
    assert file_node["read-only"] is True and fmt_node["read-only"] is True
    assert file_node["cache"] == {"direct": True, "no-flush": False} and fmt_node["file"] == file_node["node-name"]
    (device,) = [v for k, v in pairs if k == "-device" and "serial=vol1" in v]
    assert device.startswith(f"virtio-blk-pci,drive={fmt_node['node-name']},") and ",bus=hotplug4" in device
    assert "bootindex" not in device  # not bootable
    # rescued: the rescue disk boots first, the root disk second
    assert ("-device", "virtio-blk-pci,drive=disk0,id=virtio-disk0,bootindex=2") in pairs


def test_a_volume_over_nbd_is_tls_credentials_an_nbd_node_and_a_raw_node() -> None:
    argv = build_argv(InstanceSpec(**{**SPEC.__dict__, "disks": (*SPEC.disks, NBD_VOLUME)}), PATHS, QemuConfig(), "tcg")
    pairs = _pairs(argv)
    ids = VolumeIds.of(NBD_VOLUME)
    # The credentials come first: the nbd node names them; QEMU reads the key from the instance directory.
    (tls,) = [json.loads(v) for k, v in pairs if k == "-object" and "tls-creds-psk" in v]
    assert tls == {"qom-type": "tls-creds-psk", "id": ids.tls, "endpoint": "client", "username": "yunstack",
                   "dir": "/var/lib/yunstack/instances/abc/nbd/" + ids.device}
    nodes = [json.loads(v) for k, v in pairs if k == "-blockdev" and "vol-" in v]
    assert argv.index("-object") < argv.index("-blockdev")
    (nbd_node,) = [n for n in nodes if n["driver"] == "nbd"]
    (raw_node,) = [n for n in nodes if n["driver"] == "raw"]
    assert nbd_node["server"] == {"type": "inet", "host": "192.0.2.10", "port": "10809"}
    assert (nbd_node["export"], nbd_node["tls-creds"], nbd_node["node-name"]) == ("vol2", ids.tls, ids.file)
    assert nbd_node["reconnect-delay"] > 0  # a restarted storage daemon holds the guest's I/O, not fails it
    assert raw_node["file"] == ids.file and raw_node["node-name"] == ids.node
    assert KEY not in " ".join(argv)  # the key is in the key file only, never on a command line
    (device,) = [v for k, v in pairs if k == "-device" and "serial=vol2" in v]
    assert device.startswith(f"virtio-blk-pci,drive={ids.node},")


def test_a_volume_over_nbd_is_checked_before_it_reaches_qemu() -> None:
    assert check_volume(NBD_VOLUME) == "vol2"
    require_source(NBD_VOLUME)  # its source is on the storage host: nothing here to look at
    assert KEY not in repr(NBD_VOLUME)
    for host_ in ("2001:db8::1", "storage-1.example.org", "st1"):
        check_volume(replace(NBD_VOLUME, nbd=replace(NBD, host=host_)))
    bad = [{"host": "a,b"}, {"host": "x y"}, {"host": ""}, {"host": "-st"}, {"port": 0}, {"port": 65536},
           {"port": True}, {"export": "a/b"}, {"export": "a,b"}, {"export": ""}, {"psk_identity": "a:b"},
           {"psk_key": "xyz" * 20}, {"psk_key": KEY + "0"}, {"psk_key": KEY + "\n"}, {"export": "vol2\n"},
           {"host": "st1\n"}, {"psk_key": ""}]
    for change in bad:
        with pytest.raises(ValidationFailed):
            check_volume(replace(NBD_VOLUME, nbd=replace(NBD, **change)))  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed, match="raw"):
        check_volume(replace(NBD_VOLUME, format="qcow2"))
