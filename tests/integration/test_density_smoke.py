"""`yun bench density` end to end on real QEMU, scaled down: 2 arms, 3 guests, a small budget, a short hold.

Checks that the report is valid JSON with N_max per arm and PNG plots, and that the run leaves no
QEMU, cgroup, swapfile or changed KSM knob behind.  Other sessions share this host, so only our own
processes and cgroups (named ysb-* / ys-bench-*) are checked.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yunstack.bench.density import _fleet
from yunstack.bench.density import budget as budget_mod
from yunstack.bench.density._fleet import qemu_pids
from yunstack.cgroups import detect
from yunstack.cli.bench import bench_app

pytestmark = pytest.mark.integration

KSM = Path("/sys/kernel/mm/ksm")
KNOBS = ("run", "pages_to_scan", "sleep_millisecs")


def _ours() -> list[str]:
    cgroups = detect()
    assert cgroups is not None
    return sorted(p.name for p in cgroups.root.iterdir() if p.name.startswith("ys-bench-"))


def test_a_tiny_density_run_writes_a_report_and_leaves_the_host_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Note the run directories this run makes, so that only its own QEMUs are checked: another
    # benchmark on this host uses the same /tmp/ysb-* prefix.
    roots: list[str] = []
    real_mkdtemp = _fleet.tempfile.mkdtemp

    def recording_mkdtemp(*args: object, **kwargs: object) -> str:
        made = real_mkdtemp(*args, **kwargs)  # type: ignore[call-overload]
        roots.append(str(made))
        return str(made)

    monkeypatch.setattr(_fleet.tempfile, "mkdtemp", recording_mkdtemp)
    budgets: list[str] = []
    real_init = budget_mod.Budget.__init__

    def recording_init(self: budget_mod.Budget, *args: object, **kwargs: object) -> None:
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]
        budgets.append(self.name)

    monkeypatch.setattr(budget_mod.Budget, "__init__", recording_init)
    knobs = {k: (KSM / k).read_text().strip() for k in KNOBS}
    swaps = Path("/proc/swaps").read_text()
    out = tmp_path / "density"
    result = CliRunner().invoke(bench_app, [
        "density", "--quick", "--arms", "A0,A4", "--max-guests", "3", "--budget-mib", "768",
        "--settle", "4", "--hold", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)

    summary = json.loads((out / "summary.json").read_text())
    runs = {r["arm"]: r for r in summary["runs"]}
    assert set(runs) == {"A0", "A4"}
    for run in runs.values():
        assert isinstance(run["n_max"], int) and 1 <= run["n_max"] <= 3
        assert run["steps"] and run["steps"][0]["n"] == 1
        assert (out / run["samples"]).stat().st_size > 0
        # the hold kept N_max running for 8 s (two 4 s windows) and it met the SLO throughout
        hold = run["hold"]
        assert hold["held_n"] == run["n_max"] and hold["windows"] >= 2 and hold["failures"] == []
    # A0 admits while 3 x (256 MiB + measured overhead) fits 768 MiB: fewer than 3.
    assert runs["A0"]["admitted"] == runs["A0"]["n_max"] < 3
    assert summary["aggregate"]["ident"]["A4"]["n_max_median"] == runs["A4"]["n_max"]
    pngs = [out / name for name in summary["plots"]]
    assert pngs and all(p.suffix == ".png" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)

    assert roots, "the run made no fleet directory"
    # A killed QEMU may take a moment to leave /proc.
    deadline = time.monotonic() + 10
    while [pid for root in roots for pid in qemu_pids(root)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for root in roots for pid in qemu_pids(root)] == []
    assert budgets and not set(budgets) & set(_ours()), "the run's budget cgroups must be gone"
    assert Path("/proc/swaps").read_text() == swaps
    # KSM is global: while another benchmark's guests run (it tunes KSM too), the knobs are not ours
    # to compare; alone, the run must have put back exactly what it found.
    if not qemu_pids("/tmp/ysb-"):
        assert {k: (KSM / k).read_text().strip() for k in KNOBS} == knobs
