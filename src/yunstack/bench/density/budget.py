"""The host memory budget of one run: a parent memory cgroup holding every QEMU of the run.

cgroup v1 (this dev box): ``memory.limit_in_bytes`` = B and ``memory.memsw.limit_in_bytes`` = B + S;
v2: ``memory.max`` = B and ``memory.swap.max`` = S.  Both go through ``yunstack.cgroups``.
The QEMU driver puts each guest into ``<parent>/<instance-id>``, so the budget's usage, failcnt and
``oom_kill`` counter cover all guests of the run and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass

from yunstack.cgroups import CgroupUsage, MemoryCgroups, detect
from yunstack.errors import DriverError, DriverMisconfigured


@dataclass(frozen=True, kw_only=True)
class BudgetReading:
    """One read of the budget cgroup, summed over its leaves where the parent does not count."""

    usage: int
    limit: int | None
    swap: int
    failcnt: int
    oom_kill: int


class Budget:
    """A uniquely named parent cgroup with limit B (+ swap S); ``close`` removes it and its leaves."""

    def __init__(self, limit_bytes: int, swap_bytes: int = 0, *, cgroups: MemoryCgroups | None = None,
                 name: str | None = None) -> None:
        found = cgroups or detect()
        if found is None:
            raise DriverMisconfigured(detail="the density benchmark needs a writable memory cgroup hierarchy")
        self.cgroups: MemoryCgroups = found
        self.name = name or f"ys-bench-{uuid.uuid4().hex[:8]}"
        self.limit_bytes = limit_bytes
        self.swap_bytes = swap_bytes

    @property
    def version(self) -> int:
        return self.cgroups.version

    def open(self) -> Budget:
        self.cgroups.create(self.name)
        self.set_limit(self.limit_bytes)
        return self

    def set_limit(self, limit_bytes: int) -> None:
        """Change B (the spike test sets it once the guests are steady)."""
        self.cgroups.set_limits(self.name, limit=limit_bytes, swap_limit=self.swap_bytes)
        self.limit_bytes = limit_bytes

    def read(self) -> BudgetReading:
        usage: CgroupUsage = self.cgroups.read(self.name)
        oom = usage.oom_kill
        if self.version == 1:  # v1 counts OOM kills in the cgroup whose limit was hit: add the leaves'
            oom += sum(self.leaf(leaf).oom_kill for leaf in self.leaves())
        return BudgetReading(usage=usage.usage, limit=usage.limit, swap=usage.swap or 0, failcnt=usage.failcnt,
                             oom_kill=oom)

    def leaves(self) -> list[str]:
        path = self.cgroups.path(self.name)
        return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []

    def leaf(self, leaf: str) -> CgroupUsage:
        return self.cgroups.read(f"{self.name}/{leaf}")

    def move(self, leaf: str, pid: int) -> None:
        self.cgroups.move(f"{self.name}/{leaf}", pid)

    def close(self) -> None:
        """Kill whatever is still inside (by PID, only in our own cgroup) and remove the tree."""
        if not self.cgroups.exists(self.name):
            return
        for leaf in self.leaves():
            for pid in self.cgroups.pids(f"{self.name}/{leaf}"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        for leaf in self.leaves():
            self.cgroups.remove(f"{self.name}/{leaf}", timeout=5.0)
        with contextlib.suppress(DriverError):
            self.cgroups.set_limits(self.name, limit=None)
        self.cgroups.remove(self.name, timeout=5.0)

    def __enter__(self) -> Budget:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
