"""Memory templates with a real QEMU: a guest started from a template runs on from where the
template stopped, and the template's RAM file is not changed by it (docs/explanation/memory-templates.md)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from yunstack.compute.driver import InstanceSpec, root_disk
from yunstack.compute.qemu import process, template
from yunstack.compute.qemu.cmdline import InstancePaths, build_argv
from yunstack.compute.qemu.qmp import open_session
from yunstack.config import QemuConfig

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
