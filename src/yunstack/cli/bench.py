"""`yun bench`: benchmarks run on this host.

``yun bench density`` is a harness, not a cloud client: like the research design it drives
``QemuDriver`` and the memory policy directly on the host (root, cgroups, KSM), not through the
HTTP API, so each arm's policy can be swapped in under identical guests and flags.  With
``--hosts N`` (N > 1) it is the cluster scenario instead (``bench.cluster``), which starts
``yun up --hosts N`` and drives it over the API: the memory balancer it measures lives in the
control plane.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

bench_app = typer.Typer(help="Benchmarks that run on this host.", no_args_is_help=True)
console = Console()


@bench_app.callback()
def _bench() -> None:
    """Benchmarks that run on this host (root; real QEMU)."""


@bench_app.command()
def density(
    budget_mib: Annotated[int, typer.Option(help="Host memory budget B (parent cgroup limit), MiB.")] = 2048,
    swap_mib: Annotated[int, typer.Option(help="Swap allowance beyond B (needs swap on the host), MiB.")] = 0,
    swapfile_mib: Annotated[int, typer.Option(help="Create a swapfile of this size for the run (removed at the "
                                                   "end); the swap allowance is then this size unless --swap-mib "
                                                   "says otherwise. MiB.")] = 0,
    scenario: Annotated[str, typer.Option(help="ident | mixed | spike | all.")] = "ident",
    arms: Annotated[str, typer.Option(help="Comma-separated arms: A0,A1,A2,A3,A4 (A4R: A4 ramped to "
                                           "failure, without its admission; A4T: A4 with memory "
                                           "templates).")] = "A0,A1,A2,A3,A4",
    spike_arms: Annotated[str, typer.Option(help="Arms for the spike test.")] = "A4",
    repeats: Annotated[int, typer.Option(help="Interleaved repetitions (arm order shuffled each time).")] = 1,
    max_guests: Annotated[int | None, typer.Option(help="Stop a ramp at this many guests (default 24; with "
                                                         "--hosts, 12 arrivals).")] = None,
    guest_mib: Annotated[int, typer.Option(help="Configured RAM per guest, MiB.")] = 256,
    settle: Annotated[float | None, typer.Option(help="Seconds to settle after each guest (default 15, quick 6).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed for workloads and arm order.")] = 42,
    out: Annotated[Path | None, typer.Option(help="Output directory (default bench/results/density, with --hosts "
                                                  "bench/results/density-cluster).")] = None,
    quick: Annotated[bool, typer.Option(help="One repeat, short settle times (smoke run).")] = False,
    hold: Annotated[float | None, typer.Option(help="Hold N_max this many seconds after each ramp (design: 600; "
                                                     "default 0, with --hosts 90); a failing hold steps down one "
                                                     "guest at a time.")] = None,
    hosts: Annotated[int, typer.Option(help="1: this host's budget (the arms above). N > 1: the cluster scenario "
                                            "on `yun up --hosts N`, the memory balancer off against auto.")] = 1,
    modes: Annotated[str, typer.Option(help="With --hosts: the balancer modes to compare (off, advise, auto).")]
    = "off,auto",
    host_memory_mib: Annotated[int, typer.Option(help="With --hosts: each lab host's memory budget, MiB.")] = 1024,
    skew: Annotated[float, typer.Option(help="With --hosts: share of arrivals pinned to lab-h1.")] = 0.75,
    arrival: Annotated[float, typer.Option(help="With --hosts: seconds between arrivals.")] = 20.0,
    ram_allocation_ratio: Annotated[float, typer.Option(help="With --hosts: the cloud's [compute] "
                                                             "ram_allocation_ratio (overcommit).")] = 4.0,
    working_set: Annotated[int, typer.Option(help="With --hosts: the working set each 192 MiB guest grows to, "
                                                  "MiB.")] = 100,
) -> None:
    """Ramp guests into a cgroup memory budget under arms A0-A4; write JSON + PNG plots.

    Drives QemuDriver and the memory policy directly on this host (not the HTTP API); needs root,
    a memory cgroup hierarchy, QEMU and the tiny image's build tools.  KSM knobs are restored and
    every guest and cgroup is removed at the end of each run.  With --hosts N: skewed arrivals of
    growing guests on a lab of N hosts, N_max with the memory balancer off and in auto mode.
    """
    if hosts > 1:
        _cluster(hosts=hosts, modes=modes, host_memory_mib=host_memory_mib, skew=skew, arrival=arrival,
                 ram_allocation_ratio=ram_allocation_ratio,
                 max_guests=max_guests or 12, settle=20.0 if settle is None else settle,
                 hold=90.0 if hold is None else hold, seed=seed, out=out or Path("bench/results/density-cluster"),
                 working_set=working_set)
        return
    max_guests = max_guests or 24
    out = out or Path("bench/results/density")
    hold = hold or 0.0
    from yunstack.bench.density.arms import ARM_NAMES
    from yunstack.bench.density.suite import SuiteOptions, run_suite, steps_total

    scenarios = ("ident", "mixed", "spike") if scenario == "all" else tuple(scenario.split(","))
    for name in scenarios:
        if name not in ("ident", "mixed", "spike"):
            raise typer.BadParameter(f"unknown scenario {name!r}", param_hint="--scenario")
    arm_list = tuple(a.strip().upper() for a in arms.split(",") if a.strip())
    spike_list = tuple(a.strip().upper() for a in spike_arms.split(",") if a.strip())
    for arm in arm_list + spike_list:
        if arm not in ARM_NAMES:
            raise typer.BadParameter(f"unknown arm {arm!r}", param_hint="--arms")
    options = SuiteOptions(budget_mib=budget_mib, swap_mib=swap_mib, swapfile_mib=swapfile_mib,
                           scenarios=scenarios, arms=arm_list,
                           spike_arms=spike_list, repeats=1 if quick else repeats, max_guests=max_guests,
                           guest_mib=guest_mib, settle_s=settle, out=out, quick=quick, seed=seed,
                           hold_s=hold)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("calibrating", total=steps_total(options))

        async def suite() -> Path:
            # SIGTERM (kill, a CI timeout) and SIGINT cancel the suite, whose finally blocks destroy the
            # guests, remove the budget cgroup and restore the KSM knobs.  Handlers on the loop, not
            # Python's SIGINT default: a background job's SIGINT is ignored from birth.
            me = asyncio.current_task()
            assert me is not None
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, me.cancel)
            return await run_suite(options, progress=lambda text: bar.update(task, description=text),
                                   tick=lambda: bar.advance(task), argv=["yun", "bench", "density", *sys.argv[3:]])

        try:
            summary = asyncio.run(suite())
        except asyncio.CancelledError:
            console.print("[yellow]interrupted:[/] guests, budget cgroups and KSM knobs were cleaned up")
            raise typer.Exit(130) from None
    console.print(f"[green]report:[/] {summary}")


def _cluster(*, hosts: int, modes: str, host_memory_mib: int, skew: float, arrival: float,
             ram_allocation_ratio: float, max_guests: int, settle: float, hold: float, seed: int, out: Path,
             working_set: int) -> None:
    from yunstack.bench.cluster import MODES, ClusterOptions, run

    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    for mode in mode_list:
        if mode not in MODES:
            raise typer.BadParameter(f"unknown balancer mode {mode!r}", param_hint="--modes")
    options = ClusterOptions(hosts=hosts, host_memory_mib=host_memory_mib, modes=mode_list, max_guests=max_guests,
                             skew=skew, arrival_s=arrival, settle_s=settle, hold_s=hold, seed=seed, out=out,
                             ram_allocation_ratio=ram_allocation_ratio, working_set_mib=working_set)

    def stop(signum: int, frame: object) -> None:
        # SIGTERM (kill, a CI timeout) unwinds like Ctrl-C: each arm's cloud is stopped, its lab removed.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        summary = run(options, progress=lambda text: console.print(f"[dim]{text}[/]"),
                      argv=["yun", "bench", "density", *sys.argv[3:]])
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] the arm's cloud was stopped and its lab removed")
        raise typer.Exit(130) from None
    console.print(f"[green]report:[/] {summary}")
