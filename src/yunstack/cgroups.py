"""A small memory-cgroup adapter for v1 (``memory`` controller) and v2 (unified), auto-detected.

Names are relative to the hierarchy's root, e.g. ``yunstack/<instance-id>``.  Used by the memory
controllers and by the QEMU driver (which puts each QEMU into its own leaf).  A leaf module: it
imports nothing of ours but ``errors``.

Limits are bytes or ``None`` (unlimited).  Swap is always a separate allowance: v1 expresses it as
``memsw`` = memory + swap, v2 as ``memory.swap.max``; ``swap_allowed=False`` forbids it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from yunstack.errors import DriverError

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_UNLIMITED = 1 << 62  # v1 reports "unlimited" as PAGE_COUNTER_MAX * PAGE_SIZE, about 2**63


@dataclass(frozen=True, kw_only=True)
class CgroupUsage:
    """One read of a memory cgroup."""

    usage: int
    limit: int | None
    swap: int | None
    failcnt: int
    oom_kill: int
    soft_limit: int | None = None
    swappiness: int | None = None


class MemoryCgroups:
    """The memory cgroup hierarchy of this host; ``detect()`` picks v1 or v2."""

    def __init__(self, root: Path, version: int) -> None:
        self.root = root
        self.version = version

    # -- tree --------------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        clean = name.strip("/")
        if not clean or ".." in clean.split("/"):
            raise ValueError(f"bad cgroup name {name!r}")
        return self.root / clean

    def exists(self, name: str) -> bool:
        return self.path(name).is_dir()

    def create(self, name: str) -> Path:
        """Create ``name`` and its parents (v2: enabling the memory controller on the way)."""
        path = self.path(name)
        parts = path.relative_to(self.root).parts
        current = self.root
        for part in parts:
            if self.version == 2:
                self._enable_memory(current)
            current = current / part
            with _translate(f"creating cgroup {current}"):
                current.mkdir(exist_ok=True)
        return path

    def move(self, name: str, pid: int) -> None:
        """Put process ``pid`` (all its threads) into ``name``, creating it if needed."""
        path = self.create(name)
        with _translate(f"moving pid {pid} into cgroup {path}"):
            (path / "cgroup.procs").write_text(f"{pid}\n")

    def pids(self, name: str) -> list[int]:
        try:
            return [int(x) for x in (self.path(name) / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def remove(self, name: str, timeout: float = 2.0) -> bool:
        """Remove an empty cgroup; retries briefly while a just-killed process is being reaped."""
        path = self.path(name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)

    def remove_if_unused(self, name: str) -> bool:
        """Remove ``name`` and the empty cgroups below it when no process lives anywhere in it.

        A busy leaf (a running guest) makes its rmdir fail, and then the parent's too: both stay.
        Children that vanish while we walk (a guest destroyed meanwhile) are fine.
        """
        path = self.path(name)
        try:
            children = [entry for entry in path.iterdir() if entry.is_dir()]
        except FileNotFoundError:
            return True
        empty = True
        for child in children:
            empty = self.remove_if_unused(f"{name.strip('/')}/{child.name}") and empty
        return empty and self.remove(name, timeout=0.0)

    # -- limits ------------------------------------------------------------------------------

    def set_limits(self, name: str, *, limit: int | None, swap_allowed: bool = True,
                   swap_limit: int | None = None, soft_limit: int | None = None,
                   swappiness: int | None = None) -> None:
        """Set the hard limit, the swap allowance, the soft limit and (v1) swappiness."""
        path = self.path(name)
        with _translate(f"setting limits of cgroup {path}"):
            if self.version == 1:
                self._set_v1(path, limit, swap_allowed, swap_limit, soft_limit, swappiness)
            else:
                _write(path / "memory.max", _v2(limit))
                swap = swap_limit if swap_allowed else 0
                if (path / "memory.swap.max").exists():
                    _write(path / "memory.swap.max", _v2(swap))
                _write(path / "memory.low", str(0))
                _write(path / "memory.high", _v2(soft_limit))

    def _set_v1(self, path: Path, limit: int | None, swap_allowed: bool, swap_limit: int | None,
                soft_limit: int | None, swappiness: int | None) -> None:
        memsw_file = path / "memory.memsw.limit_in_bytes"
        mem = -1 if limit is None else limit
        if not swap_allowed:
            memsw = mem
        elif swap_limit is None or limit is None:
            memsw = -1
        else:
            memsw = limit + swap_limit
        # memsw must stay >= the memory limit at every moment: order the two writes.
        current = _read_int(path / "memory.limit_in_bytes")
        raising = mem == -1 or (current is not None and mem > current)
        has_memsw = memsw_file.exists()
        if raising and has_memsw:
            _write(memsw_file, str(memsw))
        _write(path / "memory.limit_in_bytes", str(mem))
        if not raising and has_memsw:
            _write(memsw_file, str(memsw))
        _write(path / "memory.soft_limit_in_bytes", str(-1 if soft_limit is None else soft_limit))
        if swappiness is not None:
            _write(path / "memory.swappiness", str(swappiness))

    def read(self, name: str) -> CgroupUsage:
        """Usage, limit, swap in use, failcnt (v2: events max) and oom kills."""
        path = self.path(name)
        with _translate(f"reading cgroup {path}"):
            if self.version == 1:
                usage = _read_int(path / "memory.usage_in_bytes") or 0
                memsw = _read_int(path / "memory.memsw.usage_in_bytes")
                stat = _keyed(path / "memory.stat")
                oom = _keyed(path / "memory.oom_control")
                # ``swap`` in memory.stat is the group's own; ``total_swap`` counts its children too
                # (a parent such as a budget holds no process of its own: its ``swap`` is always 0).
                swap = stat.get("total_swap", stat.get("swap", None if memsw is None else max(0, memsw - usage)))
                return CgroupUsage(
                    usage=usage, limit=_limit(_read_int(path / "memory.limit_in_bytes")),
                    swap=swap, failcnt=_read_int(path / "memory.failcnt") or 0,
                    oom_kill=oom.get("oom_kill", 0),
                    soft_limit=_limit(_read_int(path / "memory.soft_limit_in_bytes")),
                    swappiness=_read_int(path / "memory.swappiness"))
            events = _keyed(path / "memory.events")
            return CgroupUsage(
                usage=_read_int(path / "memory.current") or 0, limit=_read_v2(path / "memory.max"),
                swap=_read_int(path / "memory.swap.current"), failcnt=events.get("max", 0),
                oom_kill=events.get("oom_kill", 0), soft_limit=_read_v2(path / "memory.high"))

    def _enable_memory(self, directory: Path) -> None:
        control = directory / "cgroup.subtree_control"
        with contextlib.suppress(FileNotFoundError):
            if "memory" not in control.read_text().split():
                with _translate(f"enabling the memory controller in {directory}"):
                    _write(control, "+memory")


def detect(root: Path = CGROUP_ROOT) -> MemoryCgroups | None:
    """The memory hierarchy of this host (v2 if it has the memory controller, else v1), or None."""
    try:
        if "memory" in (root / "cgroup.controllers").read_text().split():
            return MemoryCgroups(root, 2)
    except OSError:
        pass
    v1 = root / "memory"
    if (v1 / "memory.limit_in_bytes").exists() and os.access(v1, os.W_OK):
        return MemoryCgroups(v1, 1)
    return None


def leaf_name(parent: str, instance_id: str) -> str:
    """The cgroup of one VM: ``<parent>/<instance-id>``."""
    return f"{parent.strip('/')}/{instance_id}"


@contextlib.contextmanager
def _translate(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise DriverError(detail=f"{what}: {exc.strerror or exc}") from exc


def _write(path: Path, value: str) -> None:
    with path.open("w") as fh:
        fh.write(value)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _read_v2(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return None if text == "max" else int(text)


def _keyed(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                values[key] = int(value)
    except FileNotFoundError:
        pass
    return values


def _limit(value: int | None) -> int | None:
    return None if value is None or value >= _V1_UNLIMITED else value


def _v2(value: int | None) -> str:
    return "max" if value is None else str(value)
