"""Collectors: read the host and each guest once per period and return frozen snapshots.

Sources: ``/proc/meminfo``, ``/proc/pressure/memory``, ``/sys/kernel/mm/ksm/*`` and the yunstack
budget cgroup for the host; for each guest the balloon (QMP through the driver),
``/proc/PID/smaps_rollup``, ``/proc/PID/status``, ``/proc/PID/ksm_stat`` and its memory cgroup.

A guest whose sample fails is left out of this period (``CollectionError``, logged by the
manager); a host that cannot be read at all stops the manager (``HostUnreadable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from yunstack.cgroups import MemoryCgroups, leaf_name
from yunstack.compute.driver import InstanceInfo, PowerState
from yunstack.errors import DriverError, DriverMisconfigured, DriverUnavailable, YunError
from yunstack.memory.model import PAGE, GuestStats, HostStats, KsmStats

_UNSET = (1 << 64) - 1  # QEMU reports a stat the guest never sent as 2**64 - 1
KSM_DIR = Path("/sys/kernel/mm/ksm")


class CollectionError(DriverUnavailable):
    """Raised when one guest could not be sampled this period; the others go on."""

    message = "Memory stats of {instance_id} unavailable: {detail}"


class HostUnreadable(DriverMisconfigured):
    """Raised when the host's memory statistics cannot be read at all; the manager stops."""

    message = "Host memory statistics unreadable: {detail}"


class Hypervisor(Protocol):
    """The slice of ``ComputeDriver`` the memory manager needs (QemuDriver and FakeDriver have it)."""

    async def list_instances(self) -> list[InstanceInfo]:
        """Every guest on this host with its power state and PID."""

    async def balloon_stats(self, instance_id: str) -> dict[str, Any]:
        """``{"actual": bytes, "stats": {"stat-...": n}, "last_update": int, "template": key | None}``."""

    async def rss_bytes(self, instance_id: str) -> int:
        """Resident memory of the guest's process."""


# ------------------------------------------------------------------------------------- parsers


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as bytes (``kB`` lines are converted; page counts stay counts)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        with contextlib.suppress(ValueError):
            values[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def parse_psi(text: str) -> tuple[float, float]:
    """(some avg10, full avg10) from a PSI file."""
    some = full = 0.0
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        if line.startswith("some"):
            some = float(fields.get("avg10", 0.0))
        elif line.startswith("full"):
            full = float(fields.get("avg10", 0.0))
    return some, full


def parse_keyed(text: str) -> dict[str, str]:
    """``key value`` or ``key: value`` lines (ksm_stat, smaps_rollup, status) -> raw strings."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":") if ":" in line else line.partition(" ")
        values[key.strip()] = rest.strip()
    return values


def _kb(values: dict[str, str], key: str) -> int | None:
    raw = values.get(key)
    if raw is None:
        return None
    try:
        return int(raw.split()[0]) * 1024
    except (ValueError, IndexError):
        return None


def read_ksm(directory: Path = KSM_DIR) -> KsmStats:
    """The KSM sysfs knobs and counters; ``available=False`` when the kernel has no KSM."""
    if not (directory / "run").exists():
        return KsmStats(available=False)

    def value(name: str, default: int | None = 0) -> int | None:
        try:
            return int((directory / name).read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return default

    return KsmStats(
        run=value("run") or 0, pages_to_scan=value("pages_to_scan") or 0,
        sleep_millisecs=value("sleep_millisecs") or 0, pages_shared=value("pages_shared") or 0,
        pages_sharing=value("pages_sharing") or 0, pages_unshared=value("pages_unshared") or 0,
        pages_volatile=value("pages_volatile") or 0, full_scans=value("full_scans") or 0,
        zero_pages=value("ksm_zero_pages") or 0, general_profit=value("general_profit", None))


def balloon_fields(raw: dict[str, Any]) -> dict[str, int | None]:
    """Our names for the virtio-balloon ``stat-*`` values; a stat never sent becomes None."""
    stats = raw.get("stats") or {}

    def stat(name: str) -> int | None:
        value = stats.get(name)
        return None if value is None or int(value) >= _UNSET else int(value)

    return {"guest_free": stat("stat-free-memory"), "guest_total": stat("stat-total-memory"),
            "guest_available": stat("stat-available-memory"), "guest_disk_caches": stat("stat-disk-caches"),
            "major_faults": stat("stat-major-faults"), "minor_faults": stat("stat-minor-faults"),
            "swap_in": stat("stat-swap-in"), "swap_out": stat("stat-swap-out")}


# ------------------------------------------------------------------------------------- host


class HostCollector:
    """Samples the host: meminfo, PSI, KSM and (when configured) the budget cgroup."""

    def __init__(self, *, proc: Path = Path("/proc"), ksm_dir: Path = KSM_DIR,
                 cgroups: MemoryCgroups | None = None, budget_cgroup: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.proc = proc
        self.ksm_dir = ksm_dir
        self.cgroups = cgroups
        self.budget_cgroup = budget_cgroup
        self.clock = clock

    def collect(self) -> HostStats:
        try:
            mem = parse_meminfo((self.proc / "meminfo").read_text())
        except OSError as exc:
            raise HostUnreadable(detail=str(exc)) from exc
        if "MemTotal" not in mem:
            raise HostUnreadable(detail="no MemTotal in meminfo")
        some = full = cpu_some = 0.0
        with contextlib.suppress(OSError):
            some, full = parse_psi((self.proc / "pressure" / "memory").read_text())
        with contextlib.suppress(OSError):
            cpu_some, _ = parse_psi((self.proc / "pressure" / "cpu").read_text())
        swapped_in = swapped_out = None
        with contextlib.suppress(OSError, ValueError):
            vmstat = dict(line.split(None, 1) for line in (self.proc / "vmstat").read_text().splitlines() if line)
            swapped_in, swapped_out = int(vmstat["pswpin"]) * PAGE, int(vmstat["pswpout"]) * PAGE
        budget_limit = budget_usage = None
        if self.cgroups is not None and self.budget_cgroup and self.cgroups.exists(self.budget_cgroup):
            with contextlib.suppress(DriverError):
                usage = self.cgroups.read(self.budget_cgroup)
                budget_limit, budget_usage = usage.limit, usage.usage
        total = mem["MemTotal"]
        return HostStats(
            timestamp=self.clock(), total=total, free=mem.get("MemFree", 0),
            available=mem.get("MemAvailable", mem.get("MemFree", 0)),
            cached=mem.get("Cached", 0) + mem.get("Buffers", 0), swap_total=mem.get("SwapTotal", 0),
            swap_free=mem.get("SwapFree", 0), swapped_in=swapped_in, swapped_out=swapped_out,
            psi_some_avg10=some, psi_full_avg10=full,
            cpu_psi_some_avg10=cpu_some,
            ksm=read_ksm(self.ksm_dir), budget_limit=budget_limit,
            budget_usage=budget_usage if budget_limit is not None else None)


# ------------------------------------------------------------------------------------- guests


class GuestCollector:
    """Samples every running guest: balloon (QMP via the driver), its process and its cgroup."""

    def __init__(self, hypervisor: Hypervisor, *, proc: Path = Path("/proc"),
                 cgroups: MemoryCgroups | None = None, cgroup_parent: str = "yunstack",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hypervisor = hypervisor
        self.proc = proc
        self.cgroups = cgroups
        self.cgroup_parent = cgroup_parent
        self.clock = clock

    async def collect(self) -> tuple[list[GuestStats], dict[str, str]]:
        """Samples of the running guests, and one error line per guest that could not be read."""
        infos = [i for i in await self.hypervisor.list_instances() if i.power_state == PowerState.RUNNING]
        results = await asyncio.gather(*(self.collect_one(i) for i in infos), return_exceptions=True)
        stats: list[GuestStats] = []
        errors: dict[str, str] = {}
        for info, result in zip(infos, results, strict=True):
            if isinstance(result, GuestStats):
                stats.append(result)
            elif isinstance(result, (YunError, OSError)):
                errors[info.id] = str(result)
            elif isinstance(result, BaseException):
                raise result
        return stats, errors

    async def collect_one(self, info: InstanceInfo) -> GuestStats:
        try:
            raw = await self.hypervisor.balloon_stats(info.id)
        except YunError as exc:
            raise CollectionError(instance_id=info.id, detail=exc.text) from exc
        values: dict[str, Any] = {"instance_id": info.id, "timestamp": self.clock(),
                                  "configured": info.memory_mib << 20, "balloon_actual": int(raw["actual"]),
                                  "stats_updated": int(raw.get("last_update") or 0), "pid": info.pid,
                                  "dirty_rate": raw.get("dirty_rate"), "template": raw.get("template")}
        values.update(balloon_fields(raw))
        process = self._process(info) if info.pid is not None else None
        if process is None:
            values["rss"] = await self.hypervisor.rss_bytes(info.id)
        else:
            values.update(process)
        values.update(self._cgroup(info.id))
        return GuestStats(**values)

    def _process(self, info: InstanceInfo) -> dict[str, Any] | None:
        """RSS/PSS/swap/THP/KSM of the guest's QEMU; None when the PID is not that guest's QEMU."""
        base = self.proc / str(info.pid)
        try:
            cmdline = (base / "cmdline").read_bytes().split(b"\0")
            if f"guest={info.id},".encode() not in b"\0".join(cmdline) + b",":
                return None
            rollup = parse_keyed((base / "smaps_rollup").read_text())
        except OSError:
            return None
        out: dict[str, Any] = {"rss": _kb(rollup, "Rss") or 0, "pss": _kb(rollup, "Pss"),
                               "anonymous": _kb(rollup, "Anonymous"), "swap": _kb(rollup, "Swap"),
                               "anon_huge": _kb(rollup, "AnonHugePages")}
        with contextlib.suppress(OSError):
            status = parse_keyed((base / "status").read_text())
            out["swap"] = _kb(status, "VmSwap") if out["swap"] is None else out["swap"]
        with contextlib.suppress(OSError, ValueError):
            ksm = parse_keyed((base / "ksm_stat").read_text())
            out["ksm_merging_pages"] = int(ksm["ksm_merging_pages"]) if "ksm_merging_pages" in ksm else None
            out["ksm_zero_pages"] = int(ksm["ksm_zero_pages"]) if "ksm_zero_pages" in ksm else None
            if "ksm_mergeable" in ksm:
                out["ksm_mergeable"] = ksm["ksm_mergeable"] == "yes"
        if out.get("ksm_merging_pages") is None:
            with contextlib.suppress(OSError, ValueError):
                out["ksm_merging_pages"] = int((base / "ksm_merging_pages").read_text())
        return out

    def _cgroup(self, instance_id: str) -> dict[str, Any]:
        if self.cgroups is None or not self.cgroup_parent:
            return {}
        name = leaf_name(self.cgroup_parent, instance_id)
        if not self.cgroups.exists(name):
            return {}
        try:
            usage = self.cgroups.read(name)
        except DriverError:
            return {}
        return {"cgroup_usage": usage.usage, "cgroup_limit": usage.limit, "cgroup_swap": usage.swap,
                "cgroup_failcnt": usage.failcnt, "cgroup_oom_kill": usage.oom_kill}
