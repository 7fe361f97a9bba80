"""bench/dashboard.py end to end, scaled down (5 servers, 3 timed requests), so that it does not rot.

It starts its own ``yun up`` (fake driver, fake dataplane) on a free port and its own state dir;
the numbers are not checked (a test machine's are meaningless), the report's shape and sense are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import need

BENCH = Path(__file__).resolve().parents[3] / "bench" / "dashboard.py"


def test_the_dashboard_benchmark_runs_end_to_end_and_writes_its_report(tmp_path: Path) -> None:
    need(shutil.which("qemu-img") is not None, "qemu-img")
    out = tmp_path / "dashboard.json"
    done = subprocess.run([sys.executable, str(BENCH), "--servers", "5", "--requests", "3", "--batch", "2",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "dashboard" and report["servers"] == 5 and report["database"] == "sqlite"
    for block in ("instances_page_ms", "instances_table_ms", "api_servers_detail_ms", "api_images_ms"):
        assert report[block]["n"] == 3 and 0 < report[block]["p50"] <= report[block]["max"]
    visit = report["first_visit"]
    requested = [r["request"] for r in visit["requests"]]
    assert requested[0] == "GET /" and requested[-1] == "GET /dashboard/project/instances"
    assert any(r.startswith("GET /dashboard/static/htmx") for r in requested)
    assert any(r.startswith("GET /dashboard/static/dashboard.css") for r in requested)
    # The static files came gzip-compressed, the pages as they are.
    assert visit["compressed"] and all("/static/" in r for r in visit["compressed"])
    assert visit["wire_bytes"] < visit["bytes"]
    assert visit["total_bytes"] == visit["bytes"] + visit["header_bytes"] > visit["instances_page_bytes"]
