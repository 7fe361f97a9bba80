"""Control-plane overhead of a server create, without QEMU: request -> driver.spawn entered.

Runs the whole API in-process (the same app `yun up` serves) with the embedded agent and the fake
compute driver, so the number is only yunstack's own work: auth, validation, quota, scheduling and
claim in one transaction, the agent's wake-up, its read of the work and the spec.  Real QEMU's own
start time is measured separately by bench/compute.py.  Target: p50 <= 100 ms.

    .venv/bin/python bench/control_plane.py [--servers 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import Api, make_config  # noqa: E402

from yunstack.agent.host import make_agent  # noqa: E402
from yunstack.api.app import CATALOG  # noqa: E402
from yunstack.compute.driver import InstanceSpec  # noqa: E402
from yunstack.compute.fake import FakeDriver  # noqa: E402
from yunstack.wiring import build  # noqa: E402


class TimedFake(FakeDriver):
    """The fake driver, noting when each spawn is entered."""

    entered: dict[str, float] = {}

    async def spawn(self, spec: InstanceSpec) -> None:
        self.entered[spec.id] = time.perf_counter()
        await super().spawn(spec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=9, help="creates to time (quota allows 10 per project)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/control_plane.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="yun-cp-"))
    cfg = make_config(tmp, f"sqlite:///{tmp}/bench.db")
    svc = build(cfg)
    svc.identity.bootstrap(base_url=cfg.server.base_url, region="RegionOne", services=CATALOG,
                           admin_password="adminpw")
    svc.flavors.ensure_defaults()
    driver = TimedFake(hostname=cfg.host_name)
    agent = make_agent(svc.config, svc.host_link, driver=driver)
    agent.start()
    api = Api(svc)
    headers = {"X-Auth-Token": api.admin(), "OpenStack-API-Version": "compute 2.47"}
    image = tmp / "x.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(image), "16M"], check=True, capture_output=True)
    made = api.http.post("/image/v2/images", headers=headers, json={
        "name": "bench", "disk_format": "qcow2", "container_format": "bare", "visibility": "public"}).json()
    api.http.put(f"/image/v2/images/{made['id']}/file", content=image.read_bytes(),
                 headers={**headers, "Content-Type": "application/octet-stream"})
    accepted, entered = [], []
    try:
        for i in range(args.servers):
            began = time.perf_counter()
            r = api.http.post("/compute/v2.1/servers", headers=headers, json={"server": {
                "name": f"cp-{i}", "imageRef": made["id"], "flavorRef": "42", "networks": "none"}})
            done = time.perf_counter()
            assert r.status_code == 202, r.text
            sid = r.json()["server"]["id"]
            deadline = time.monotonic() + 10
            while sid not in driver.entered and time.monotonic() < deadline:
                time.sleep(0.0005)
            accepted.append((done - began) * 1000)
            entered.append((driver.entered[sid] - began) * 1000)
    finally:
        agent.stop()
        svc.close()
    result: dict[str, Any] = {
        "benchmark": "control_plane_create",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "servers": args.servers,
        "api_accepted_ms": {"p50": round(statistics.median(accepted), 1), "max": round(max(accepted), 1)},
        "request_to_spawn_entered_ms": {"p50": round(statistics.median(entered), 1),
                                        "max": round(max(entered), 1)},
        "target_p50_ms": 100,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
