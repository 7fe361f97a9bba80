"""The task engine's own cost: enqueue, claim and complete, with many hosts and a history of finished tasks.

Drives ``TaskService`` directly (no API, no agent) on a fresh database: ``--hosts`` hosts each get
``--per-host`` one-step tasks, enqueued one per transaction (as a server action does); then
``--history`` finished tasks are added so the claim runs over a realistic table; then each host
claims and completes its tasks one at a time (what an agent does), and ``--threads`` claimers race
for one host's backlog.  Reports per-call latencies and rates.

    .venv/bin/python bench/tasks.py [--db-url URL] [--hosts 1000] [--per-host 10] [--history 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import create_engine, insert, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yunstack.db.engine import make_engine, session_factory, upgrade  # noqa: E402
from yunstack.db.tables import tasks as t  # noqa: E402
from yunstack.tasks.model import Resource, StepSpec, TaskKind, TaskRegistry  # noqa: E402
from yunstack.tasks.service import TaskService  # noqa: E402


class RebootArgs(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    hard: bool = False


REGISTRY = TaskRegistry()
REGISTRY.register(TaskKind(name="server.reboot", steps={"reboot": StepSpec(args=RebootArgs)}))


def latency(samples: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in samples)
    return {"n": len(ms), "p50": round(statistics.median(ms), 3), "p95": round(ms[int(len(ms) * 0.95) - 1], 3),
            "min": round(ms[0], 3), "max": round(ms[-1], 3)}


def history(engine: Any, n: int) -> None:
    """``n`` finished tasks on many resources, inserted in bulk (their cost is not measured)."""
    now = datetime.now(UTC)
    rows = [{"id": str(uuid.uuid4()), "kind": "server.reboot", "resource_type": "server",
             "resource_id": str(uuid.uuid4()), "project_id": "p", "host": f"old{i % 1000}", "step": "reboot",
             "args": {"hard": False}, "state": "succeeded", "attempt": 1, "max_attempts": 3,
             "created_at": now, "updated_at": now, "finished_at": now} for i in range(n)]
    with engine.begin() as conn:
        for i in range(0, n, 5000):
            conn.execute(insert(t.Task), rows[i:i + 5000])


def run(db_url: str, hosts: int, per_host: int, n_history: int, threads: int) -> dict[str, Any]:
    engine = make_engine(db_url)
    upgrade(engine)
    db = session_factory(engine)
    tasks = TaskService(db, REGISTRY)
    history(engine, n_history)
    enqueue: list[float] = []
    for i in range(per_host):
        for h in range(hosts):
            start = time.perf_counter()
            with db.begin() as s:
                tasks.enqueue(s, kind="server.reboot", resource=Resource(type="server", id=f"srv-{h}-{i % 3}"),
                              host=f"h{h}", step="reboot", args=RebootArgs())
            enqueue.append(time.perf_counter() - start)
    claim: list[float] = []
    complete: list[float] = []
    began = time.perf_counter()
    for _ in range(per_host):
        for h in range(hosts):
            start = time.perf_counter()
            got = tasks.claim(f"h{h}")
            claim.append(time.perf_counter() - start)
            for c in got:
                start = time.perf_counter()
                tasks.complete(c.id)
                complete.append(time.perf_counter() - start)
    steps_per_s = len(complete) / (time.perf_counter() - began)
    # Many claimers, one host's backlog: what several API workers serving one agent's polls do.
    with db.begin() as s:
        for i in range(threads * 50):
            tasks.enqueue(s, kind="server.reboot", resource=Resource(type="server", id=f"race-{i}"), host="busy",
                          step="reboot", args=RebootArgs())
    seen: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        while True:
            got = tasks.claim("busy", limit=5)
            if not got:
                return
            with lock:
                seen.extend(c.id for c in got)

    start = time.perf_counter()
    workers = [threading.Thread(target=claimer) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    race_s = time.perf_counter() - start
    engine.dispose()
    return {"backend": db_url.split(":", 1)[0], "hosts": hosts, "tasks": hosts * per_host,
            "history_rows": n_history, "enqueue_ms": latency(enqueue), "claim_ms": latency(claim),
            "complete_ms": latency(complete), "claim_and_complete_steps_per_s": round(steps_per_s, 1),
            "concurrent": {"threads": threads, "tasks": threads * 50, "claimed": len(seen),
                           "claimed_twice": len(seen) - len(set(seen)),
                           "claims_per_s": round(len(seen) / race_s, 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default="", help="PostgreSQL admin URL (a scratch database is made); "
                                                    "default: a temporary SQLite file")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--per-host", type=int, default=3)
    parser.add_argument("--history", type=int, default=50000)
    parser.add_argument("--threads", type=int, default=8)
    a = parser.parse_args()
    if a.db_url:
        name = f"ytbench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(a.db_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            result = run(a.db_url.rsplit("/", 1)[0] + "/" + name, a.hosts, a.per_host, a.history, a.threads)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(f"sqlite:///{tmp}/bench.db", a.hosts, a.per_host, a.history, a.threads)
    result.update(when=datetime.now(UTC).isoformat(timespec="seconds"),
                  machine={"cpus": os.cpu_count(), "python": platform.python_version()},
                  load_average=os.getloadavg()[0])
    out = ROOT / "bench" / "results" / f"tasks-{result['backend'].split('+')[0]}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
