"""One contract suite for every compute driver: FakeDriver and QemuDriver behave the same."""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from yunstack.compute.driver import ComputeDriver, PowerState
from yunstack.errors import Conflict, NotFound


def _qcow2_header(path: Path) -> tuple[bytes, int]:
    magic, _version, backing_offset = struct.unpack(">4sIQ", path.read_bytes()[:16])
    return magic, backing_offset


async def test_the_driver_implements_the_protocol_and_reports_its_host(harness: Any) -> None:
    assert isinstance(harness.driver, ComputeDriver)
    await harness.driver.init_host()
    info = await harness.driver.host_info()
    assert info.vcpus >= 1 and info.memory_mib > 0 and info.accel in ("kvm", "tcg")
    assert " up " in info.uptime and "load average" in info.uptime


async def test_an_unknown_instance_is_not_found(harness: Any) -> None:
    with pytest.raises(NotFound):
        await harness.driver.get_info("0" * 32)
    await harness.driver.destroy("0" * 32)  # destroy is idempotent


async def test_spawn_boots_a_running_guest(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    info = await harness.driver.get_info(spec.id)
    assert info.power_state == PowerState.RUNNING
    assert (info.memory_mib, info.vcpus) == (160, 1)
    await harness.wait_ready(spec.id)
    assert [i.id for i in await harness.driver.list_instances()] == [spec.id]
    with pytest.raises(Conflict):
        await harness.driver.spawn(spec)
    if harness.kind == "qemu":
        assert harness.processes(spec.id) == [info.pid]
        assert await harness.driver.rss_bytes(spec.id) > 0


async def test_power_off_ends_the_process_keeps_the_disk_and_power_on_boots_again(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.wait_ready(spec.id)
    await harness.driver.power_off(spec.id)
    info = await harness.driver.get_info(spec.id)
    assert (info.power_state, info.pid) == (PowerState.SHUTDOWN, None)
    await harness.driver.power_off(spec.id)  # already off: a no-op
    if harness.kind == "qemu":
        assert harness.processes(spec.id) == []
        assert harness.root is not None
        assert (harness.root / "instances" / spec.id / "disk.qcow2").exists()
    await harness.driver.power_on(spec)
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.RUNNING
    await harness.wait_ready(spec.id, boots=2)


async def test_soft_and_hard_reboot_boot_the_guest_again(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.wait_ready(spec.id)
    await harness.driver.reboot(spec.id, hard=False)
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.RUNNING
    await harness.wait_ready(spec.id, boots=2)
    await harness.driver.reboot(spec.id, hard=True)
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.RUNNING
    await harness.wait_ready(spec.id, boots=3)


async def test_pause_and_unpause(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.driver.pause(spec.id)
    info = await harness.driver.get_info(spec.id)
    assert info.power_state == PowerState.PAUSED and (harness.kind == "fake" or info.pid is not None)
    await harness.driver.unpause(spec.id)
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.RUNNING
    await harness.wait_ready(spec.id)


async def test_suspend_saves_the_guest_and_resume_continues_it(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.wait_ready(spec.id)
    await harness.driver.suspend(spec.id)
    info = await harness.driver.get_info(spec.id)
    assert (info.power_state, info.pid) == (PowerState.SUSPENDED, None)
    if harness.kind == "qemu":
        assert harness.processes(spec.id) == []
    with pytest.raises(Conflict):
        await harness.driver.pause(spec.id)
    await harness.driver.resume(spec.id)
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.RUNNING
    console = await harness.driver.console_output(spec.id)
    assert console.count("-READY") == 1  # continued, not rebooted
    await harness.driver.pause(spec.id)  # the restored guest answers QMP
    await harness.driver.unpause(spec.id)


async def test_console_output_returns_the_last_lines(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.wait_ready(spec.id)
    # Paused, the guest cannot print between the two reads (it may still be chatting after
    # READY, and a blank last line is legitimate output).
    await harness.driver.pause(spec.id)
    full = (await harness.driver.console_output(spec.id)).split("\n")
    last = (await harness.driver.console_output(spec.id, length=1)).split("\n")
    assert full[-1:] == last and any(line.startswith("YUNSTACK-READY") for line in full)


async def test_snapshot_of_a_running_guest_is_a_standalone_qcow2(harness: Any, tmp_path: Path) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    dest = tmp_path / "snap.qcow2"
    await harness.driver.snapshot(spec.id, dest)
    assert _qcow2_header(dest) == (b"QFI\xfb", 0)
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.RUNNING
    if harness.kind == "qemu":
        out = subprocess.run(["qemu-img", "info", "--output=json", str(dest)],
                             check=True, capture_output=True, text=True).stdout
        info = json.loads(out)
        assert info["format"] == "qcow2" and "backing-filename" not in info
        await harness.wait_ready(spec.id)


async def test_destroy_removes_the_process_and_every_file(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.driver.destroy(spec.id)
    with pytest.raises(NotFound):
        await harness.driver.get_info(spec.id)
    assert await harness.driver.list_instances() == []
    if harness.kind == "qemu":
        assert harness.root is not None
        assert harness.processes(spec.id) == []
        assert not (harness.root / "instances" / spec.id).exists()
    await harness.driver.destroy(spec.id)


async def test_a_new_driver_adopts_running_guests_without_duplicating_them(harness: Any) -> None:
    running, stopped = harness.spec(), harness.spec()
    await harness.driver.spawn(running)
    await harness.driver.spawn(stopped)
    await harness.driver.power_off(stopped.id, timeout=0)
    before = await harness.driver.get_info(running.id)
    restarted = harness.restart()
    await restarted.init_host()
    infos = {i.id: i for i in await restarted.list_instances()}
    assert set(infos) == {running.id, stopped.id}
    assert (infos[running.id].power_state, infos[running.id].pid) == (PowerState.RUNNING, before.pid)
    assert infos[stopped.id].power_state == PowerState.SHUTDOWN
    if harness.kind == "qemu":
        assert harness.processes(running.id) == [before.pid]
    await restarted.pause(running.id)
    assert (await restarted.get_info(running.id)).power_state == PowerState.PAUSED
    await restarted.destroy(running.id)
    assert harness.processes(running.id) == []


async def test_a_killed_guest_process_shows_as_crashed_or_shut_down(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.kill_hard(spec.id)
    info = await harness.driver.get_info(spec.id)
    assert info.power_state in (PowerState.SHUTDOWN, PowerState.CRASHED)
    assert info.pid is None and info.reason
    if harness.kind == "qemu":
        assert "without an orderly exit" in info.reason
    await harness.driver.reboot(spec.id, hard=True)  # Nova's way back from a crash
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.RUNNING


async def test_resize_applies_the_new_flavor_to_a_stopped_guest(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    bigger = harness.spec(id=spec.id, memory_mib=192, disk_gib=2)
    with pytest.raises(Conflict):
        await harness.driver.resize(spec, bigger)
    await harness.driver.power_off(spec.id, timeout=0)
    await harness.driver.resize(spec, bigger)
    if harness.kind == "qemu":
        disk = harness.root / "instances" / spec.id / "disk.qcow2"
        out = subprocess.run(["qemu-img", "info", "--output=json", str(disk)],
                             check=True, capture_output=True, text=True).stdout
        assert json.loads(out)["virtual-size"] == 2 * 1024**3
    await harness.driver.power_on(bigger)
    assert (await harness.driver.get_info(spec.id)).memory_mib == 192
    await harness.driver.power_off(spec.id, timeout=0)
    await harness.driver.revert_resize(spec)
    await harness.driver.power_on(spec)
    assert (await harness.driver.get_info(spec.id)).memory_mib == 160
    await harness.driver.confirm_resize(spec.id)


async def test_the_balloon_takes_a_target_and_reports_stats(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.wait_ready(spec.id)
    target = 128 * 1024 * 1024
    await harness.driver.set_balloon_target(spec.id, target)
    for _ in range(100):
        stats = await harness.driver.balloon_stats(spec.id)
        if stats["actual"] == target:
            break
        await asyncio.sleep(0.1)
    assert stats["actual"] == target
    assert isinstance(stats["stats"], dict)


async def test_rebuild_gives_a_stopped_guest_a_fresh_disk_from_the_new_image(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.wait_ready(spec.id)
    other = harness.image
    if harness.kind == "qemu":
        other = harness.root / "other-base.qcow2"
        shutil.copyfile(harness.image, other)
    rebuilt = harness.spec(id=spec.id, base_image=other)
    with pytest.raises(Conflict):
        await harness.driver.rebuild(rebuilt)  # a running guest is not re-imaged under its feet
    await harness.driver.power_off(spec.id, timeout=0)
    disk = harness.root / "instances" / spec.id / "disk.qcow2" if harness.kind == "qemu" else None
    before = disk.stat().st_ino if disk is not None else 0
    await harness.driver.rebuild(rebuilt)
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.SHUTDOWN  # stays off
    if disk is not None:
        out = subprocess.run(["qemu-img", "info", "--output=json", str(disk)],
                             check=True, capture_output=True, text=True).stdout
        assert disk.stat().st_ino != before and json.loads(out)["backing-filename"] == str(other.resolve())
    await harness.driver.power_on(rebuilt)
    await harness.wait_ready(spec.id, boots=2)


async def test_rescue_boots_the_rescue_disk_first_and_unrescue_the_own_disk(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    await harness.wait_ready(spec.id)
    await harness.driver.rescue(spec, harness.image, "qcow2")
    info = await harness.driver.get_info(spec.id)
    assert info.power_state == PowerState.RUNNING
    await harness.wait_ready(spec.id, boots=2)
    if harness.kind == "qemu":
        [cmd] = [c for pid, c in _qemu_cmdlines() if pid == info.pid]
        assert cmd.index("disk.rescue.qcow2") < cmd.index("disk.qcow2,")  # vda is the rescue disk
        restarted = harness.restart()  # a rescued guest is adopted as it runs
        await restarted.init_host()
        assert [(i.id, i.pid) for i in await restarted.list_instances()] == [(spec.id, info.pid)]
    await harness.driver.unrescue(spec)
    info = await harness.driver.get_info(spec.id)
    assert info.power_state == PowerState.RUNNING
    await harness.wait_ready(spec.id, boots=3)
    if harness.kind == "qemu":
        [cmd] = [c for pid, c in _qemu_cmdlines() if pid == info.pid]
        assert "disk.rescue" not in cmd
        assert not (harness.root / "instances" / spec.id / "disk.rescue.qcow2").exists()


def _qemu_cmdlines() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except OSError:
                continue
    return found
