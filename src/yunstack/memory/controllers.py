"""Controllers: apply the policy's ``Actions`` through narrow interfaces.

- ``BalloonControl``: the compute driver's ``set_balloon_target`` (QMP ``balloon``).
- ``CgroupControl``: one memory cgroup per VM under a yunstack parent, which may carry a host budget.
- ``KsmControl``: the global KSM sysfs knobs; reads them back every period and writes what differs (other
  processes change them too, which it reports), and puts back what it found on ``restore``.
- ``SwapControl``: one swapfile yunstack owns (created, swapped on, removed); other swap areas are
  never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Protocol

from yunstack.cgroups import MemoryCgroups, leaf_name
from yunstack.errors import DriverError
from yunstack.memory.collectors import KSM_DIR
from yunstack.memory.model import CgroupSetting, KsmSettings

log = logging.getLogger(__name__)

_KSM_KNOBS = ("run", "pages_to_scan", "sleep_millisecs")


class BalloonControl(Protocol):
    """Sets a guest's balloon target (``ComputeDriver.set_balloon_target``)."""

    async def set_balloon_target(self, instance_id: str, target_bytes: int) -> None:
        """Ask the guest's balloon to leave it ``target_bytes`` of RAM."""


class CgroupControl:
    """Per-VM memory cgroups ``<parent>/<instance-id>`` and the parent's optional budget."""

    def __init__(self, cgroups: MemoryCgroups | None, parent: str) -> None:
        self.cgroups = cgroups if parent else None
        self.parent = parent
        self._applied: dict[str, CgroupSetting] = {}

    @property
    def available(self) -> bool:
        return self.cgroups is not None

    def prepare(self, budget_bytes: int = 0, budget_swap_bytes: int = -1) -> None:
        """Create the parent; with a budget, limit it (memory, and memory + swap)."""
        if self.cgroups is None:
            return
        self.cgroups.create(self.parent)
        if budget_bytes > 0:
            swap = None if budget_swap_bytes < 0 else budget_swap_bytes
            self.cgroups.set_limits(self.parent, limit=budget_bytes, swap_limit=swap)

    def apply(self, instance_id: str, setting: CgroupSetting) -> bool:
        """Apply one VM's setting if its cgroup exists and the setting changed; True if written."""
        if self.cgroups is None:
            return False
        name = leaf_name(self.parent, instance_id)
        if not self.cgroups.exists(name) or self._applied.get(instance_id) == setting:
            return False
        self.cgroups.set_limits(name, limit=setting.limit, swap_allowed=setting.swap_allowed,
                                soft_limit=setting.soft_limit, swappiness=setting.swappiness)
        self._applied[instance_id] = setting
        return True

    def forget(self, instance_id: str) -> None:
        self._applied.pop(instance_id, None)

    def release_budget(self) -> None:
        """Lift the parent's limits (the guests outlive the manager; they must not keep a stale budget)."""
        if self.cgroups is not None and self.cgroups.exists(self.parent):
            self.cgroups.set_limits(self.parent, limit=None)

    def remove_if_unused(self) -> bool:
        """At shutdown: remove the parent (and dead guests' leaves) unless a guest still runs in it."""
        return self.cgroups is None or self.cgroups.remove_if_unused(self.parent)


class KsmControl:
    """The KSM knobs.  ``snapshot`` records the host's values once; ``restore`` writes them back.

    ``apply`` is idempotent: it reads every knob back from sysfs (three small reads) and writes the
    ones that differ, so a knob another process changed is put back at the next period instead of
    being lost.  Such changes are listed in ``foreign`` (the manager adds them to the ledger's reasons).
    """

    def __init__(self, directory: Path = KSM_DIR) -> None:
        self.directory = directory
        self._original: dict[str, str] | None = None
        self._current: dict[str, str] = {}
        self.foreign: list[str] = []

    @property
    def available(self) -> bool:
        return (self.directory / "run").exists() and os.access(self.directory / "run", os.W_OK)

    def snapshot(self) -> dict[str, str]:
        if self._original is None:
            self._original = {k: (self.directory / k).read_text().strip() for k in _KSM_KNOBS}
        return dict(self._original)

    def apply(self, settings: KsmSettings) -> bool:
        """Write the knobs whose sysfs value differs from ``settings``; True if anything was written."""
        self.snapshot()
        wanted = {"pages_to_scan": str(settings.pages_to_scan),
                  "sleep_millisecs": str(settings.sleep_millisecs), "run": str(settings.run)}
        self.foreign = []
        changed = False
        for knob, value in wanted.items():  # scan rate first, then run
            try:
                found: str | None = (self.directory / knob).read_text().strip()
            except OSError:
                found = None
            mine = self._current.get(knob)
            if mine is not None and found is not None and found != mine:
                self.foreign.append(f"KSM {knob} was changed from {mine} to {found} by another process")
            if found == value:
                self._current[knob] = value
                continue
            self._write(knob, value)
            changed = True
        return changed

    def restore(self) -> None:
        """Put back the values found by ``snapshot`` (run last, so no burst at our scan rate)."""
        if self._original is None:
            return
        for knob in ("pages_to_scan", "sleep_millisecs", "run"):
            with contextlib.suppress(DriverError):
                self._write(knob, self._original[knob])
        self._current.clear()

    def _write(self, knob: str, value: str) -> None:
        try:
            (self.directory / knob).write_text(value)
        except OSError as exc:
            raise DriverError(detail=f"writing KSM {knob}={value}: {exc.strerror or exc}") from exc
        self._current[knob] = value


class SwapControl:
    """A swapfile of ``size_bytes`` at ``directory/yunstack.swap`` that only yunstack uses and removes."""

    def __init__(self, directory: Path, size_bytes: int, priority: int = 0, *,
                 timeout: float = 300.0) -> None:
        self.path = directory / "yunstack.swap"
        self.size_bytes = size_bytes
        self.priority = priority
        self.timeout = timeout

    def active(self) -> bool:
        """True when our file is in /proc/swaps."""
        try:
            lines = Path("/proc/swaps").read_text().splitlines()[1:]
        except OSError:
            return False
        target = str(self.path.resolve())
        return any(line.split()[0] == target for line in lines if line.split())

    async def enable(self) -> None:
        """Create, format and swap on the file (idempotent)."""
        if self.active():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        mib = max(1, self.size_bytes >> 20)
        try:
            await self._run("fallocate", "-l", str(mib << 20), str(self.path))
        except DriverError:
            await self._run("dd", "if=/dev/zero", f"of={self.path}", "bs=1M", f"count={mib}", "status=none")
        self.path.chmod(0o600)
        await self._run("mkswap", "-q", str(self.path))
        try:
            await self._run("swapon", "-p", str(self.priority), str(self.path))
        except DriverError:  # some filesystems refuse fallocated swapfiles ("has holes"): write zeros
            await self._run("dd", "if=/dev/zero", f"of={self.path}", "bs=1M", f"count={mib}", "status=none")
            await self._run("mkswap", "-q", str(self.path))
            await self._run("swapon", "-p", str(self.priority), str(self.path))

    async def disable(self) -> None:
        """swapoff (pages come back into RAM) and remove the file (idempotent)."""
        if self.active():
            await self._run("swapoff", str(self.path))
        self.path.unlink(missing_ok=True)

    async def _run(self, *argv: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
        except OSError as exc:
            raise DriverError(detail=f"cannot run {argv[0]}: {exc}") from exc
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise DriverError(detail=f"{argv[0]} did not finish in {self.timeout}s") from exc
        if proc.returncode != 0:
            raise DriverError(detail=f"{' '.join(argv)} failed ({proc.returncode}): "
                                     f"{out.decode(errors='replace').strip()}")
