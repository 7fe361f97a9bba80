"""The JSON summary and the PNG plots of a density invocation (matplotlib, Agg backend).

Plots per scenario: N_max and footprint per guest by arm; footprint per guest vs N; p95 slowdown vs N;
where the memory went at N_max (KSM, balloon, swap).  The spike test gets reclaimed-vs-time.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLORS = {"A0": "#7f7f7f", "A1": "#bcbd22", "A2": "#1f77b4", "A3": "#ff7f0e", "A4": "#2ca02c", "A4R": "#98df8a",
          "A4T": "#17becf"}


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _iqr(values: Sequence[float]) -> list[float] | None:
    if len(values) < 2:
        return [values[0], values[0]] if values else None
    q = statistics.quantiles(values, n=4, method="inclusive")
    return [q[0], q[2]]


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per scenario and arm: median and IQR of N_max, medians of the other headline numbers."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        out.setdefault(run["scenario"], {}).setdefault(run["arm"], {"runs": []})["runs"].append(run)
    for arms in out.values():
        for arm, row in arms.items():
            rs = row.pop("runs")
            n = [float(r["n_max"]) for r in rs]
            fp = [r["footprint_per_guest_mib"] for r in rs if r["footprint_per_guest_mib"] is not None]
            sd = [r["slowdown_p95_at_n_max"] for r in rs if r["slowdown_p95_at_n_max"] is not None]
            row.update({"title": rs[0]["title"], "repeats": len(rs), "n_max": n, "n_max_median": _median(n),
                        "n_max_iqr": _iqr(n), "admitted": rs[0]["admitted"],
                        "consolidation_median": _median([r["consolidation"] for r in rs]),
                        "footprint_per_guest_mib_median": _median(fp), "slowdown_p95_median": _median(sd),
                        "stop_reasons": [r["stop_reason"] for r in rs],
                        "holds": [{k: h[k] for k in ("seconds", "held_n", "stepped_down", "failures")}
                                  for r in rs if (h := r.get("hold"))]})
            arms[arm] = row
    return out


def targets(agg: dict[str, dict[str, dict[str, Any]]], spikes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, evaluated on the medians (None when that part was not run)."""
    result: dict[str, Any] = {}
    ident = agg.get("ident", {}).get("A4")
    if ident:
        c = ident["consolidation_median"]
        result["ident_consolidation_ge_3.5"] = {"value": c, "met": c is not None and c >= 3.5}
        singles = [agg["ident"][a]["n_max_median"] or 0.0 for a in ("A2", "A3") if a in agg["ident"]]
        if singles and max(singles) > 0:
            result["ident_vs_best_single"] = (ident["n_max_median"] or 0.0) / max(singles)
    templated = agg.get("ident", {}).get("A4T")
    if templated:  # issue 11: identical idle guests started from a memory template
        c = templated["consolidation_median"]
        result["ident_templates_consolidation_ge_8"] = {"value": c, "met": c is not None and c >= 8.0}
    mixed = agg.get("mixed", {})
    for ours in ("A4", "A4R"):  # with the product's admission; ramped to failure like A2/A3
        if ours not in mixed:
            continue
        a4 = mixed[ours]["n_max_median"] or 0.0
        row: dict[str, Any] = {"a4_n_max": a4, "a4_slowdown_p95": mixed[ours]["slowdown_p95_median"]}
        if "A0" in mixed and mixed["A0"]["n_max_median"]:
            row["vs_a0"] = a4 / mixed["A0"]["n_max_median"]
            row["vs_a0_ge_1.6"] = row["vs_a0"] >= 1.6
        singles = [mixed[a]["n_max_median"] or 0.0 for a in ("A2", "A3") if a in mixed]
        if singles and max(singles) > 0:
            row["vs_best_single"] = a4 / max(singles)
            row["vs_best_single_ge_1.25"] = row["vs_best_single"] >= 1.25
        sd = mixed[ours]["slowdown_p95_median"]
        row["slowdown_le_10pct"] = sd is not None and sd <= 0.10
        result["mixed" if ours == "A4" else "mixed_ramp"] = row
    for spike in spikes:
        result[f"spike_{spike['arm']}"] = {"reclaim_s": spike.get("reclaim_s"), "ok": spike.get("ok"),
                                           "oom_kills": spike.get("oom_kills"), "guest_ooms": spike.get("guest_ooms")}
    return result


def write_report(out: Path, meta: dict[str, Any], runs: Sequence[dict[str, Any]],
                 spikes: Sequence[dict[str, Any]] = ()) -> Path:
    """Write ``summary.json`` and the plots into ``out``; returns the summary's path."""
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(runs)
    plots: list[str] = []
    for scenario_name in agg:
        plots += plot_scenario(out, scenario_name, [r for r in runs if r["scenario"] == scenario_name], meta)
    if spikes:
        plots.append(plot_spike(out, spikes))
    summary = {"meta": meta, "aggregate": agg, "targets": targets(agg, spikes), "runs": list(runs),
               "spikes": list(spikes), "plots": plots}
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=1, default=str))
    return path


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scenario(out: Path, scenario_name: str, runs: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    plt = _plt()
    arms = sorted({r["arm"] for r in runs})
    budget = meta.get("budget_mib")
    guest = meta.get("guest_mib")
    where = f"B = {budget} MiB, {guest} MiB guests, scenario {scenario_name}"
    names = []

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, arm in enumerate(arms):
        rs = [r for r in runs if r["arm"] == arm]
        n = [r["n_max"] for r in rs]
        ax1.bar(i, statistics.median(n), color=COLORS.get(arm, "k"), label=rs[0]["title"])
        ax1.scatter([i] * len(n), n, color="k", s=12, zorder=3)
        fp = [r["footprint_per_guest_mib"] for r in rs if r["footprint_per_guest_mib"]]
        ax2.bar(i, statistics.median(fp) if fp else 0, color=COLORS.get(arm, "k"))
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(arms)), arms)
        ax.set_xlabel("arm")
    ax1.set_ylabel("N_max (guests passing the SLO)")
    ax1.set_title("Guests in the budget (bars: median, dots: repeats)")
    ax2.set_ylabel("host footprint per guest at N_max (MiB)")
    ax2.set_title("Budget usage / N at N_max")
    ax1.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Density: N_max and footprint per arm ({where})")
    fig.tight_layout()
    names.append(_save(fig, out / f"density-{scenario_name}-nmax.png"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for arm in arms:
        for j, r in enumerate(r for r in runs if r["arm"] == arm):
            xs = [s["n"] for s in r["steps"]]
            label = r["title"] if j == 0 else None
            ax1.plot(xs, [s["footprint_per_guest"] / 2**20 for s in r["steps"]], "o-", ms=3,
                     color=COLORS.get(arm, "k"), label=label, alpha=0.8)
            sd = [(s["n"], 100 * s["slowdown_p95"]) for s in r["steps"] if s["slowdown_p95"] is not None]
            if sd:
                ax2.plot(*zip(*sd, strict=True), "o-", ms=3, color=COLORS.get(arm, "k"), label=label, alpha=0.8)
    ax1.set_xlabel("N (guests running)")
    ax1.set_ylabel("budget usage / N (MiB)")
    ax1.set_title("Footprint per guest vs N")
    ax2.set_xlabel("N (guests running)")
    ax2.set_ylabel("p95 slowdown vs solo (%)")
    ax2.axhline(10, color="r", ls="--", lw=1, label="SLO 10 %")
    ax2.set_title("Workload slowdown vs N")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.suptitle(f"Ramp curves ({where})")
    fig.tight_layout()
    names.append(_save(fig, out / f"density-{scenario_name}-ramp.png"))

    fig, ax = plt.subplots(figsize=(7, 4.2))
    bottoms = [0.0] * len(arms)
    for key, color in (("ksm", "#1f77b4"), ("balloon", "#ff7f0e"), ("swap", "#9467bd")):
        vals = [statistics.median([r["where_at_n_max_mib"][key] for r in runs if r["arm"] == arm]) for arm in arms]
        ax.bar(range(len(arms)), vals, bottom=bottoms, color=color, label={"ksm": "KSM (pages saved)",
               "balloon": "balloon (Σ configured - actual)", "swap": "host swap"}[key])
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    ax.set_xticks(range(len(arms)), arms)
    ax.set_xlabel("arm")
    ax.set_ylabel("MiB at N_max (median of repeats)")
    ax.set_title(f"Savings by mechanism ({where})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    names.append(_save(fig, out / f"density-{scenario_name}-savings.png"))
    return names


def plot_spike(out: Path, spikes: Sequence[dict[str, Any]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spike in spikes:
        tl = spike.get("timeline") or []
        if tl:
            ax.plot([t for t, _ in tl], [r for _, r in tl], color=COLORS.get(spike["arm"], "k"), label=spike["title"])
    ax.axhline(spikes[0]["demand_mib"], color="r", ls="--", lw=1, label="demand (1 GiB)")
    ax.axvline(10, color="k", ls=":", lw=1, label="10 s target")
    ax.set_xlabel("seconds since the demand was announced")
    ax.set_ylabel("reclaimed from the guests (MiB)")
    ax.set_title(f"Spike: {spikes[0]['guests']} guests x {spikes[0]['guest_mib']} MiB, 1 GiB demand")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out / "density-spike.png")


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path.name
