"""Fixtures for the compute driver contract suite: a bootable tiny image and driver harnesses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from yunstack import cgroups
from yunstack.compute.driver import ComputeDriver, ConfigDrive, InstanceSpec, root_disk
from yunstack.compute.fake import FakeDriver
from yunstack.compute.qemu.driver import QemuDriver
from yunstack.config import Config, QemuConfig, ServerConfig

from ..conftest import need

BUILD_SCRIPT = Path("/work/shared/research/build-tiny-image.sh")
READY = re.compile(r"(YUNSTACK|TINYCLOUD)-READY")


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bootable guest disk that prints a READY marker on the serial console."""
    out = tmp_path_factory.mktemp("tiny-image")
    try:
        from yunstack.image.tiny.build import build_tiny_image
    except ImportError:
        pass
    else:
        try:
            return build_tiny_image(out)
        except Exception:  # still being built by its owner: fall back to the research script
            pass
    subprocess.run(["bash", str(BUILD_SCRIPT), str(out)], check=True, capture_output=True, timeout=600)
    return out / "tiny.qcow2"


@dataclass
class Harness:
    """One driver under test plus what the suite needs around it."""

    kind: str
    driver: Any
    image: Path
    root: Path | None = None
    config: Config | None = None
    specs: list[InstanceSpec] = field(default_factory=list)
    peer: Any = None  # a second driver with its own instance directory: the other "host"

    def spec(self, *, disk_gib: int = 1, base_image: Path | None = None, **changes: Any) -> InstanceSpec:
        """A spec with one root overlay of ``disk_gib`` on ``base_image`` (the tiny image)."""
        instance_id = str(uuid.uuid4())
        values: dict[str, Any] = {
            "id": instance_id, "name": "vm", "hostname": "vm1", "vcpus": 1, "memory_mib": 160,
            "disks": root_disk(base_image or self.image, "qcow2", disk_gib),
            "config_drive": ConfigDrive(meta_data={"uuid": instance_id, "hostname": "vm1.novalocal",
                                                   "name": "vm"}, user_data=b"#!/bin/sh\necho hi\n"),
        }
        values.update(changes)
        spec = InstanceSpec(**values)
        self.specs.append(spec)
        return spec

    def restart(self) -> ComputeDriver:
        """A new driver object on the same host, as after a control-plane restart."""
        if self.kind == "fake":
            return self.driver  # type: ignore[no-any-return]
        assert self.config is not None
        return QemuDriver(self.config)

    async def kill_hard(self, instance_id: str) -> None:
        """The guest's process dies as under ``kill -9``."""
        if self.kind == "fake":
            self.driver.simulate_crash(instance_id)
            return
        pid = (await self.driver.get_info(instance_id)).pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not _alive(pid):
                return
            await asyncio.sleep(0.05)

    async def wait_ready(self, instance_id: str, boots: int = 1, timeout: float = 120.0) -> None:
        """Wait until the console shows ``boots`` READY markers."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            console = await self.driver.console_output(instance_id)
            if len(READY.findall(console)) >= boots:
                return
            if loop.time() > deadline:
                tail = "\n".join(console.splitlines()[-15:])
                raise AssertionError(f"no READY marker #{boots} within {timeout}s; console tail:\n{tail}")
            await asyncio.sleep(0.2)

    def processes(self, instance_id: str) -> list[int]:
        """PIDs of live QEMU processes of ``instance_id``."""
        return [pid for pid, cmd in _qemu_processes() if f"guest={instance_id}," in cmd]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _qemu_processes() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmd and _alive(int(entry.name)):
            found.append((int(entry.name), cmd))
    return found


@pytest.fixture(params=["fake", pytest.param("qemu", marks=pytest.mark.integration)])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The driver under test; the qemu one kills every QEMU it started when the test ends."""
    if request.param == "fake":
        yield Harness("fake", FakeDriver(hostname="fake-1"), Path("/nonexistent/base.qcow2"),
                      peer=FakeDriver(hostname="fake-2"))
        return
    image = request.getfixturevalue("tiny_image")
    # Short state dirs: the QMP socket path must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="ys-", dir="/tmp"))
    peer_root = Path(tempfile.mkdtemp(prefix="ys-", dir="/tmp"))
    config, peer_config = (Config(server=ServerConfig(state_dir=str(r)),
                                  qemu=QemuConfig(accel="tcg", stop_timeout=30.0)) for r in (root, peer_root))
    # The peer is another host: a cgroup parent of its own, or a guest migrating between the two
    # would be one cgroup on both sides (same instance id) and the source could not remove it.
    peer_cgroups = f"yunstack/peer-{peer_root.name}"
    try:
        yield Harness("qemu", QemuDriver(config), image, root, config,
                      peer=QemuDriver(peer_config, cgroup_parent=peer_cgroups))
    finally:
        for pid, cmd in _qemu_processes():
            if str(root) in cmd or str(peer_root) in cmd:
                os.kill(pid, signal.SIGKILL)
        _remove_cgroups(peer_cgroups)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(peer_root, ignore_errors=True)


def _remove_cgroups(parent: str) -> None:
    """Remove a driver's cgroup parent and its guests' leaves once their killed processes are gone."""
    tree = cgroups.detect()
    if tree is None:
        return
    leaves = [p.name for p in tree.path(parent).glob("*") if p.is_dir()]
    for leaf in leaves:
        tree.remove(f"{parent}/{leaf}", timeout=10.0)  # waits while a killed QEMU is being reaped
    tree.remove(parent, timeout=1.0)


def free_port_pair() -> int:
    """A port P on 127.0.0.1 with P and P+1 free (memory and disks of one incoming migration)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as second:
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


# -- a throw-away Ceph cluster for the rbd volume backend --------------------------------------------

CEPH_LAB = Path(__file__).resolve().parents[2] / "scripts" / "ceph-lab"
QEMU_RBD = Path("/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so")


@dataclass(frozen=True)
class CephLab:
    """A running single-node cluster (``scripts/ceph-lab``) and its rbd client, ``client.yunstack``."""

    conf: str
    pool: str
    user: str

    def rbd(self, *args: str) -> str:
        return subprocess.run(["rbd", "--conf", self.conf, "--id", self.user, *args], check=True,
                              capture_output=True, text=True, timeout=120).stdout

    def new_namespace(self) -> str:
        """A new, empty RBD namespace in the pool: one test's own place."""
        namespace = f"t{uuid.uuid4().hex[:12]}"
        self.rbd("namespace", "create", f"{self.pool}/{namespace}")
        return namespace

    def ls(self, namespace: str) -> list[dict[str, Any]]:
        """``rbd ls -l``: every image and snapshot in the namespace."""
        found: list[dict[str, Any]] = json.loads(self.rbd("ls", "-l", "--format", "json", f"{self.pool}/{namespace}")
                                                 or "[]")
        return found

    def du(self, namespace: str, image: str) -> int:
        """Bytes the image itself has allocated (not counting its parents)."""
        out = json.loads(self.rbd("du", "--format", "json", f"{self.pool}/{namespace}/{image}"))
        return int(sum(i["used_size"] for i in out["images"] if "snapshot" not in i))


@pytest.fixture(scope="session")
def ceph_lab() -> Iterator[CephLab]:
    """One mon and one OSD on a sparse file for the whole session (about 5 s to start, 80 MiB)."""
    need(shutil.which("ceph-mon") is not None and shutil.which("ceph-osd") is not None
         and shutil.which("rbd") is not None and QEMU_RBD.exists(),
         "the rbd backend's tests need Ceph and QEMU's rbd driver (scripts/install-system)")
    home = Path(tempfile.mkdtemp(prefix="yun-ceph-", dir="/tmp"))
    # Output to files, not pipes: were a daemon to keep a pipe open, reading it would never end.
    with tempfile.TemporaryFile("w+") as out:
        try:
            done = subprocess.run([str(CEPH_LAB), "start", str(home)], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=300)
            out.seek(0)
            text = out.read()
            if done.returncode != 0:
                pytest.fail(f"scripts/ceph-lab start failed:\n{text[-4000:]}")
            env = dict(line.split("=", 1) for line in text.splitlines() if line.startswith("CEPH_"))
            yield CephLab(conf=env["CEPH_CONF"], pool=env["CEPH_POOL"], user=env["CEPH_USER"])
        finally:
            subprocess.run([str(CEPH_LAB), "stop", str(home)], stdout=out, stderr=subprocess.STDOUT, timeout=120)
