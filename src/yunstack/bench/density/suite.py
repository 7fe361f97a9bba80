"""One ``yun bench density`` invocation: calibrate, then interleaved repeats of every (scenario, arm)."""

from __future__ import annotations

import asyncio
import json
import platform
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from yunstack.bench.density.arms import make_arm
from yunstack.bench.density.report import write_report
from yunstack.bench.density.runner import Calibration, Progress, RunSettings, calibrate, host_facts, run_ramp
from yunstack.bench.density.spike import run_spike
from yunstack.bench.density.workloads import scenario
from yunstack.memory.controllers import SwapControl
from yunstack.memory.model import MIB

Tick = Callable[[], None]
SWAP_PRIORITY = 10  # above a host's own swap areas (default -2 and below): the run's pages go to our file


@dataclass(frozen=True, kw_only=True)
class SuiteOptions:
    """The CLI's options."""

    budget_mib: int = 2048
    swap_mib: int = 0
    swapfile_mib: int = 0  # a swapfile the harness creates for the run and removes (the host has no swap)
    scenarios: tuple[str, ...] = ("ident",)
    arms: tuple[str, ...] = ("A0", "A1", "A2", "A3", "A4")
    spike_arms: tuple[str, ...] = ("A4",)
    repeats: int = 1
    max_guests: int = 24
    guest_mib: int = 256
    settle_s: float | None = None
    out: Path = Path("bench/results/density")
    quick: bool = False
    seed: int = 42
    hold_s: float = 0.0
    image_dir: Path = Path("/tmp/ys-bench-image")


def plan(options: SuiteOptions) -> list[tuple[int, str, str]]:
    """(repeat, scenario, arm) in run order: each repetition shuffles the arms with a fixed seed."""
    order = []
    for rep in range(options.repeats):
        for name in options.scenarios:
            arms = list(options.arms)
            random.Random(options.seed * 100 + rep).shuffle(arms)
            order += [(rep, name, arm) for arm in arms]
    return order


def _qemu_version() -> str:
    try:
        return subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


async def run_suite(options: SuiteOptions, progress: Progress | None = None, tick: Tick | None = None,
                    argv: Sequence[str] = ()) -> Path:
    """Run everything ``options`` asks for and write the report; returns ``summary.json``.

    With ``swapfile_mib``, a swapfile of that size is swapped on for the whole suite (the guests'
    swap allowance beyond B is then that size unless ``swap_mib`` says otherwise) and swapped off
    and removed at the end, also when the suite is cancelled.
    """
    if options.swapfile_mib <= 0:
        return await _run_suite(options, progress, tick, argv)
    swap = SwapControl(Path(tempfile.mkdtemp(prefix="ys-bench-swap-", dir="/var/tmp")), options.swapfile_mib * MIB,
                       priority=SWAP_PRIORITY)
    try:
        await swap.enable()
        return await _run_suite(replace(options, swap_mib=options.swap_mib or options.swapfile_mib), progress,
                                tick, argv)
    finally:
        await asyncio.shield(swap.disable())
        shutil.rmtree(swap.path.parent, ignore_errors=True)


async def _run_suite(options: SuiteOptions, progress: Progress | None, tick: Tick | None,
                     argv: Sequence[str]) -> Path:
    from yunstack.image.tiny import build_tiny_image

    image = build_tiny_image(options.image_dir)
    settle = options.settle_s if options.settle_s is not None else (6.0 if options.quick else 15.0)
    settings = RunSettings(budget_bytes=options.budget_mib * MIB, swap_bytes=options.swap_mib * MIB,
                           guest_mib=options.guest_mib, max_guests=options.max_guests, settle_s=settle,
                           seed=options.seed, quick=options.quick, hold_s=options.hold_s)
    ramps = [s for s in options.scenarios if s != "spike"]
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    workloads = [scenario(s, i, seed=options.seed, quick=options.quick) for s in ramps
                 for i in range(options.max_guests)]
    calibration: Calibration = await calibrate(image, settings, workloads, progress)
    if tick:
        tick()
    runs: list[dict[str, Any]] = []
    for rep, name, arm_name in plan(SuiteOptions(**{**asdict(options), "scenarios": tuple(ramps)})):
        arm = make_arm(arm_name, budget=settings.budget_bytes, overhead=calibration.overhead_bytes)
        record = await run_ramp(arm, name, settings, image, calibration, out / f"{name}-{arm_name}-r{rep}.jsonl",
                                progress)
        record["repeat"] = rep
        runs.append(record)
        # Every finished run is on disk at once: an interrupted suite loses only the run in progress.
        (out / "runs.partial.json").write_text(json.dumps(runs, default=str))
        if tick:
            tick()
    spikes: list[dict[str, Any]] = []
    if "spike" in options.scenarios:
        for arm_name in options.spike_arms:
            arm = make_arm(arm_name, budget=settings.budget_bytes, overhead=calibration.overhead_bytes)
            spikes.append(await run_spike(arm, image, out / f"spike-{arm_name}.jsonl", seed=options.seed,
                                          progress=progress))
            if tick:
                tick()
    meta = {"command": " ".join(argv), "budget_mib": options.budget_mib, "swap_mib": options.swap_mib,
            "swapfile_mib": options.swapfile_mib,
            "guest_mib": options.guest_mib, "scenarios": list(options.scenarios), "arms": list(options.arms),
            "repeats": options.repeats, "quick": options.quick, "seed": options.seed, "settle_s": settle,
            "max_guests": options.max_guests, "slo_throughput": settings.slo_throughput,
            "overhead_mib": calibration.overhead_bytes / MIB,
            "idle_solo_footprint_mib": calibration.idle_footprint_bytes / MIB, "solo": calibration.solo,
            "host": {"kernel": platform.release(), "qemu": _qemu_version(), "cpus": platform.machine()},
            "facts_at_end": host_facts(), "finished": time.time()}
    summary = write_report(out, meta, runs, spikes)
    (out / "runs.partial.json").unlink(missing_ok=True)
    return summary


def steps_total(options: SuiteOptions) -> int:
    """How many progress ticks ``run_suite`` makes (for a progress bar)."""
    ramps = [s for s in options.scenarios if s != "spike"]
    spikes = len(options.spike_arms) if "spike" in options.scenarios else 0
    return 1 + options.repeats * len(ramps) * len(options.arms) + spikes
