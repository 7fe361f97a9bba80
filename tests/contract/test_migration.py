"""Live migration between two drivers on this machine (two "hosts" with their own instance dirs).

The guest keeps running across the move: under QEMU a ticker in the guest prints its uptime to
the console every second, and the destination's ticks go on from the source's (no reboot).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import READY, free_port_pair
from yunstack.compute.driver import ConfigDrive, InstanceSpec, MigrationMode, PowerState
from yunstack.errors import Conflict, DriverError, NotFound

TICKER = (b"#!/bin/sh\n"
          b"(while :; do echo \"TICK $(cut -d' ' -f1 /proc/uptime)\" > /dev/console; sleep 1; done)"
          b" < /dev/null > /dev/null 2>&1 &\n")
TICK = re.compile(r"TICK (\d+\.\d+)")


def _ticking_spec(harness: Any) -> InstanceSpec:
    spec: InstanceSpec = harness.spec()
    drive = ConfigDrive(meta_data={"uuid": spec.id, "hostname": "vm1.novalocal", "name": "vm"}, user_data=TICKER)
    return harness.spec(id=spec.id, config_drive=drive)


async def _ticks(driver: Any, instance_id: str) -> list[float]:
    return [float(t) for t in TICK.findall(await driver.console_output(instance_id))]


async def _wait_tick_after(driver: Any, instance_id: str, uptime: float, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [t for t in await _ticks(driver, instance_id) if t > uptime]
        if later:
            return later[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no tick after uptime {uptime} within {timeout}s")


async def _running_guest(harness: Any) -> InstanceSpec:
    spec = _ticking_spec(harness)
    await harness.driver.spawn(spec)
    await harness.wait_ready(spec.id)
    if harness.kind == "qemu":
        await _wait_tick_after(harness.driver, spec.id, 0.0)
    return spec


async def test_each_driver_reports_its_capabilities_in_host_info(harness: Any) -> None:
    await harness.driver.init_host()
    caps = await harness.driver.capabilities()
    assert (await harness.driver.host_info()).capabilities == caps
    assert MigrationMode.PAUSED in caps.migration_modes and caps.block_migration
    assert caps.accel in ("kvm", "tcg") and caps.max_vcpus >= 1
    if caps.accel == "tcg" and harness.kind == "qemu":
        assert MigrationMode.PRECOPY not in caps.migration_modes  # QEMU 7.2 TCG precopy corrupts guests


async def test_a_running_guest_moves_to_another_host_and_keeps_running(harness: Any) -> None:
    source, destination = harness.driver, harness.peer
    spec = await _running_guest(harness)
    boots = len(READY.findall(await source.console_output(spec.id)))
    target = await destination.prepare_incoming(spec, "127.0.0.1", free_port_pair())
    waiting = await destination.get_info(spec.id)
    assert (waiting.power_state, waiting.migration) == (PowerState.PAUSED, "incoming")
    stats = await source.send(spec.id, target, MigrationMode.PAUSED)
    assert (await source.get_info(spec.id)).migration == "outgoing"
    assert stats.mode == MigrationMode.PAUSED and stats.total_ms >= stats.downtime_ms >= 0
    last_tick = max(await _ticks(source, spec.id), default=0.0)
    await destination.finish_incoming(spec.id)
    await source.finish_outgoing(spec.id)

    moved = await destination.get_info(spec.id)
    assert (moved.power_state, moved.migration) == (PowerState.RUNNING, None)
    with pytest.raises(NotFound):
        await source.get_info(spec.id)
    assert await source.list_instances() == []
    if harness.kind == "qemu":
        # The guest's clock goes on from where it was: the same guest, not a reboot.
        assert await _wait_tick_after(destination, spec.id, last_tick) < last_tick + 10
        assert len(harness.processes(spec.id)) == 1
        assert not (harness.root / "instances" / spec.id).exists() and not list(harness.root.rglob(spec.id))
    assert len(READY.findall(await destination.console_output(spec.id))) <= boots


async def test_a_paused_guest_moves_and_stays_paused_until_it_is_unpaused(harness: Any) -> None:
    source, destination = harness.driver, harness.peer
    spec = await _running_guest(harness)
    await source.pause(spec.id)
    target = await destination.prepare_incoming(spec, "127.0.0.1", free_port_pair())
    await source.send(spec.id, target, MigrationMode.PAUSED)
    last_tick = max(await _ticks(source, spec.id), default=0.0)
    await destination.finish_incoming(spec.id, resume=False)
    await source.finish_outgoing(spec.id)
    moved = await destination.get_info(spec.id)
    assert (moved.power_state, moved.migration) == (PowerState.PAUSED, None)
    await destination.unpause(spec.id)
    assert (await destination.get_info(spec.id)).power_state == PowerState.RUNNING
    if harness.kind == "qemu":
        assert await _wait_tick_after(destination, spec.id, last_tick) < last_tick + 10  # no reboot


async def test_abort_after_the_state_was_sent_leaves_the_source_guest_running(harness: Any) -> None:
    source, destination = harness.driver, harness.peer
    spec = await _running_guest(harness)
    target = await destination.prepare_incoming(spec, "127.0.0.1", free_port_pair())
    await source.send(spec.id, target, MigrationMode.PAUSED)
    await destination.abort_migration(spec.id)
    await source.abort_migration(spec.id)
    await source.abort_migration(spec.id)  # idempotent

    assert (await source.get_info(spec.id)).power_state == PowerState.RUNNING
    with pytest.raises(NotFound):
        await destination.get_info(spec.id)
    if harness.kind == "qemu":
        last_tick = max(await _ticks(source, spec.id))
        await _wait_tick_after(source, spec.id, last_tick)
        assert len(harness.processes(spec.id)) == 1


async def test_abort_before_anything_was_sent_drops_the_waiting_destination(harness: Any) -> None:
    spec = await _running_guest(harness)
    await harness.peer.prepare_incoming(spec, "127.0.0.1", free_port_pair())
    await harness.peer.abort_migration(spec.id)
    await harness.driver.abort_migration(spec.id)  # nothing in progress here: left alone
    assert await harness.peer.list_instances() == []
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.RUNNING


async def test_the_only_copy_of_a_guest_is_never_cleaned_up_as_migrated(harness: Any) -> None:
    spec = await _running_guest(harness)
    with pytest.raises(Conflict):
        await harness.driver.finish_outgoing(spec.id)
    with pytest.raises(Conflict):
        await harness.driver.send(spec.id, await harness.peer.prepare_incoming(spec, "127.0.0.1", free_port_pair()),
                                  MigrationMode.POSTCOPY)
    await harness.peer.abort_migration(spec.id)
    assert (await harness.driver.get_info(spec.id)).power_state == PowerState.RUNNING


async def test_a_status_read_returns_while_a_slow_operation_holds_the_guest(harness: Any) -> None:
    spec = harness.spec()
    await harness.driver.spawn(spec)
    if harness.kind == "qemu":
        # What a snapshot or a migration holds for seconds: the guest's lock and its main QMP monitor.
        from yunstack.compute.qemu.qmp import open_session
        paths = harness.driver._existing(spec.id)
        async with harness.driver._lock(spec.id), open_session(paths.qmp, "test holding the monitor"):
            info = await asyncio.wait_for(harness.driver.get_info(spec.id), 3.0)
            listed = await asyncio.wait_for(harness.driver.list_instances(), 3.0)
            balloon = await asyncio.wait_for(harness.driver.balloon_stats(spec.id), 3.0)
    else:
        info = await harness.driver.get_info(spec.id)
        listed = await harness.driver.list_instances()
        balloon = await harness.driver.balloon_stats(spec.id)
    assert info.power_state == PowerState.RUNNING and [i.id for i in listed] == [spec.id]
    assert balloon["actual"] > 0


# -- cold migration: the guest is off while its disks move --------------------------------------------

KEY, WRONG_KEY = "ab" * 32, "cd" * 32
MARK_OFFSET = 900 * 1024 * 1024  # beyond what the tiny image uses: only the guest's write puts it there


def _overlay(driver: Any, instance_id: str) -> Any:
    return driver._root / instance_id / "disk.qcow2"


def _qemu_io(path: Any, command: str) -> str:
    done = subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and "failed" not in done.stdout.lower(), done.stdout + done.stderr
    return done.stdout


async def _wait_ready_on(driver: Any, instance_id: str, boots: int = 1, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while len(READY.findall(await driver.console_output(instance_id))) < boots:
        assert time.monotonic() < deadline, await driver.console_output(instance_id)
        await asyncio.sleep(0.2)


async def test_a_stopped_guests_disks_move_to_another_host_with_what_it_wrote_and_boot_there(harness: Any) -> None:
    source, destination = harness.driver, harness.peer
    spec = harness.spec()
    await source.spawn(spec)
    await harness.wait_ready(spec.id)
    with pytest.raises(Conflict):  # never while the guest runs: its disk is not consistent
        await source.export_disks(spec.id, "127.0.0.1", free_port_pair(), KEY)
    await source.power_off(spec.id, 30.0)
    if harness.kind == "qemu":
        _qemu_io(_overlay(source, spec.id), f"write -P 0x5a {MARK_OFFSET} 64k")
    else:
        source._guests[spec.id].disk_generation = 5
    [uri] = await source.export_disks(spec.id, "127.0.0.1", free_port_pair(), KEY)
    with pytest.raises(DriverError):  # a reader without the key gets nothing, and nothing is left
        await destination.import_disks(spec, [uri], WRONG_KEY)
    with pytest.raises(NotFound):
        await destination.get_info(spec.id)

    grown = harness.spec(id=spec.id, memory_mib=192, disk_gib=2)  # a resize on the way
    copied = await destination.import_disks(grown, [uri], KEY)
    assert copied > 0
    assert (await destination.get_info(spec.id)).power_state == PowerState.SHUTDOWN
    with pytest.raises(Conflict):
        await destination.import_disks(grown, [uri], KEY)
    if harness.kind == "qemu":
        moved = _overlay(destination, spec.id)
        _qemu_io(moved, f"read -P 0x5a {MARK_OFFSET} 64k")  # what the guest wrote arrived
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(moved)],
                                         capture_output=True, text=True, check=True).stdout)
        assert info["virtual-size"] == 2 * 1024**3
        assert info["backing-filename"] == str(harness.image.resolve())  # this host's base image
        assert info["actual-size"] < 64 * 1024 * 1024  # the overlay, not the whole disk
    else:
        assert destination._guests[spec.id].disk_generation == 5
    await destination.power_on(grown)
    await _wait_ready_on(destination, spec.id)
    assert (await source.get_info(spec.id)).power_state == PowerState.SHUTDOWN  # kept for a revert
    await source.destroy(spec.id)
    await destination.destroy(spec.id)
    if harness.kind == "qemu":
        assert not [p for p, cmd in _processes("qemu-nbd") if spec.id in cmd]


async def test_an_export_that_was_never_read_ends_when_the_guest_takes_it_back(harness: Any) -> None:
    source, destination = harness.driver, harness.peer
    spec = harness.spec()
    await source.spawn(spec)
    await harness.wait_ready(spec.id)
    await source.power_off(spec.id, 30.0)
    [uri] = await source.export_disks(spec.id, "127.0.0.1", free_port_pair(), KEY)
    await source.unexport_disks(spec.id)
    await source.unexport_disks(spec.id)  # idempotent
    with pytest.raises(DriverError):
        await destination.import_disks(spec, [uri], KEY)
    with pytest.raises(NotFound):
        await destination.get_info(spec.id)
    await source.power_on(spec)
    await harness.wait_ready(spec.id, boots=2)
    if harness.kind == "qemu":
        assert not [p for p, cmd in _processes("qemu-nbd") if spec.id in cmd]
    await source.destroy(spec.id)


def _processes(name: str) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if name in cmd.split(" ", 1)[0]:
                found.append((int(entry.name), cmd))
    return found
