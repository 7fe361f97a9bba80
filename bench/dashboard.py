"""The dashboard at 200 servers: the instances page's server time, and what a first visit downloads.

Starts a real ``yun up`` on a free loopback port with a fresh state dir, the **fake** compute driver
and the fake dataplane (no QEMU, no bridges: the servers are rows and fake guests, so the numbers are
the control plane's and the dashboard's own), raises the ``demo`` project's quotas as admin, makes a
network with a subnet, and launches ``--servers`` servers on it through the API (``--batch`` per
request), waiting until every one is ACTIVE.  Then, over real HTTP with httpx, as a browser would:

- ``first_visit``: ``GET /`` (303s to the sign-in page), the sign-in page, every static file it
  references (``<script src>``, ``<link href>``), the sign-in POST (303 to the instances page) and
  the instances page with any file it references that the sign-in page did not (a browser has those;
  their URLs carry a content hash and are ``immutable``).  ``bytes`` are the decoded bodies,
  ``wire_bytes`` what came over the socket with ``Accept-Encoding: gzip, deflate`` (bodies as sent,
  so compressed where the server compresses), ``header_bytes`` the response heads (status line and
  header lines, as HTTP/1.1 sends them).  Target: ``bytes`` plus ``header_bytes`` <= 500 KB.
  ``instances_page_gzip_bytes`` is what the page would weigh gzip-compressed (the server compresses
  only static files).
- ``instances_page_ms``: ``--requests`` sequential GETs of ``/dashboard/project/instances`` on one
  keep-alive connection, each timed from sending the request to the last byte of the body (server
  time over loopback), after one untimed warm-up.  Target: p50 <= 100 ms at 200 servers.
- ``instances_table_ms``: the same for ``/dashboard/project/instances/table``, the fragment htmx
  polls every 5 s (2 s while a server changes) for as long as the page is open.
- ``api_servers_detail_ms`` and ``api_images_ms``: the two API calls those pages make, timed the same
  way with the same user's token: the part of the page's time that is the API's.

    .venv/bin/python bench/dashboard.py [--servers 200] [--requests 50] [--batch 25] [--db-url URL]

``--db-url`` is a PostgreSQL server URL (a throw-away database is created there and dropped
afterwards); the default ``sqlite`` is ``yun up``'s own file in the state dir.  Prints and writes
JSON (bench/results/dashboard.json).  Not a test: it reports.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.server_list import database  # noqa: E402
from tests.cloud import RunningCloud, start_cloud  # noqa: E402

C, N, IM = "/compute/v2.1", "/networking/v2.0", "/image/v2"
PAGE, TABLE = "/dashboard/project/instances", "/dashboard/project/instances/table"
# What Chromium sends for a page; httpx decodes gzip and deflate itself (br would need brotli).
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
           "Accept-Encoding": "gzip, deflate", "User-Agent": "yunstack-bench"}
TARGET_P50_MS = 100
TARGET_FIRST_VISIT_BYTES = 500_000
WAIT_S = 600.0


class Assets(HTMLParser):
    """The static files a page makes a browser fetch: ``<script src>`` and ``<link href>``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = found.get("src") if tag == "script" else found.get("href") if tag == "link" else None
        if url:
            self.urls.append(url)


def assets(html: str) -> list[str]:
    parser = Assets()
    parser.feed(html)
    return parser.urls


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1), "p90": at(0.90), "p95": at(0.95),
            "p99": at(0.99), "min": round(ordered[0], 1), "max": round(ordered[-1], 1)}


def timed(call: Callable[[], httpx.Response], n: int) -> tuple[dict[str, float], httpx.Response]:
    """``n`` sequential calls after one warm-up, each from request to the body's last byte."""
    r = call()
    times = []
    for _ in range(n):
        began = time.perf_counter()
        r = call()  # httpx reads the whole body before returning
        times.append((time.perf_counter() - began) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{r.request.url.path}: {r.status_code} {r.text[:500]}")
    return summary(times), r


def head_bytes(r: httpx.Response) -> int:
    """The response head as HTTP/1.1 sends it: status line, ``name: value`` lines, blank line."""
    status = len(f"HTTP/1.1 {r.status_code} {r.reason_phrase}\r\n")
    return status + sum(len(k) + len(v) + 4 for k, v in r.headers.raw) + 2


def sign_in(api: str, user: str, password: str, project: str) -> tuple[str, dict[str, Any]]:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    r = httpx.post(f"{api}/identity/v3/auth/tokens", json=body, timeout=60)
    r.raise_for_status()
    return r.headers["x-subject-token"], r.json()["token"]


def ok(r: httpx.Response, *codes: int) -> httpx.Response:
    if r.status_code not in codes:
        raise SystemExit(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}")
    return r


def populate(cloud: RunningCloud, args: argparse.Namespace, tmp: Path) -> tuple[dict[str, str], float]:
    """The demo project's quotas raised, a network, an image, ``--servers`` ACTIVE servers; the demo
    user's credentials and the seconds from the first create to the last ACTIVE."""
    clouds = yaml.safe_load(cloud.clouds_yaml.read_text())["clouds"]
    admin_auth, demo_auth = clouds["yunstack"]["auth"], clouds["yunstack-demo"]["auth"]
    admin_token, _ = sign_in(cloud.url, "admin", admin_auth["password"], "admin")
    demo_token, demo = sign_in(cloud.url, "demo", demo_auth["password"], "demo")
    project_id = demo["project"]["id"]
    admin = httpx.Client(base_url=cloud.url, headers={"X-Auth-Token": admin_token}, timeout=120)
    user = httpx.Client(base_url=cloud.url, headers={"X-Auth-Token": demo_token,
                                                     "OpenStack-API-Version": "compute 2.47"}, timeout=120)
    with admin, user:
        ok(admin.put(f"{C}/os-quota-sets/{project_id}",
                     json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}}), 200)
        ok(admin.put(f"{N}/quotas/{project_id}", json={"quota": {"port": -1}}), 200)
        disk = tmp / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "16M"], check=True, capture_output=True)
        image = ok(admin.post(f"{IM}/images", json={"name": "bench", "disk_format": "qcow2",
                                                    "container_format": "bare", "visibility": "public"}), 201)
        ok(admin.put(f"{IM}/images/{image.json()['id']}/file", content=disk.read_bytes(),
                     headers={"Content-Type": "application/octet-stream"}), 204)
        net = ok(user.post(f"{N}/networks", json={"network": {"name": "bench"}}), 201).json()["network"]
        ok(user.post(f"{N}/subnets", json={"subnet": {"network_id": net["id"], "ip_version": 4,
                                                      "cidr": "10.20.0.0/16", "name": "bench"}}), 201)
        began = time.perf_counter()
        left = args.servers
        while left:
            count = min(args.batch, left)
            server = {"name": f"vm-{args.servers - left}", "imageRef": image.json()["id"], "flavorRef": "42",
                      "networks": [{"uuid": net["id"]}], "min_count": count, "max_count": count}
            ok(user.post(f"{C}/servers", json={"server": server}), 202)
            left -= count
        deadline = time.monotonic() + WAIT_S
        while True:
            servers = ok(user.get(f"{C}/servers/detail"), 200).json()["servers"]
            states = [s["status"] for s in servers if s["OS-EXT-STS:task_state"] is None]
            if "ERROR" in states:
                raise SystemExit(f"a server went to ERROR: {next(s for s in servers if s['status'] == 'ERROR')}")
            if len(servers) == args.servers and states.count("ACTIVE") == args.servers:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{states.count('ACTIVE')} of {args.servers} ACTIVE after {WAIT_S:.0f} s")
            time.sleep(0.5)
        active_s = time.perf_counter() - began
    return {"user": "demo", "password": demo_auth["password"], "token": demo_token}, active_s


def first_visit(http: httpx.Client, demo: dict[str, str]) -> dict[str, Any]:
    """A browser's first visit, signed out with an empty cache, to the instances page; ``http`` is
    left signed in."""
    fetched: list[dict[str, Any]] = []
    seen: set[str] = set()

    def get(url: str, method: str = "GET", **kw: Any) -> httpx.Response:
        r = http.request(method, url, **kw)
        fetched.append({"request": f"{method} {r.request.url.raw_path.decode()}", "status": r.status_code,
                        "bytes": len(r.content), "wire_bytes": r.num_bytes_downloaded,
                        "header_bytes": head_bytes(r), "content_encoding": r.headers.get("content-encoding", "")})
        return r

    def follow(r: httpx.Response) -> httpx.Response:
        while r.is_redirect:
            r = get(r.headers["location"])
        return ok(r, 200)

    def files(page: httpx.Response) -> None:
        for url in assets(page.text):
            if url not in seen:  # a browser fetches a URL once; these are cached as immutable
                seen.add(url)
                ok(get(url), 200)

    login = follow(get("/"))
    files(login)
    found = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    if found is None:
        raise SystemExit("the sign-in page has no CSRF token")
    page = follow(get("/dashboard/login", "POST", data={"csrf_token": found.group(1), "domain": "Default",
                                                         "user": demo["user"], "password": demo["password"]}))
    if 'id="instances"' not in page.text:
        raise SystemExit("the sign-in did not reach the instances page")
    files(page)
    total = {k: sum(f[k] for f in fetched) for k in ("bytes", "wire_bytes", "header_bytes")}
    return {"requests": fetched, "instances_page_bytes": len(page.content),
            # What the page would weigh if the server compressed pages (it does not: BREACH).
            "instances_page_gzip_bytes": len(gzip.compress(page.content, 6)), **total,
            "total_bytes": total["bytes"] + total["header_bytes"],
            "total_wire_bytes": total["wire_bytes"] + total["header_bytes"],
            "compressed": sorted({f["request"] for f in fetched if f["content_encoding"]}),
            "target_total_bytes": TARGET_FIRST_VISIT_BYTES}


def run(cloud: RunningCloud, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    demo, active_s = populate(cloud, args, tmp)
    with httpx.Client(base_url=cloud.url, headers=BROWSER, timeout=120) as browser:
        visit = first_visit(browser, demo)
        rows = browser.get(PAGE).text.count('<tr id="server-')
        if rows != args.servers:
            raise SystemExit(f"the instances page shows {rows} servers, not {args.servers}")
        page, _ = timed(lambda: browser.get(PAGE), args.requests)
        table, _ = timed(lambda: browser.get(TABLE), args.requests)
    api = {"X-Auth-Token": demo["token"], "OpenStack-API-Version": "compute 2.47"}
    with httpx.Client(base_url=cloud.url, headers=api, timeout=120) as client:
        detail, _ = timed(lambda: client.get(f"{C}/servers/detail"), args.requests)
        images, _ = timed(lambda: client.get(f"{IM}/images"), args.requests)
    return {"servers": args.servers, "servers_active_s": round(active_s, 1), "first_visit": visit,
            "instances_page_ms": page, "instances_table_ms": table, "api_servers_detail_ms": detail,
            "api_images_ms": images, "target_p50_ms": TARGET_P50_MS}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=200)
    ap.add_argument("--requests", type=int, default=50, help="timed GETs of each page")
    ap.add_argument("--batch", type=int, default=25, help="servers per create request (min_count = max_count)")
    ap.add_argument("--db-url", default="sqlite", help="PostgreSQL server URL (scripts/postgres), or 'sqlite'")
    ap.add_argument("--out", default=str(ROOT / "bench/results/dashboard.json"))
    args = ap.parse_args()
    if shutil.which("qemu-img") is None:
        sys.exit("qemu-img is missing (the image upload checks the image with it)")
    tmp = Path(tempfile.mkdtemp(prefix="yun-dash-"))
    load_at_start = os.getloadavg()
    env = {"YUN_COMPUTE_DRIVER": "fake", "YUN_NETWORK_DATAPLANE": "fake", "YUN_IMAGE_BOOTSTRAP_TINY": "false",
           # This checkout's code, also where the environment's package is another checkout's.
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    try:
        with database(args.db_url, tmp) as url:
            if args.db_url != "sqlite":
                env["YUN_DATABASE_URL"] = url
            cloud = start_cloud(tmp / "state", env=env, timeout=120)
            try:
                result = run(cloud, args, tmp)
            finally:
                cloud.stop()
            result["database"] = "sqlite" if args.db_url == "sqlite" else "postgresql"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"benchmark": "dashboard", "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_average_at_start": [round(x, 2) for x in load_at_start],
                          "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
              **result}
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
