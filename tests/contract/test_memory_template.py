"""Memory templates with a real QEMU: a guest started from a template runs on from where the
template stopped, and the template's RAM file is not changed by it (docs/explanation/memory-templates.md)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import free_port_pair
from tests.contract.test_migration import TICKER, _ticks, _wait_tick_after
from yunstack.compute.driver import ConfigDrive, InstanceSpec, MemoryBacking, MigrationMode, PowerState, root_disk
from yunstack.compute.qemu import process, template
from yunstack.compute.qemu.cmdline import InstancePaths, build_argv
from yunstack.compute.qemu.qmp import open_session
from yunstack.config import QemuConfig
from yunstack.errors import Conflict

from ..conftest import need

pytestmark = pytest.mark.integration


@pytest.fixture
def work() -> Iterator[Path]:
    need(shutil.which("qemu-system-x86_64") is not None, "memory templates need QEMU")
    root = Path(tempfile.mkdtemp(prefix="yun-tpl-", dir="/tmp"))
    try:
        yield root
    finally:
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if entry.name.isdigit() and b"qemu-system" in cmdline and str(root).encode() in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def _console_answers(paths: InstancePaths, marker: str, timeout: float = 60.0) -> bool:
    """Type ``echo <marker>-$((6*7))`` on the serial console until ``<marker>-42`` comes back."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(paths.serial))
            sock.sendall(f"\x03echo {marker}-$((6*7))\n".encode())
            for _ in range(20):
                if f"{marker}-42" in paths.console.read_text(errors="replace"):
                    return True
                time.sleep(0.1)
    return False


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_guest_started_from_a_template_runs_on_and_leaves_the_template_file_alone(
        tiny_image: Path, work: Path) -> None:
    qemu = QemuConfig(accel="tcg")
    ram, state = work / "template.ram", work / "template.state"
    # No NIC, no config drive: a template holds no identity (each guest plugs in its own).
    spec = InstanceSpec(id=str(uuid.uuid4()), name="template", hostname="template", vcpus=1, memory_mib=128,
                        disks=root_disk(tiny_image, "qcow2", 1))
    tpl = InstancePaths(work / "template")
    tpl.dir.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(tiny_image), "-F", "qcow2", str(tpl.disk)],
                   check=True)
    await process.launch(build_argv(spec, tpl, qemu, "tcg", template_ram=ram, template_shared=True), tpl, spec.id)
    for _ in range(1200):
        if "YUNSTACK-READY" in tpl.console.read_text(errors="replace"):
            break
        await asyncio.sleep(0.1)
    assert _console_answers(tpl, "T")
    async with open_session(tpl.qmp, "template") as qmp:
        await template.save(qmp, state, "template", timeout=60)
        await qmp.execute("quit")
    before = _sha256(ram)

    clone = InstancePaths(work / "clone")
    clone.dir.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(tpl.disk), "-F", "qcow2", str(clone.disk)],
                   check=True)
    started = time.monotonic()
    # The template's own spec: every device and the memory must match (only paths may differ).
    await process.launch(build_argv(spec, clone, qemu, "tcg", incoming=True, template_ram=ram), clone, spec.id)
    async with open_session(clone.qmp, "clone") as qmp:
        await template.start(qmp, state, "clone", timeout=60)
        assert (await qmp.execute("query-status"))["status"] == "running"
    assert _console_answers(clone, "C")
    elapsed = time.monotonic() - started
    console = clone.console.read_text(errors="replace")
    assert "YUNSTACK-BOOT" not in console  # resumed, not booted
    assert elapsed < 30
    assert _sha256(ram) == before


# -- the driver: servers of a template-flavoured spec ------------------------------------------------

def _template_spec(harness: Any, name: str) -> InstanceSpec:
    instance_id = str(uuid.uuid4())
    drive = ConfigDrive(meta_data={"uuid": instance_id, "hostname": f"{name}.novalocal", "name": name},
                        user_data=TICKER)
    spec: InstanceSpec = harness.spec(id=instance_id, name=name, hostname=name, config_drive=drive,
                                      memory=MemoryBacking(template=True))
    return spec


async def _console_has(driver: Any, instance_id: str, pattern: str, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = await driver.console_output(instance_id)
        if re.search(pattern, text):
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{pattern!r} not on the console of {instance_id} within {timeout}s:\n{text[-1500:]}")


@pytest.mark.parametrize("harness", ["qemu"], indirect=True)
async def test_servers_of_a_template_spec_start_from_it_with_their_own_identity_and_move_like_any(
        harness: Any) -> None:
    driver = harness.driver
    await driver.init_host()
    first = _template_spec(harness, "first")
    await driver.spawn(first)  # no template yet: it boots, and the host makes one beside it
    await _console_has(driver, first.id, r"YUNSTACK-READY hostname=first ")
    await driver.templates.wait_builds()
    (made,) = [p for p in driver.templates.root.iterdir()]
    assert (made / "template.json").exists(), "the host made no template"
    key = made.name
    ram_before = _sha256(made / "ram")

    clones = [_template_spec(harness, f"clone{i}") for i in range(2)]
    for spec in clones:
        started = time.monotonic()
        await driver.spawn(spec)
        text = await _console_has(driver, spec.id, rf"YUNSTACK-READY hostname={spec.name} ")
        print(f"{spec.name}: spawn to YUNSTACK-READY {time.monotonic() - started:.2f} s")
        assert "YUNSTACK-RESUME" in text and "Linux version" not in text  # resumed, not booted
        assert "source=identity-port" in text  # its identity came over its port, no hot-plug
        assert not driver._paths(spec.id).clone_pending.exists()  # finished: an agent's start keeps it
        assert (await driver.balloon_stats(spec.id))["template"] == key
    # Its balloon never inflates: QEMU 7.2 would punch the pages out of the shared file.
    actual = (await driver.balloon_stats(clones[0].id))["actual"]
    with pytest.raises(Conflict, match="memory template"):
        await driver.set_balloon_target(clones[0].id, actual // 2)
    await driver.set_balloon_target(clones[0].id, actual)  # not inflating: allowed

    # A clone moves like any guest: the destination, built from the spec, takes its state, and
    # maps no template (its RAM came over the wire).
    moving = clones[1]
    last = max(await _ticks(driver, moving.id), default=0.0)
    target = await harness.peer.prepare_incoming(moving, "127.0.0.1", free_port_pair())
    await driver.send(moving.id, target, MigrationMode.PAUSED)
    await harness.peer.finish_incoming(moving.id)
    await driver.finish_outgoing(moving.id)
    assert (await harness.peer.get_info(moving.id)).power_state == PowerState.RUNNING
    assert await _wait_tick_after(harness.peer, moving.id, last) < last + 10  # the same guest, running on
    assert (await harness.peer.balloon_stats(moving.id))["template"] is None

    # Suspended and resumed, a clone is restored into RAM of its own.
    await driver.suspend(clones[0].id)
    await driver.resume(clones[0].id)
    last = max(await _ticks(driver, clones[0].id), default=0.0)
    assert await _wait_tick_after(driver, clones[0].id, last) > last
    assert (await driver.balloon_stats(clones[0].id))["template"] is None
    assert _sha256(made / "ram") == ram_before, "a clone changed the template's RAM file"

    for spec in (first, clones[0]):
        await driver.destroy(spec.id)
    await harness.peer.destroy(moving.id)
    # The template outlives its servers (the next one starts from it); an unfinished build does not.
    (driver.templates.root / f"{key}.part").mkdir()
    driver.templates.prune()
    assert [p.name for p in driver.templates.root.iterdir()] == [key]


@pytest.mark.parametrize("harness", ["qemu"], indirect=True)
async def test_a_template_past_its_age_is_succeeded_while_its_clones_run_on_the_retired_one(harness: Any) -> None:
    driver = harness.driver
    await driver.init_host()
    now = [time.time()]
    driver.templates._clock = lambda: now[0]  # the store's clock: a day passes in a line
    first = _template_spec(harness, "first")
    await driver.spawn(first)
    await _console_has(driver, first.id, r"YUNSTACK-READY hostname=first ")
    await driver.templates.wait_builds()
    old = _template_spec(harness, "old")
    await driver.spawn(old)
    assert "YUNSTACK-RESUME" in await _console_has(driver, old.id, r"YUNSTACK-READY hostname=old ")
    key = (await driver.balloon_stats(old.id))["template"]

    now[0] += 25 * 3600  # past template_max_age_hours (24): the next server boots, a successor is made
    fresh = _template_spec(harness, "fresh")
    await driver.spawn(fresh)
    text = await _console_has(driver, fresh.id, r"YUNSTACK-READY hostname=fresh ")
    assert "YUNSTACK-RESUME" not in text  # booted
    await driver.templates.wait_builds()
    [(retired_key, retired)] = list(driver.templates.retired())
    assert retired_key == key and (driver.templates.root / key / "template.json").exists()
    assert str(retired / "ram") in Path(f"/proc/{process.read_pid(driver._paths(old.id))}/maps").read_text()
    last = max(await _ticks(driver, old.id), default=0.0)
    assert await _wait_tick_after(driver, old.id, last) > last  # the old clone runs on
    newer = _template_spec(harness, "newer")
    await driver.spawn(newer)
    assert "YUNSTACK-RESUME" in await _console_has(driver, newer.id, r"YUNSTACK-READY hostname=newer ")
    assert (await driver.balloon_stats(newer.id))["template"] == key
    assert key in await driver.template_memory()  # both files' page cache, under the key

    await driver.destroy(old.id)  # the retired template's last clone
    await driver.template_memory()  # a memory manager pass prunes it
    assert not list(driver.templates.retired())
    for spec in (first, fresh, newer):
        await driver.destroy(spec.id)
