"""The cluster density benchmark's pure parts: the skewed arrivals, the SLO check, N_max, the summary."""

from __future__ import annotations

import json
from pathlib import Path

from yunstack.bench.cluster import (
    ClusterOptions,
    Guest,
    arrivals,
    check,
    downtimes,
    held,
    host_names,
    kernel_oom_kills,
    observe,
    summarize,
)

HOSTS = host_names(3)


def test_arrivals_are_skewed_to_the_first_host_and_the_same_for_the_same_seed() -> None:
    where = arrivals(400, HOSTS, skew=0.75, seed=42)
    assert where == arrivals(400, HOSTS, skew=0.75, seed=42)  # every arm gets the same sequence
    assert where != arrivals(400, HOSTS, skew=0.75, seed=43)
    share = where.count("lab-h1") / len(where)
    assert 0.70 < share < 0.80, share
    assert where.count("lab-h2") > 0 and where.count("lab-h3") > 0
    assert set(arrivals(20, HOSTS, skew=1.0, seed=1)) == {"lab-h1"}


def _guest(name: str, *, filled: float | None, host: str = "lab-h1", active: float = 0.0) -> Guest:
    g = Guest(name=name, pinned=host, host=host, active_at=active, ticked_at=active, filled_at=filled,
              last_tick=10.0, progressed_at=active)
    return g


def test_n_max_counts_the_guests_that_filled_and_settled_before_the_first_failure() -> None:
    guests = [_guest("b01", filled=30.0), _guest("b02", filled=55.0), _guest("b03", filled=80.0),
              _guest("b04", filled=None)]
    assert held(guests, until=100.0, settle_s=20.0) == 3
    assert held(guests, until=90.0, settle_s=20.0) == 2  # b03 had not settled when the failure came
    assert held(guests, until=40.0, settle_s=20.0) == 0


def test_observe_follows_the_newest_tick_and_the_working_set() -> None:
    g = Guest(name="b01", pinned="lab-h1")
    observe(g, "YUNSTACK-READY\nTICK 5.01\nTICK 6.02\n", now=10.0)
    assert (g.ticked_at, g.last_tick, g.progressed_at, g.filled_at) == (10.0, 6.02, 10.0, None)
    observe(g, "TICK 6.02\n", now=13.0)  # no new tick: the stall clock keeps its start
    assert g.progressed_at == 10.0
    observe(g, "TICK 7.5\nMEMLOAD-FILLED mib=110 pattern=random fill_s=2.1\n", now=16.0)
    assert (g.last_tick, g.progressed_at, g.filled_at) == (7.5, 16.0, 16.0)


def test_the_slo_names_what_broke_first() -> None:
    a, b = _guest("b01", filled=5.0), _guest("b02", filled=5.0, host="lab-h2")
    fine = {"b01": "ACTIVE", "b02": "ACTIVE"}
    ticking = {"b01": "TICK 9.0", "b02": "TICK 9.0"}
    assert check([a, b], fine, ticking, {"lab-h1": 0, "lab-h2": 0}, now=20.0, stall_s=30, boot_s=150) is None
    oom = check([a, b], {"b01": "SHUTOFF", "b02": "ACTIVE"}, ticking, {"lab-h1": 1, "lab-h2": 0}, now=20.0,
                stall_s=30, boot_s=150)
    assert oom is not None and (oom.kind, oom.guest) == ("oom_kill", "b01") and "lab-h1" in oom.detail
    gone = check([a, b], {"b01": "ACTIVE", "b02": "ERROR"}, ticking, {}, now=20.0, stall_s=30, boot_s=150)
    assert gone is not None and (gone.kind, gone.guest) == ("qemu_exit", "b02")
    kill = "[   53.9] Out of memory: Killed process 71 (memload) total-vm:114712kB, anon-rss:111604kB"
    inner = check([a, b], fine, {"b01": f"TICK 8.0\n{kill}\nTICK 9.0", "b02": ""}, {}, now=20.0,
                  stall_s=30, boot_s=150)
    assert inner is not None and (inner.kind, inner.guest) == ("guest_oom", "b01")
    assert kill in inner.detail, "the kernel's whole line is the evidence: its victim and what it held"
    stalled = check([a, b], fine, ticking, {}, now=31.0, stall_s=30, boot_s=150)
    assert stalled is not None and stalled.kind == "stall"
    a.migrating = b.migrating = True  # paused while they move: that is the move's downtime, not a stall
    assert check([a, b], {"b01": "MIGRATING", "b02": "MIGRATING"}, ticking, {}, now=31.0, stall_s=30,
                 boot_s=150) is None
    late = Guest(name="b03", pinned="lab-h1", created_at=0.0)
    booting = check([late], {"b03": "BUILD"}, {}, {}, now=151.0, stall_s=30, boot_s=150)
    assert booting is not None and booting.kind == "boot"
    late.refused = "No valid host"
    assert check([late], {"b03": "ERROR"}, {}, {}, now=151.0, stall_s=30, boot_s=150) is None


def test_downtimes_come_from_the_control_planes_migration_lines() -> None:
    log = ("2026-12-05 03:40:01 INFO yunstack.compute.operations.migrate live migration m-1 of s-1: paused mode, "
           "send 2310 ms, downtime 2310 ms, 260046848 bytes of memory, 0 of disk\n"
           "other line\n")
    assert downtimes(log) == {"m-1": {"server": "s-1", "mode": "paused", "total_ms": 2310, "downtime_ms": 2310}}


def test_the_summary_compares_auto_with_off_against_the_target(tmp_path: Path) -> None:
    def run(mode: str, n: int) -> dict[str, object]:
        return {"mode": mode, "n_max": n, "placed": n + 1, "ended": "oom_kill", "failure": None, "refused": None,
                "migrations": [], "downtime_ms_total": 0, "control_plane_cpu_s": 1.0, "balancer_passes": 0}

    summary = summarize(ClusterOptions(out=tmp_path), [run("off", 5), run("auto", 7)], {"command": "x"})
    assert summary["verdict"]["auto_vs_off"] == 7 / 5 and summary["verdict"]["auto_vs_off_met"] is True
    assert set(summary["arms"]) == {"off", "auto"} and summary["arms"]["off"]["n_max"] == 5
    json.dumps(summary)  # all of it is JSON (paths as strings)
    missed = summarize(ClusterOptions(out=tmp_path), [run("off", 5), run("auto", 6)], {})
    assert missed["verdict"]["auto_vs_off_met"] is False


def test_the_kernel_log_names_the_oom_kills_in_a_lab_hosts_budget() -> None:
    # On cgroup v1 the kill counts in the victim's cgroup (gone with the guest), not in the budget.
    log = ("[Sat Dec  5 03:58:46 2026] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
           "oom_memcg=/yunstack-lab-ai-h1,task_memcg=/yunstack-lab-ai-h1/7b470a9a-da8c,task=qemu-system-x86,"
           "pid=8411,uid=0\n"
           "[Sat Dec  5 03:58:46 2026] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
           "oom_memcg=/ys-bench-1,task_memcg=/ys-bench-1/x,task=qemu-system-x86,pid=9,uid=0\n")
    assert kernel_oom_kills(log, {"yunstack-lab-ai-h1": "lab-h1"}) == [
        {"host": "lab-h1", "victim_cgroup": "yunstack-lab-ai-h1/7b470a9a-da8c", "task": "qemu-system-x86",
         "pid": "8411"}]
