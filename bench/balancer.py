"""The memory balancer's own cost: one plan over a large synthetic cluster (pure function, no database).

``--hosts`` hosts of 64 GiB, a quarter of them over the trigger (90 % used), ``--guests`` guests
spread over them, a third in server groups (anti-affinity, soft-anti-affinity, soft-affinity);
``--moves`` is the cluster-wide move limit.  Reports the plan's time (best of ``--repeat``), moves
and refusals.

    .venv/bin/python bench/balancer.py [--hosts 1000] [--guests 20000] [--moves 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from yunstack.memory import balancer  # noqa: E402
from yunstack.memory.balancer import BalancerTuning, GroupPolicy, GuestLoad, HostLoad, Membership  # noqa: E402

GIB = 1 << 30
POLICIES: tuple[GroupPolicy, ...] = ("anti-affinity", "soft-anti-affinity", "soft-affinity")


def run(hosts: int, guests: int, moves: int, repeat: int) -> dict[str, Any]:
    rng = random.Random(1)
    loads = [HostLoad(name=f"h{i}", physical=64 * GIB, used=int(rng.choice([0.5, 0.6, 0.7, 0.9]) * 64 * GIB))
             for i in range(hosts)]
    vms = [GuestLoad(id=f"v{i}", host=f"h{i % hosts}", memory=4 * GIB, resident=2 * GIB,
                     working_set=int(rng.random() * 3 * GIB) + GIB // 2,
                     groups=(Membership(f"g{i % 500}", rng.choice(POLICIES)),) if i % 3 == 0 else ())
           for i in range(guests)]
    tuning = BalancerTuning(max_moves=moves)
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        plan = balancer.plan(loads, vms, (), tuning, 0.0)
        times.append((time.perf_counter() - began) * 1000)
    return {"hosts": hosts, "guests": guests, "max_moves": moves, "plan_ms": round(min(times), 1),
            "moves": len(plan.moves), "refusals": len(plan.refusals),
            "triggered_hosts": sum(1 for p in plan.hosts if p.before_fraction > 0.85)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--guests", type=int, default=20000)
    parser.add_argument("--moves", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    a = parser.parse_args()
    result = run(a.hosts, a.guests, a.moves, a.repeat)
    result.update(when=datetime.now(UTC).isoformat(timespec="seconds"),
                  machine={"cpus": os.cpu_count(), "python": platform.python_version()},
                  load_average=os.getloadavg()[0])
    out = ROOT / "bench" / "results" / "balancer.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
