"""Server list at scale: ``GET /compute/v2.1/servers/detail?limit=...`` p50 with 10,000 servers.

Fills one project with ``--servers`` instance rows (direct inserts: no QEMU, no agent; the rows
are what the API would have written), serves the real API with uvicorn on a free port, and times
sequential requests over HTTP with httpx: the first page, a page deep in the list (by marker), a
page under the RE2 ``name`` filter (which runs per row, batch by batch), the brief list and the
admin's ``all_tenants`` view.  Target: first page p50 <= 100 ms at 10,000 servers.

    .venv/bin/python bench/server_list.py --db-url $(scripts/postgres) [--servers 10000]
                                          [--limit 100] [--requests 30]

``--db-url`` is a PostgreSQL server URL (a throw-away database is created there and dropped
afterwards); ``sqlite`` uses a file in a temporary directory instead.
Prints and writes JSON (bench/results/server_list.json).  Not a test: it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import create_engine, insert, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_config  # noqa: E402

from yunstack.api.app import CATALOG, create_app  # noqa: E402
from yunstack.db.tables import compute as t  # noqa: E402
from yunstack.wiring import Services, build  # noqa: E402

C = "/compute/v2.1"


@contextmanager
def database(url: str, tmp: Path) -> Iterator[str]:
    if url == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    name = f"yb_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(svc: Services, project_id: str, user_id: str, n: int) -> None:
    """``n`` servers in one project, as create would have written them (active, on one host)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    flavor = {"id": "42", "name": "m1.nano", "vcpus": 1, "ram": 128, "disk": 1, "ephemeral": 0, "swap": 0,
              "extra_specs": {}}
    rows = []
    for i in range(n):
        at = start + timedelta(seconds=i)
        rows.append({
            "id": str(uuid.uuid4()), "name": f"vm-{i}", "hostname": f"vm-{i}", "project_id": project_id,
            "user_id": user_id, "host": f"node{i % 50}", "availability_zone": "nova", "flavor": flavor,
            "image_id": "00000000-0000-4000-8000-000000000000", "meta": {"k": "v"}, "tags": [],
            "config_drive": True, "vm_state": "active", "task_state": None, "power_state": 1, "progress": 0,
            "locked": False, "access_ipv4": "", "access_ipv6": "", "reservation_id": f"r-{i}",
            "launch_index": 0, "security_groups": ["default"], "created_at": at, "updated_at": at,
            "launched_at": at})
    with svc.db.begin() as s:
        for chunk in range(0, n, 1000):
            s.execute(insert(t.Instance), rows[chunk:chunk + 1000])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
            "min": round(ordered[0], 1), "max": round(ordered[-1], 1)}


def timed(call: Callable[[], httpx.Response], n: int) -> tuple[dict[str, float], httpx.Response]:
    call()  # warm
    times = []
    r = None
    for _ in range(n):
        began = time.perf_counter()
        r = call()
        times.append((time.perf_counter() - began) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{r.status_code} {r.text}")
    assert r is not None
    return summary(times), r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db-url", required=True, help="PostgreSQL server URL (scripts/postgres), or 'sqlite'")
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "bench/results/server_list.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="yun-list-"))
    with database(args.db_url, tmp) as url:
        cfg = make_config(tmp, url)
        svc = build(cfg)
        try:
            result = run(svc, args)
        finally:
            svc.close()
    result.update(when=datetime.now(UTC).isoformat(timespec="seconds"),
                  machine={"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average": [round(x, 2) for x in os.getloadavg()]})
    text_out = json.dumps(result, indent=2)
    print(text_out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text_out + "\n")


def run(svc: Services, args: argparse.Namespace) -> dict[str, Any]:
    svc.identity.bootstrap(base_url=svc.config.server.base_url, region="RegionOne", services=CATALOG,
                           admin_password="adminpw")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(svc), host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline:
                raise SystemExit("uvicorn did not start")
            time.sleep(0.02)
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": "adminpw"}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
        r = http.post("/identity/v3/auth/tokens", json=body)
        r.raise_for_status()
        token = r.json()["token"]
        http.headers.update({"X-Auth-Token": r.headers["x-subject-token"],
                             "OpenStack-API-Version": "compute 2.47"})
        began = time.perf_counter()
        fill(svc, token["project"]["id"], token["user"]["id"], args.servers)
        fill_s = time.perf_counter() - began
        limit = str(args.limit)
        first, page = timed(lambda: http.get(f"{C}/servers/detail", params={"limit": limit}), args.requests)
        assert len(page.json()["servers"]) == min(args.limit, args.servers)
        # The marker 90 % of the way down the list (newest first): a keyset page costs the same.
        deep_marker = f"vm-{args.servers // 10}"
        marker_id = http.get(f"{C}/servers", params={"name": f"^{deep_marker}$"}).json()["servers"][0]["id"]
        deep, _ = timed(lambda: http.get(f"{C}/servers/detail", params={"limit": limit, "marker": marker_id}),
                        args.requests)
        # Matches 1 server in 10 (vm-...1): the per-row filter reads batches until the page is full.
        named, r = timed(lambda: http.get(f"{C}/servers/detail", params={"limit": limit, "name": "1$"}),
                         args.requests)
        assert all(s["name"].endswith("1") for s in r.json()["servers"])
        brief, _ = timed(lambda: http.get(f"{C}/servers", params={"limit": limit}), args.requests)
        tenants, _ = timed(lambda: http.get(f"{C}/servers/detail", params={"limit": limit, "all_tenants": "1"}),
                           args.requests)
        return {
            "database": svc.engine.dialect.name, "servers": args.servers, "limit": args.limit,
            "fill_s": round(fill_s, 2),
            "detail_first_page_ms": first, "detail_deep_page_by_marker_ms": deep,
            "detail_name_filter_page_ms": named, "brief_first_page_ms": brief,
            "detail_all_tenants_page_ms": tenants, "target_p50_ms": 100,
        }
    finally:
        http.close()
        server.should_exit = True
        thread.join(10)


if __name__ == "__main__":
    main()
