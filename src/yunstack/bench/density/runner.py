"""Ramp-to-failure runs (design §9.5): one arm, one scenario, guests started one by one into B.

After each start the runner waits for the guest's READY marker and a settle time while the arm's
policy runs, then checks the SLO: no OOM kill (the budget cgroup's ``oom_kill`` counter, guest
console OOM lines), no QEMU exit, a boot within the timeout, every active guest's memload
throughput ≥ 90 % of its solo throughput.  A slowdown violation is re-checked once after another
settle; the run stops at the first N that violates twice (OOMs and exits are final at once).
N_max is the last passing N.  Admission arms (A0, A1) stop when their rule refuses the next guest
and are validated at their admitted N.  A 1 Hz sampler writes JSON lines (one file per run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from yunstack.bench.density._fleet import MEMLOAD, READY, Fleet, guest_ram_rss, qemu_pids
from yunstack.bench.density.arms import Arm, ArmActions
from yunstack.bench.density.budget import Budget
from yunstack.bench.density.workloads import Workload, idle, scenario
from yunstack.cgroups import MemoryCgroups
from yunstack.compute.driver import MemoryBacking
from yunstack.compute.qemu.templatestore import BUILD_TIMEOUT_S, META
from yunstack.errors import DriverError, YunError
from yunstack.memory import policy
from yunstack.memory.collectors import GuestCollector, HostCollector, read_ksm
from yunstack.memory.controllers import CgroupControl, KsmControl
from yunstack.memory.manager import attribute_sharing
from yunstack.memory.model import MIB, GuestStats, HostStats

Progress = Callable[[str], None]
_HARD = ("oom", "qemu-exit", "boot-timeout", "guest-oom")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What every run of one invocation shares."""

    budget_bytes: int
    swap_bytes: int = 0
    guest_mib: int = 256
    max_guests: int = 24
    settle_s: float = 15.0
    boot_timeout_s: float = 60.0
    slo_throughput: float = 0.90
    sample_s: float = 1.0
    seed: int = 42
    quick: bool = False
    hold_s: float = 0.0  # design §9.5 step 5: hold N_max this long; 0 = no hold


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Measured once per invocation: per-VM overhead (A0) and solo throughput per workload class."""

    overhead_bytes: int
    idle_footprint_bytes: int
    solo: dict[str, dict[str, float]]


def host_facts() -> dict[str, Any]:
    """Noise and configuration facts recorded with every run (design §9.8)."""
    facts: dict[str, Any] = {"loadavg": os.getloadavg(), "time": time.time()}
    with contextlib.suppress(OSError):
        facts["psi_memory"] = Path("/proc/pressure/memory").read_text().splitlines()[0]
        facts["psi_cpu"] = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    ksm = read_ksm()
    facts["ksm"] = {"run": ksm.run, "pages_to_scan": ksm.pages_to_scan, "sleep_millisecs": ksm.sleep_millisecs,
                    "pages_sharing": ksm.pages_sharing}
    with contextlib.suppress(OSError):
        facts["thp"] = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    return facts


def ksmd_cpu_seconds() -> float:
    """ksmd's utime + stime so far (global: foreign KSM users count too)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "ksmd":
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Controller:
    """The 1 Hz loop of a run: sample, tick the arm when due, apply its actions, write a JSON line."""

    def __init__(self, arm: Arm, fleet: Fleet, budget: Budget, samples: TextIO) -> None:
        self.arm = arm
        self.fleet = fleet
        self.budget = budget
        self.samples = samples
        cg: MemoryCgroups = budget.cgroups
        self.host_collector = HostCollector(cgroups=cg, budget_cgroup=budget.name)
        self.guest_collector = GuestCollector(fleet.driver, cgroups=cg, cgroup_parent=budget.name)
        self.cgroup_control = CgroupControl(cg, budget.name)
        self.ksm = KsmControl() if arm.uses_ksm else None
        self.reserve = 0  # bytes the arm sees as already used (a claim, or the spike test's pending demand)
        # The memory templates' RAM files in the page cache, and the part of it charged to the budget on
        # top of its cgroup's usage: what the template guest wrote (it ran outside the budget cgroup, and
        # its clones map those pages without a charge).  A page a clone reads in later is charged to
        # the clone's cgroup, hence to the budget already.
        self.templates: dict[str, int] = {}
        self.template_outside: dict[str, int] = {}  # key -> resident bytes when it was made
        self.template_cache = 0
        self.raw_host: HostStats | None = None  # the last sample without ``reserve``
        self.foreign: list[str] = []  # KSM knob changes by other processes, seen when re-applying ours
        self.host: HostStats | None = None
        self.guests: list[GuestStats] = []
        self.tick_cpu = 0.0
        self.ticks = 0
        self.sample_cpu = 0.0
        self.errors: list[str] = []
        self._last_tick = -1e9
        self._t0 = time.monotonic()

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        if self.ksm is not None and self.ksm.available:
            self.ksm.snapshot()
        try:
            while not stop.is_set():
                began = time.monotonic()
                with contextlib.suppress(YunError, OSError):
                    await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.05, interval - (time.monotonic() - began)))
        finally:
            if self.ksm is not None:
                self.ksm.restore()

    async def step(self) -> None:
        cpu0 = time.thread_time()
        host = self.host_collector.collect()
        if self.arm.templates:
            self.templates = await self.fleet.driver.template_memory()
            self.template_cache = sum(min(v, self.template_outside.get(k, v)) for k, v in self.templates.items())
            host = policy.with_claims(replace(host, templates=self.templates), self.template_cache)
        self.raw_host = host
        host = policy.with_claims(host, self.reserve)
        guests, _ = await self.guest_collector.collect()
        self.host, self.guests = host, guests
        self.sample_cpu += time.thread_time() - cpu0
        note = ""
        now = time.monotonic()
        if self.arm.period > 0 and now - self._last_tick >= self.arm.period - 0.05 and guests:
            self._last_tick = now
            cpu1 = time.thread_time()
            actions = self.arm.tick(host, guests)
            self.tick_cpu += time.thread_time() - cpu1
            self.ticks += 1
            note = actions.note
            await self.apply(actions)
        self.samples.write(json.dumps(self.sample(host, guests, note)) + "\n")
        self.samples.flush()

    async def apply(self, actions: ArmActions) -> None:
        for iid, target in actions.balloon.items():
            try:
                await self.fleet.driver.set_balloon_target(iid, target)
            except YunError as exc:
                self.errors.append(f"balloon {iid}: {exc.text}")
        for iid, setting in actions.cgroups.items():
            try:
                self.cgroup_control.apply(iid, setting)
            except DriverError as exc:
                self.errors.append(f"cgroup {iid}: {exc.text}")
        if actions.ksm is not None and self.ksm is not None and self.ksm.available:
            try:
                self.ksm.apply(actions.ksm)  # reads sysfs back and re-applies knobs others changed
            except DriverError as exc:
                self.errors.append(f"ksm: {exc.text}")
            self.foreign += [f"t={time.monotonic() - self._t0:.0f}s {n}" for n in self.ksm.foreign]

    def sample(self, host: HostStats, guests: Sequence[GuestStats], note: str) -> dict[str, Any]:
        shared, _ = attribute_sharing(host, guests, {})
        reading = self.budget.read()
        return {"t": round(time.monotonic() - self._t0, 2), "n": len(guests), "usage": reading.usage,
                "limit": reading.limit, "swap": reading.swap, "failcnt": reading.failcnt,
                "oom_kill": reading.oom_kill, "template_cache": self.template_cache,
                "template_resident": sum(self.templates.values()), "ksm_run": host.ksm.run,
                "ksm_pages_sharing": host.ksm.pages_sharing, "ksm_pages_to_scan": host.ksm.pages_to_scan,
                "psi_some": host.psi_some_avg10, "note": note,
                "guests": [{"id": g.instance_id[:8], "actual": g.balloon_actual, "rss": g.rss, "anon": g.anonymous,
                            "clone": g.template is not None, "cg": g.cgroup_usage,
                            "ksm_saved": shared.get(g.instance_id, 0), "swap": _swapped(g)} for g in guests]}

    def swapped(self) -> dict[str, int]:
        """Host swap holding each guest's memory at the last sample (the ledger's ``swapped``), by short id."""
        return {g.instance_id[:8]: _swapped(g) for g in self.guests if _swapped(g)}

    def where(self) -> dict[str, int]:
        """Where the memory went at the last sample: KSM (attributed), balloon, swap."""
        if self.host is None:
            return {"ksm": 0, "balloon": 0, "swap": 0}
        shared, _ = attribute_sharing(self.host, self.guests, {})
        return {"ksm": sum(shared.values()), "balloon": sum(g.ballooned for g in self.guests),
                "swap": self.budget.read().swap}


async def calibrate(image: Path, settings: RunSettings, workloads: Sequence[Workload],
                    progress: Progress | None = None) -> Calibration:
    """Boot each workload class alone (no other guest of ours, budget 4 GiB): solo throughput, overhead."""
    solo: dict[str, dict[str, float]] = {}
    overhead = 96 * MIB
    idle_fp = 0
    seen: set[str] = set()
    todo = [idle()] + [w for w in workloads if w.active]
    for workload in todo:
        if workload.key in seen:
            continue
        seen.add(workload.key)
        if progress:
            progress(f"solo {workload.key}")
        with Budget(4096 * MIB) as budget:
            fleet = Fleet(image, budget)
            try:
                guest = await fleet.spawn(workload, settings.guest_mib, MemoryBacking(page_sharing=False))
                if not await fleet.wait_ready(guest, settings.boot_timeout_s):
                    raise DriverError(detail=f"solo guest {workload.key} did not boot")
                await asyncio.sleep(3.0 if settings.quick else 5.0)
                if not workload.active:
                    info = await fleet.driver.get_info(guest.id)
                    usage = budget.read().usage
                    ram = guest_ram_rss(info.pid, guest.configured) if info.pid else None
                    idle_fp = usage
                    if ram is not None:
                        overhead = max(usage - ram, 0)
                    continue
                await fleet.mark()
                await asyncio.sleep(settings.settle_s)
                window = await fleet.window(guest)
                solo[workload.key] = {"throughput": window.throughput or 1.0, "p95_us": window.p95_us or 0.0,
                                      "lines": float(window.lines)}
            finally:
                await fleet.close()
    return Calibration(overhead_bytes=overhead, idle_footprint_bytes=idle_fp, solo=solo)


async def run_ramp(arm: Arm, scenario_name: str, settings: RunSettings, image: Path, calibration: Calibration,
                   samples_path: Path, progress: Progress | None = None) -> dict[str, Any]:
    """One ramp of ``arm`` on ``scenario_name``; returns the run record (also the JSON summary's row)."""
    facts_before = host_facts()
    foreign = qemu_pids(excluding="/tmp/ysb-")
    ksmd0 = ksmd_cpu_seconds()
    budget = Budget(settings.budget_bytes, settings.swap_bytes).open()
    fleet = Fleet(image, budget)
    steps: list[dict[str, Any]] = []
    n_max, stop_reason, admitted = 0, "max-guests", None
    hold: dict[str, Any] | None = None
    template_made: dict[str, Any] | None = None
    templates: dict[str, Any] | None = None
    began = time.monotonic()
    with samples_path.open("w") as samples:
        control = Controller(arm, fleet, budget, samples)
        stop = asyncio.Event()
        task = asyncio.create_task(control.run(stop, settings.sample_s))
        try:
            oom0 = budget.read().oom_kill
            committed: list[int] = []
            for index in range(settings.max_guests):
                workload = scenario(scenario_name, index, seed=settings.seed, quick=settings.quick)
                nbytes = settings.guest_mib * MIB
                if not arm.admits(committed, nbytes, control.host, control.guests):
                    if not arm.observed_admission:
                        stop_reason = "admission"
                        break
                    await asyncio.sleep(settings.settle_s)  # KSM/balloons may still be making room
                    if not arm.admits(committed, nbytes, control.host, control.guests):
                        stop_reason = f"admission: {arm.last_admission}"
                        break
                if progress:
                    progress(f"{arm.name} {scenario_name}: guest {index + 1}")
                made = await _make_room(control, arm, nbytes, settings.settle_s)
                if made is not None:
                    stop_reason = f"admission: {made}"
                    break
                try:
                    guest = await fleet.spawn(workload, settings.guest_mib, arm.memory())
                    committed.append(nbytes)
                    booted = await fleet.wait_ready(guest, settings.boot_timeout_s)
                finally:
                    control.reserve = 0
                if arm.templates and template_made is None and booted:  # before the next arrival, which may use it
                    template_made = await _wait_template(fleet, control, progress)
                violations = [] if booted else [f"boot-timeout {guest.id[:8]}"]
                row: dict[str, Any] = {}
                for attempt in range(2):
                    await fleet.mark()
                    await asyncio.sleep(settings.settle_s)
                    row = await _check(fleet, budget, control, calibration, settings, oom0, len(committed))
                    violations = (violations if attempt == 0 else []) + row.pop("violations")
                    if not violations or any(v.startswith(_HARD) for v in violations):
                        break
                row["violations"] = violations
                row["ready_s"] = guest.ready_s
                steps.append(row)
                if violations:
                    stop_reason = "slo: " + "; ".join(violations[:3])
                    break
                n_max = len(committed)
            admitted = None if arm.observed_admission else admitted_count(arm, settings.guest_mib * MIB)
            if arm.templates:
                templates = {"made": template_made, **await _clones(fleet, control)}
            if settings.hold_s > 0 and n_max > 0:
                hold = await _hold(fleet, budget, control, calibration, settings, n_max, progress)
                n_max = hold["held_n"]
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
            await fleet.close()
            budget.close()
    record = _record(arm, scenario_name, settings, calibration, steps, n_max, stop_reason, admitted, control,
                     facts_before, foreign, ksmd_cpu_seconds() - ksmd0, time.monotonic() - began, samples_path)
    record["hold"] = hold
    record["templates"] = templates
    return record


async def _wait_template(fleet: Fleet, control: Controller, progress: Progress | None) -> dict[str, Any]:
    """Until the template the first guest's start set off is made (bounded): how long it took, and its
    page cache then, which the budget is charged for from now on (``Controller.template_outside``)."""
    if progress:
        progress("waiting for the memory template")
    began = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fleet.driver.templates.wait_builds(), BUILD_TIMEOUT_S + 30.0)
    waited = time.monotonic() - began
    root = fleet.driver.templates.root
    metas = [json.loads(m.read_text()) for m in sorted(root.glob(f"*/{META}"))] if root.is_dir() else []
    control.template_outside = await fleet.driver.template_memory()
    return {"waited_s": round(waited, 1), "count": len(metas),
            "build_s": [m.get("build_seconds") for m in metas], "keys": [m.get("key") for m in metas],
            "resident_mib": {k[:12]: v / MIB for k, v in control.template_outside.items()}}


async def _clones(fleet: Fleet, control: Controller) -> dict[str, Any]:
    """Which guests started from a template, and whether each one's identity and workload followed."""
    resumed = ready = ran = 0
    for guest in fleet.guests.values():
        text = await fleet.console(guest)
        if "YUNSTACK-RESUME" not in text:
            continue
        resumed += 1
        after = text.split("YUNSTACK-RESUME", 1)[1]  # what the clone printed as itself
        ready += bool(READY.search(after))
        ran += (guest.workload.started in after) if guest.workload.started else bool(MEMLOAD.search(after))
    cache = await fleet.driver.template_memory()
    return {"guests": len(fleet.guests), "clones": sum(1 for g in control.guests if g.template is not None),
            "resumed": resumed, "ready_after_resume": ready, "workload_started": ran,
            "page_cache_mib": {k[:12]: v / MIB for k, v in cache.items()},
            "charged_mib": control.template_cache / MIB,
            "clone_anonymous_mib": sorted(round((g.anonymous or 0) / MIB) for g in control.guests if g.template),
            "clone_rss_mib": sorted(round(g.rss / MIB) for g in control.guests if g.template)}


async def _make_room(control: Controller, arm: Arm, nbytes: int, timeout: float) -> str | None:
    """Claim the next guest's footprint (the arm reclaims for it) until it is free; None when it is.

    Room that the admission counted as reclaimable (idle page cache) must be made before a guest
    starts: a booting guest grows faster than balloons inflate.  The claim stays until the guest
    is ready (the caller clears ``control.reserve``).
    """
    claim = arm.claim(control.guests, nbytes)
    if claim <= 0:
        return None
    control.reserve = claim
    deadline = time.monotonic() + timeout
    await asyncio.sleep(1.1)  # one sample taken with the claim in it (the sampler runs at 1 Hz)
    while True:
        host = control.raw_host
        if host is not None and arm.room_made(host, claim):
            return None
        if time.monotonic() >= deadline:
            control.reserve = 0
            free = "?" if host is None else f"{host.headroom >> 20} MiB"
            return f"no room made for {claim >> 20} MiB in {timeout:.0f}s ({free} free)"
        await asyncio.sleep(0.5)


async def _hold(fleet: Fleet, budget: Budget, control: Controller, calibration: Calibration,
                settings: RunSettings, n_max: int, progress: Progress | None) -> dict[str, Any]:
    """Hold N_max for ``hold_s`` with the workloads running (W2 keeps switching phases).

    The guest that failed the ramp (N_max + 1) and any guest that died with it are removed first.  A
    window that fails the SLO twice in a row steps down one guest (the newest) and starts the hold
    again, so ``held_n`` is the largest N that met the SLO for the whole hold.
    """
    order = list(fleet.guests)  # insertion order: oldest first
    for iid in order[n_max:]:
        await fleet.remove(iid)
    removed_dead = [iid[:8] for iid in await fleet.dead()]
    for iid in await fleet.dead():
        await fleet.remove(iid)
    n = len(fleet.guests)
    windows: list[dict[str, Any]] = []
    failures: list[str] = []
    stepped_down = 0
    while n > 0:
        if progress:
            progress(f"hold N={n} for {settings.hold_s:.0f}s")
        oom0 = budget.read().oom_kill
        began = time.monotonic()
        strikes = 0
        failed = False
        while time.monotonic() - began < settings.hold_s:
            await fleet.mark()
            await asyncio.sleep(settings.settle_s)
            row = await _check(fleet, budget, control, calibration, settings, oom0, n)
            row["held_for_s"] = round(time.monotonic() - began, 1)
            windows.append(row)
            bad = row["violations"]
            strikes = strikes + 1 if bad else 0
            if bad and (strikes >= 2 or any(v.startswith(_HARD) for v in bad)):
                failures.append(f"N={n} after {row['held_for_s']:.0f}s: " + "; ".join(bad[:3]))
                failed = True
                break
        if not failed:
            break
        newest = list(fleet.guests)[-1]
        await fleet.remove(newest)
        for iid in await fleet.dead():
            await fleet.remove(iid)
        n = len(fleet.guests)
        stepped_down += 1
    return {"seconds": settings.hold_s, "held_n": n, "stepped_down": stepped_down, "failures": failures,
            "removed_dead_before_hold": removed_dead, "windows": len(windows),
            "slowdown_p95_max": max((w["slowdown_p95"] or 0.0 for w in windows), default=None),
            "usage_max": max((w["usage"] for w in windows), default=None),
            "footprint_per_guest_last": windows[-1]["footprint_per_guest"] if windows else None}


async def _check(fleet: Fleet, budget: Budget, control: Controller, calibration: Calibration,
                 settings: RunSettings, oom0: int, n: int) -> dict[str, Any]:
    violations: list[str] = []
    reading = budget.read()
    if reading.oom_kill > oom0:
        violations.append(f"oom kills {reading.oom_kill - oom0} in the budget cgroup")
    violations += [f"qemu-exit {iid[:8]}" for iid in await fleet.dead()]
    violations += [f"guest-oom {iid[:8]}" for iid in await fleet.guest_ooms()]
    slowdowns: list[float] = []
    latency: list[float] = []
    now = time.monotonic()
    for guest in fleet.guests.values():
        if not guest.workload.active:
            continue
        window = await fleet.window(guest)
        solo = calibration.solo.get(guest.workload.key, {"throughput": 1.0, "p95_us": 0.0})
        if window.throughput is None:
            if guest.ready_s is not None and guest.marked_at - guest.spawned_at > 20.0:
                tail = (await fleet.console(guest)).rstrip().rsplit("\n", 1)[-1][-120:]
                violations.append(f"stalled {guest.id[:8]} {guest.workload.key} (no memload line in "
                                  f"{now - guest.marked_at:.0f}s; console ends {tail!r})")
                slowdowns.append(1.0)
            continue
        slowdown = max(0.0, 1.0 - window.throughput / max(solo["throughput"], 1e-6))
        slowdowns.append(slowdown)
        guest.history.append(slowdown)
        if solo["p95_us"] and window.p95_us:
            latency.append(window.p95_us / solo["p95_us"])
        if window.throughput < settings.slo_throughput * solo["throughput"]:
            violations.append(f"slow {guest.id[:8]} {window.throughput / solo['throughput']:.0%} of solo")
    where = control.where()
    usage = reading.usage + control.template_cache
    return {"n": n, "t": round(time.monotonic(), 1), "usage": usage, "footprint_per_guest": usage / n,
            "budget_usage": reading.usage, "template_cache": control.template_cache,
            "clones": sum(1 for g in control.guests if g.template is not None),
            "consolidation": n * settings.guest_mib * MIB / settings.budget_bytes, "swap": reading.swap,
            "ksm_saved": where["ksm"], "ballooned": where["balloon"], "swapped_per_guest": control.swapped(),
            "slowdown_p50": _pct(slowdowns, 50), "slowdown_p95": _pct(slowdowns, 95),
            "slowdown_max": max(slowdowns) if slowdowns else None,
            "latency_p95_ratio_median": statistics.median(latency) if latency else None,
            "violations": violations}


def _pct(values: Sequence[float], q: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _record(arm: Arm, scenario_name: str, settings: RunSettings, calibration: Calibration,
            steps: list[dict[str, Any]], n_max: int, stop_reason: str, admitted: int | None, control: Controller,
            facts: dict[str, Any], foreign: list[int], ksmd_cpu: float, wall: float, samples: Path) -> dict[str, Any]:
    at_max = next((s for s in steps if s["n"] == n_max), None)
    budget = settings.budget_bytes
    return {
        "arm": arm.name, "title": arm.title, "scenario": scenario_name, "constants": arm.constants(),
        "n_max": n_max, "admitted": admitted, "stop_reason": stop_reason,
        "consolidation": n_max * settings.guest_mib * MIB / budget,
        "guests_per_gib": n_max / (budget / (1024 * MIB)),
        "footprint_per_guest_mib": at_max["footprint_per_guest"] / MIB if at_max else None,
        "slowdown_p95_at_n_max": at_max["slowdown_p95"] if at_max else None,
        "where_at_n_max_mib": {k: (at_max[key] / MIB if at_max else 0.0) for k, key in
                               (("ksm", "ksm_saved"), ("balloon", "ballooned"), ("swap", "swap"))},
        "swapped_per_guest_at_n_max": at_max.get("swapped_per_guest", {}) if at_max else {},
        "first_used_s": first_used(samples, settings.guest_mib * MIB),
        "steps": steps,
        "cost": {"policy_cpu_s": round(control.tick_cpu, 4), "policy_ticks": control.ticks,
                 "policy_cpu_ms_per_tick": round(1000 * control.tick_cpu / max(control.ticks, 1), 3),
                 "sampling_cpu_s": round(control.sample_cpu, 3), "harness_rss_mib": _self_rss() / MIB,
                 "ksmd_cpu_s": round(ksmd_cpu, 2), "wall_s": round(wall, 1)},
        "errors": control.errors[:20],
        "foreign_ksm_changes": control.foreign[:50],
        "noise": {"foreign_qemu_at_start": len(foreign), "foreign_qemu_at_end": len(qemu_pids(excluding="/tmp/ysb-")),
                  "before": facts, "after": host_facts()},
        "samples": samples.name,
    }


def _swapped(g: GuestStats) -> int:
    """Host swap holding a guest: its cgroup's swap, else its QEMU's VmSwap."""
    return g.cgroup_swap if g.cgroup_swap is not None else (g.swap or 0)


def first_used(samples: Path, configured: int) -> dict[str, float | None]:
    """Seconds into the run at which each mechanism first held memory: the order the policy used them.

    KSM: pages shared; balloon: a guest below its configured RAM; swap: the budget's swap above
    1 MiB (a few pages of noise are not a decision).
    """
    first: dict[str, float | None] = {"ksm": None, "balloon": None, "swap": None}
    with contextlib.suppress(OSError), samples.open() as lines:
        for line in lines:
            s = json.loads(line)
            seen = {"ksm": s.get("ksm_pages_sharing", 0) > 0,
                    "balloon": any(0 < (g.get("actual") or configured) < configured for g in s.get("guests", ())),
                    "swap": max(s.get("swap") or 0, sum(g.get("swap") or 0 for g in s.get("guests", ()))) > MIB}
            for key, used in seen.items():
                if used and first[key] is None:
                    first[key] = s["t"]
    return first


def _self_rss() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def admitted_count(arm: Arm, nbytes: int, cap: int = 1000) -> int | None:
    """How many guests of ``nbytes`` an admission rule lets in (None: the arm has no such rule)."""
    count = 0
    while count < cap and arm.admits([nbytes] * count, nbytes):
        count += 1
    return None if count >= cap else count
