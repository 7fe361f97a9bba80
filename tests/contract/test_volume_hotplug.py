"""Volumes in guests, against every compute driver: attach, detach, extend, and what keeps them.

On QEMU the checks look twice: at QEMU (``query-block``: one device per volume, with its serial and
size) and in the guest, through the tiny image's root shell on the serial console (``/sys/block``).
Each QEMU test boots as few guests as it can: TCG boots take seconds.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import CephLab
from yunstack.compute.driver import Disk, DiskKind, NbdSource, RbdSource, VolumeDetachTimeout, VolumeSourceNotFound
from yunstack.compute.qemu import volumes as qemu_volumes
from yunstack.compute.qemu.cmdline import InstancePaths, VolumeIds
from yunstack.compute.qemu.driver import socket_dir
from yunstack.compute.qemu.qmp import open_session
from yunstack.errors import Conflict, DriverError, NotFound, ValidationFailed
from yunstack.volume.backend import LocalDisk
from yunstack.volume.export import NbdExports

MIB = 1024 * 1024
FIRST = "0b7c3f2e-5d1a-4c8e-9f00-1234567890ab"  # volume ids; the guest sees 20 characters of each
SECOND = "5e0d9a41-77b2-4a55-8c3e-abcdefabcdef"


def _volume(tmp_path: Path, name: str, fmt: str = "qcow2", size: str = "64M") -> Path:
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
    return path


def _disk(source: Path, serial: str, fmt: str = "qcow2", **changes: Any) -> Disk:
    return Disk(kind=DiskKind.VOLUME, source=source, format=fmt, serial=serial, boot_index=None, **changes)


async def _attached(driver: Any, instance_id: str) -> list[tuple[str | None, str]]:
    return [(v.serial, v.device) for v in await driver.attached_volumes(instance_id)]


async def _in_qemu(harness: Any, instance_id: str) -> dict[str, int]:
    """Serial -> virtual size of every volume device the guest's QEMU has (read on its status monitor)."""
    instances = harness.config.instances_path
    paths = InstancePaths(instances.resolve() / instance_id, socket_dir(instances))
    found = {}
    async with open_session(paths.status_qmp, "test") as qmp:
        for block in await qmp.execute("query-block"):
            device = str(block.get("qdev", "")).removesuffix("/virtio-backend")
            if device.startswith("/machine/peripheral/vol-"):
                serial = await qmp.execute("qom-get", {"path": device, "property": "serial"})
                found[str(serial)] = int(block["inserted"]["image"]["virtual-size"])
    return found


async def _in_guest(harness: Any, instance_id: str, command: str, timeout: float = 30.0) -> str:
    """What ``command`` prints in the guest's root shell on its serial console (the tiny image has one)."""
    reader, writer = await asyncio.open_unix_connection(await harness.driver.serial_console(instance_id))
    # The markers come out computed, so the terminal's echo of the typed line never matches them.
    writer.write(f"echo @@B$((1+1)); {command}; echo @@E$((1+1))\n".encode())
    await writer.drain()
    seen = b""
    try:
        while b"@@E2" not in seen:
            seen += await asyncio.wait_for(reader.read(4096), timeout)
    finally:
        writer.close()
    text = seen.decode(errors="replace").replace("\r", "")
    return text.split("@@B2\n", 1)[1].split("@@E2", 1)[0].strip()


async def _guest_disks(harness: Any, instance_id: str, expected: dict[str, str], timeout: float = 15.0) -> None:
    """Wait until the guest's virtio disks with a serial are ``expected`` (name -> serial, from /sys/block).

    The guest probes a hot-plugged disk, or lets go of an unplugged one, a moment after QEMU is done.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        out = await _in_guest(harness, instance_id,
                              "for d in /sys/block/vd*; do echo ${d##*/} $(cat $d/serial 2>/dev/null); done")
        seen = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
        if seen == expected:
            return
        if loop.time() > deadline:
            raise AssertionError(f"the guest has {seen}, not {expected}")
        await asyncio.sleep(0.5)


async def test_a_volume_stays_attached_through_reboot_stop_start_and_a_new_driver(harness: Any, tmp_path: Path) -> None:
    driver, qemu = harness.driver, harness.kind == "qemu"
    spec = harness.spec()  # root disk (vda) and config drive (vdb): the first volume is vdc
    await driver.spawn(spec)
    await harness.wait_ready(spec.id)
    first = _volume(tmp_path, "first.qcow2")

    assert await driver.attach_volume(spec.id, _disk(first, FIRST)) == "vdc"
    assert await driver.attach_volume(spec.id, _disk(first, FIRST)) == "vdc"  # again: nothing changes
    assert await _attached(driver, spec.id) == [(FIRST, "vdc")]
    if qemu:
        assert await _in_qemu(harness, spec.id) == {FIRST: 64 * MIB}  # one device, with the volume's serial
        await _guest_disks(harness, spec.id, {"vdc": FIRST[:20]})

    # Extend: QEMU grows the qcow2 it holds (qemu-img cannot while it runs: the image is locked).
    await driver.extend_volume(spec.id, FIRST, 128 * MIB)
    await driver.extend_volume(spec.id, FIRST, 128 * MIB)  # the same size again: nothing to do
    await driver.extend_volume(spec.id, SECOND, 128 * MIB)  # not attached: a no-op
    if qemu:
        assert await _in_qemu(harness, spec.id) == {FIRST: 128 * MIB}
        assert await _in_guest(harness, spec.id, "cat /sys/block/vdc/size") == str(128 * MIB // 512)
        with pytest.raises(DriverError, match="cannot shrink"):
            await driver.extend_volume(spec.id, FIRST, 64 * MIB)

    await driver.reboot(spec.id, hard=True)
    await harness.wait_ready(spec.id, boots=2)
    assert await _attached(driver, spec.id) == [(FIRST, "vdc")]
    if qemu:
        await _guest_disks(harness, spec.id, {"vdc": FIRST[:20]})

    await driver.detach_volume(spec.id, FIRST)  # the guest acknowledges the unplug
    await driver.detach_volume(spec.id, FIRST)  # not attached any more: a no-op
    assert await _attached(driver, spec.id) == []
    if qemu:
        assert await _in_qemu(harness, spec.id) == {}
        await _guest_disks(harness, spec.id, {})

    # Stopped: attaching records; power_on with the caller's spec (the root disk only) opens both, in order.
    assert await driver.attach_volume(spec.id, _disk(first, FIRST)) == "vdc"
    await driver.power_off(spec.id, timeout=0)
    second = _volume(tmp_path, "second.raw", "raw", "32M")
    assert await driver.attach_volume(spec.id, _disk(second, SECOND, "raw", read_only=True)) == "vdd"
    await driver.extend_volume(spec.id, SECOND, 64 * MIB)  # stopped: a no-op
    await driver.power_on(spec)
    await harness.wait_ready(spec.id, boots=3)
    assert await _attached(driver, spec.id) == [(FIRST, "vdc"), (SECOND, "vdd")]
    if qemu:
        assert await _in_qemu(harness, spec.id) == {FIRST: 128 * MIB, SECOND: 32 * MIB}
        await _guest_disks(harness, spec.id, {"vdc": FIRST[:20], "vdd": SECOND[:20]})
        assert await _in_guest(harness, spec.id, "cat /sys/block/vdd/ro") == "1"

    # A new driver object (an agent restart) adopts the guest with its volumes, and unplugs one that
    # came with the command line like a hot-plugged one.
    restarted = harness.restart()
    await restarted.init_host()
    assert await _attached(restarted, spec.id) == [(FIRST, "vdc"), (SECOND, "vdd")]
    await restarted.detach_volume(spec.id, SECOND)
    assert await _attached(restarted, spec.id) == [(FIRST, "vdc")]
    if qemu:
        assert await _in_qemu(harness, spec.id) == {FIRST: 128 * MIB}

    await restarted.destroy(spec.id)  # the volumes are not the driver's: their files stay
    assert first.exists() and second.exists()
    info = subprocess.run(["qemu-img", "check", str(first)], capture_output=True, text=True)
    assert info.returncode == 0, info.stdout + info.stderr


async def test_attach_refuses_what_is_no_volume_and_detach_waits_for_the_guest(
    harness: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, qemu = harness.driver, harness.kind == "qemu"
    monkeypatch.setattr(qemu_volumes, "UNPLUG_TIMEOUT", 3.0)
    volume = _volume(tmp_path, "vol.qcow2")
    with pytest.raises(NotFound):
        await driver.attach_volume("0" * 32, _disk(volume, FIRST))
    with pytest.raises(NotFound):
        await driver.extend_volume("0" * 32, FIRST, 128 * MIB)
    await driver.detach_volume("0" * 32, FIRST)  # no such guest: a no-op

    spec = harness.spec()
    await driver.spawn(spec)
    missing = tmp_path / "gone.qcow2"
    with pytest.raises(VolumeSourceNotFound, match=str(missing)):
        await driver.attach_volume(spec.id, _disk(missing, FIRST))
    for bad in (_disk(volume, "no,commas"), _disk(volume, FIRST, "vmdk"), Disk(source=volume, serial=FIRST)):
        with pytest.raises(ValidationFailed):
            await driver.attach_volume(spec.id, bad)
    assert await _attached(driver, spec.id) == []
    await harness.wait_ready(spec.id)

    # A suspended guest's saved state holds its devices: it neither gains nor loses a volume, and
    # the hot-plugged one is there again when it resumes.
    assert await driver.attach_volume(spec.id, _disk(volume, FIRST)) == "vdc"
    await driver.suspend(spec.id)
    with pytest.raises(Conflict):
        await driver.attach_volume(spec.id, _disk(_volume(tmp_path, "other.qcow2"), SECOND))
    with pytest.raises(Conflict):
        await driver.detach_volume(spec.id, FIRST)
    await driver.resume(spec.id)
    if qemu:
        assert await _in_qemu(harness, spec.id) == {FIRST: 64 * MIB}

    # A paused guest cannot acknowledge the unplug: the detach fails in time and the volume stays;
    # once the guest runs again a second detach completes.
    await driver.pause(spec.id)
    with pytest.raises(VolumeDetachTimeout, match="stays attached"):
        await driver.detach_volume(spec.id, FIRST)
    assert await _attached(driver, spec.id) == [(FIRST, "vdc")]
    if qemu:
        assert await _in_qemu(harness, spec.id) == {FIRST: 64 * MIB}
    await driver.unpause(spec.id)
    await driver.detach_volume(spec.id, FIRST)
    assert await _attached(driver, spec.id) == []
    if qemu:
        assert await _in_qemu(harness, spec.id) == {}
    await driver.destroy(spec.id)
    assert volume.exists()


async def test_a_volume_of_another_host_attaches_over_nbd_and_keeps_what_the_guest_wrote(
    harness: Any, tmp_path: Path
) -> None:
    """The storage host's export (``volume.export``) and the compute host's NBD disk, end to end on 127.0.0.1.

    The guest finds the volume by its serial (``/sys/block/vdX/serial``: what udev's
    ``/dev/disk/by-id/virtio-<serial>`` link is made from; the tiny image has no udev), reads the
    data the volume held, and what it writes is in the volume's qcow2 file once it is detached and
    the export stopped.  The second boot opens it from the command line instead of a hot-plug.
    """
    driver, qemu = harness.driver, harness.kind == "qemu"
    volume = _volume(tmp_path, "remote.qcow2")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 0 64k", str(volume)], check=True,
                   capture_output=True, timeout=60)
    exports = NbdExports(tmp_path / "exports")
    export = await exports.start(FIRST, LocalDisk(volume, "qcow2"), "127.0.0.1")
    try:
        spec = harness.spec()
        await driver.spawn(spec)
        await harness.wait_ready(spec.id)
        nbd = NbdSource(host=export.host, port=export.port, export=export.name, psk_identity=export.psk_identity,
                        psk_key=export.psk_key)
        disk = _disk(volume, FIRST, "raw", nbd=nbd)
        assert await driver.attach_volume(spec.id, disk) == "vdc"
        assert await driver.attach_volume(spec.id, disk) == "vdc"  # again: nothing changes
        assert [v.nbd for v in await driver.attached_volumes(spec.id)] == [nbd]
        if qemu:
            paths = InstancePaths(harness.config.instances_path.resolve() / spec.id)
            keys = paths.nbd_keys(VolumeIds.of(disk).device)
            assert keys.stat().st_mode & 0o777 == 0o700 and (keys / "keys.psk").stat().st_mode & 0o777 == 0o600
            assert await _in_qemu(harness, spec.id) == {FIRST: 64 * MIB}
            await _guest_disks(harness, spec.id, {"vdc": FIRST[:20]})
            assert await _in_guest(harness, spec.id, "od -An -tx1 -N4 /dev/vdc") == "a5 a5 a5 a5"
            await _in_guest(harness, spec.id, "head -c 65536 /dev/zero | tr '\\000' Z | "
                                              "dd of=/dev/vdc bs=65536 seek=16 conv=fsync 2>/dev/null")

            # A new QEMU (stop, start) opens the volume from its command line with the recorded key.
            await driver.power_off(spec.id, timeout=30)
            await driver.power_on(spec)
            await harness.wait_ready(spec.id, boots=2)
            await _guest_disks(harness, spec.id, {"vdc": FIRST[:20]})
            assert await _in_guest(harness, spec.id, "od -An -tx1 -N2 -j 1048576 /dev/vdc") == "5a 5a"

        await driver.detach_volume(spec.id, FIRST)  # the guest acknowledges; the credentials go too
        assert await _attached(driver, spec.id) == []
        if qemu:
            assert await _in_qemu(harness, spec.id) == {} and not keys.exists()
            await _guest_disks(harness, spec.id, {})
        await driver.destroy(spec.id)
    finally:
        await exports.stop(FIRST)
    if qemu:  # the guest's write went through the export into the volume's qcow2
        check = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x5a 1M 64k", str(volume)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and "fail" not in check.stdout.lower(), check.stdout + check.stderr


async def test_an_rbd_volume_attaches_through_librbd_and_keeps_what_the_guest_wrote(
    harness: Any, ceph_lab: CephLab
) -> None:
    """A Ceph RBD image (``scripts/ceph-lab``'s cluster) plugged into the guest with QEMU's own ``rbd``
    driver: the guest reads what the image held, writes to it, keeps it across a stop and start (the
    command line path), and its write is in the image after the detach."""
    driver, qemu = harness.driver, harness.kind == "qemu"
    namespace = ceph_lab.new_namespace()
    spec_name = f"{ceph_lab.pool}/{namespace}/volume-{FIRST}"
    ceph_lab.rbd("create", "--size", "64M", spec_name)
    ceph_lab.rbd("bench", "--io-type", "write", "--io-size", "64K", "--io-total", "64K", "--io-pattern", "seq",
                 spec_name)
    rbd = RbdSource(pool=ceph_lab.pool, image=f"volume-{FIRST}", namespace=namespace, conf=ceph_lab.conf,
                    user=ceph_lab.user)
    disk = _disk(Path(f"/rbd/{spec_name}"), FIRST, "raw", rbd=rbd)
    spec = harness.spec()
    await driver.spawn(spec)
    try:
        await harness.wait_ready(spec.id)
        assert await driver.attach_volume(spec.id, disk) == "vdc"
        assert [v.rbd for v in await driver.attached_volumes(spec.id)] == [rbd]
        if qemu:
            assert await _in_qemu(harness, spec.id) == {FIRST: 64 * MIB}
            await _guest_disks(harness, spec.id, {"vdc": FIRST[:20]})
            await _in_guest(harness, spec.id, "head -c 65536 /dev/zero | tr '\\000' R | "
                                              "dd of=/dev/vdc bs=65536 seek=16 conv=fsync 2>/dev/null")
            await driver.power_off(spec.id, timeout=30)
            await driver.power_on(spec)
            await harness.wait_ready(spec.id, boots=2)
            await _guest_disks(harness, spec.id, {"vdc": FIRST[:20]})
            assert await _in_guest(harness, spec.id, "od -An -tx1 -N2 -j 1048576 /dev/vdc") == "52 52"
        await driver.detach_volume(spec.id, FIRST)
        assert await _attached(driver, spec.id) == []
    finally:
        await driver.destroy(spec.id)
    if qemu:  # the guest's write is in the image
        out = subprocess.run(["rbd", "--conf", ceph_lab.conf, "--id", ceph_lab.user, "export", spec_name, "-"],
                             capture_output=True, timeout=120, check=True).stdout
        assert out[MIB:MIB + 65536] == b"R" * 65536
    ceph_lab.rbd("rm", spec_name)
