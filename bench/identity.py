"""Identity benchmark: token validation and issue throughput and latency, and `yun up` idle RSS.

Starts a real `yun up` on a free loopback port with a fresh state dir, then drives it with `wrk`
(Debian package `wrk`; C, so the load generator does not eat the CPU it measures) at several
concurrency levels.  Prints and writes JSON (bench/results/identity.json).  Not a test: it reports.

    .venv/bin/python bench/identity.py [--seconds 10] [--connections 1,4,16]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cloud import start_cloud  # noqa: E402

LUA_ISSUE = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[BODY]]
"""
LUA_VALIDATE = """
wrk.method = "GET"
wrk.headers["X-Auth-Token"] = "TOKEN"
wrk.headers["X-Subject-Token"] = "TOKEN"
"""


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url: str, script: str, connections: int, seconds: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s",
                          "--latency", "-s", fh.name, url], capture_output=True, text=True, check=True).stdout
    Path(fh.name).unlink()
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)", out, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"connections": connections, "requests_per_s": round(rps, 1), "p50_ms": _ms(pct.get("50", "")),
            "p99_ms": _ms(pct.get("99", "")), "errors": int(non2xx.group(1)) if non2xx else 0}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", default="1,4,16")
    ap.add_argument("--out", default=str(ROOT / "bench/results/identity.json"))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    state = Path(tempfile.mkdtemp(prefix="yun-bench-"))
    cloud = start_cloud(state, env={"YUN_COMPUTE_DRIVER": "fake"})
    try:
        time.sleep(3)
        idle_rss = rss_mib(cloud.proc.pid)
        import yaml

        auth = yaml.safe_load(cloud.clouds_yaml.read_text())["clouds"]["yunstack"]["auth"]
        body = json.dumps({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": auth["username"], "domain": {"name": "Default"}, "password": auth["password"]}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}})
        r = httpx.post(f"{cloud.url}/identity/v3/auth/tokens", content=body,
                       headers={"Content-Type": "application/json"})
        token = r.headers["x-subject-token"]
        url = f"{cloud.url}/identity/v3/auth/tokens"
        conns = [int(x) for x in args.connections.split(",")]
        validate = [run_wrk(url, LUA_VALIDATE.replace("TOKEN", token), c, args.seconds) for c in conns]
        issue = [run_wrk(url, LUA_ISSUE.replace("BODY", body), c, args.seconds) for c in conns]
        result = {
            "benchmark": "identity",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
            "yun_up_idle_rss_mib": round(idle_rss, 1),
            "yun_up_rss_after_mib": round(rss_mib(cloud.proc.pid), 1),
            "token_validate": validate,
            "token_issue_password": issue,
            "notes": "password issue cost is dominated by argon2id (memory-hard, 19 MiB, t=2) by design",
        }
    finally:
        cloud.stop()
        shutil.rmtree(state, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
