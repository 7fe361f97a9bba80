"""The guests of one benchmark run: real QEMU (TCG) through ``QemuDriver``, in the budget cgroup.

Instances live under a short directory in /tmp (the QMP socket path limit).  ``close`` stops a memory
template still being made, destroys every guest it started, kills, by PID, any QEMU whose command
line names its directory, and removes that directory (templates included) and its QMP socket directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from yunstack.bench.density.budget import Budget
from yunstack.bench.density.workloads import Workload
from yunstack.compute.driver import ConfigDrive, InstanceSpec, MemoryBacking, PowerState, root_disk
from yunstack.compute.qemu.driver import QemuDriver, socket_dir
from yunstack.config import Config, QemuConfig, ServerConfig
from yunstack.errors import YunError
from yunstack.memory.model import MIB

READY = re.compile(r"YUNSTACK-READY")
MEMLOAD = re.compile(r"^MEMLOAD mib=(\d+) touched=\S+ rate=([\d.]+) elapsed=\S+ p50_us=([\d.]+) p95_us=([\d.]+)",
                     re.MULTILINE)
OOM = re.compile(r"Out of memory|oom-kill|Killed process|invoked oom-killer")


@dataclass
class Guest:
    """One guest of the run and how far its console has been read."""

    id: str
    workload: Workload
    memory_mib: int
    spawned_at: float
    ready_s: float | None = None
    mark: int = 0  # MEMLOAD lines before the current window
    marked_at: float = 0.0
    history: list[float] = field(default_factory=list)  # window throughputs

    @property
    def configured(self) -> int:
        return self.memory_mib * MIB


@dataclass(frozen=True, kw_only=True)
class Window:
    """A guest's memload lines since its mark: throughput = median(rate / requested)."""

    lines: int
    throughput: float | None
    p95_us: float | None


class Fleet:
    """Spawns, watches and removes the guests of one run."""

    def __init__(self, image: Path, budget: Budget) -> None:
        self.image = image
        self.budget = budget
        self.root = Path(tempfile.mkdtemp(prefix="ysb-", dir="/tmp"))
        config = Config(server=ServerConfig(state_dir=str(self.root)),
                        qemu=QemuConfig(accel="tcg", stop_timeout=5.0))
        self.driver = QemuDriver(config, cgroup_parent=budget.name, stats_interval=1)
        self.sockets = socket_dir(config.instances_path)  # the driver's QMP sockets (/run/yunstack/<key>)
        self.guests: dict[str, Guest] = {}

    async def spawn(self, workload: Workload, memory_mib: int, memory: MemoryBacking) -> Guest:
        iid = str(uuid.uuid4())
        spec = InstanceSpec(
            id=iid, name=f"d{len(self.guests)}", hostname="density", vcpus=1, memory_mib=memory_mib,
            disks=root_disk(self.image, size_gib=1),
            config_drive=ConfigDrive(meta_data={"uuid": iid, "hostname": "density"},
                                     user_data=workload.user_data.encode()),
            memory=memory)
        guest = Guest(id=iid, workload=workload, memory_mib=memory_mib, spawned_at=time.monotonic())
        self.guests[iid] = guest
        await self.driver.spawn(spec)
        return guest

    async def wait_ready(self, guest: Guest, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY.search(await self.console(guest)):
                guest.ready_s = time.monotonic() - guest.spawned_at
                return True
            await asyncio.sleep(0.3)
        return False

    async def console(self, guest: Guest) -> str:
        try:
            return (await self.driver.console_output(guest.id)).replace("\r", "")
        except YunError:
            return ""

    async def mark(self) -> None:
        """Start a new measurement window for every guest."""
        now = time.monotonic()
        for guest in self.guests.values():
            guest.mark = len(MEMLOAD.findall(await self.console(guest)))
            guest.marked_at = now

    async def window(self, guest: Guest) -> Window:
        lines = MEMLOAD.findall(await self.console(guest))[guest.mark:]
        period = guest.workload.period
        if not lines or period <= 0:
            return Window(lines=len(lines), throughput=None, p95_us=None)
        ratios = [float(rate) / max(int(mib) / period, 0.5) for mib, rate, _, _ in lines]
        return Window(lines=len(lines), throughput=statistics.median(ratios),
                      p95_us=statistics.median(float(p95) for *_, p95 in lines))

    async def dead(self) -> list[str]:
        """Guests whose QEMU is no longer running."""
        gone = []
        for guest in self.guests.values():
            try:
                info = await self.driver.get_info(guest.id)
            except YunError:
                gone.append(guest.id)
                continue
            if info.power_state != PowerState.RUNNING:
                gone.append(guest.id)
        return gone

    async def guest_ooms(self) -> list[str]:
        return [g.id for g in self.guests.values() if OOM.search(await self.console(g))]

    async def remove(self, iid: str) -> None:
        """Destroy one guest (the hold phase steps down a guest at a time)."""
        with contextlib.suppress(YunError, OSError):
            await self.driver.destroy(iid)
        self.guests.pop(iid, None)

    async def close(self) -> None:
        await self.driver.templates.close()  # a template still being made: its guest and files go
        for iid in list(self.guests):
            with contextlib.suppress(YunError, OSError):
                await self.driver.destroy(iid)
        for pid in qemu_pids(str(self.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.sockets, ignore_errors=True)
        self.guests.clear()


def qemu_pids(containing: str | None = None, *, excluding: str | None = None) -> list[int]:
    """PIDs of QEMU processes, those whose cmdline contains / does not contain a string."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" not in cmd:
            continue
        if containing is not None and containing not in cmd:
            continue
        if excluding is not None and excluding in cmd:
            continue
        found.append(int(entry.name))
    return found


def guest_ram_rss(pid: int, configured: int) -> int | None:
    """Resident bytes of the guest-RAM mapping of a QEMU (the anonymous VMA sized like the guest)."""
    best: tuple[int, int] | None = None
    size = rss = 0
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            start, _, end = head[0].partition("-")
            with contextlib.suppress(ValueError):
                size = int(end, 16) - int(start, 16)
        elif line.startswith("Rss:") and configured <= size <= configured + 64 * MIB:
            rss = int(line.split()[1]) * 1024
            if best is None or size > best[0]:
                best = (size, rss)
    return best[1] if best else None
