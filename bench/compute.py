"""Compute benchmark: control-plane overhead of a boot, boot to console marker, scheduler and create
throughput at 1,000 hosts, and flavor/image list requests per second.

    .venv/bin/python bench/compute.py [--servers 10] [--boots 5] [--seconds 5] [--connections 1,4,16]
                                      [--hosts 1000] [--creates 300] [--db-url URL] [--skip-cloud]

(a) and (b) and (d) start a real `yun up` (tests/cloud.py) with the QEMU driver forced to TCG, so
they need qemu-system-x86_64, qemu-img, genisoimage and the tiny image's tools; (d) needs `wrk`.
(a) boots ``--servers`` m1.nano servers one after the other (networks none) and times, from just
before ``POST /servers``:

- ``api_accepted``: the 202;
- ``spawn_entered``: the driver's ``spawn`` began (``spec.json`` in the instance directory is the
  first file it writes; nanosecond mtime);
- ``qemu_exists``: the QEMU process exists (``/proc/<pid>/stat`` start time of the pid in
  ``qemu.pid``; clock-tick resolution, 10 ms) and ``qemu_pidfile``: QEMU wrote its pidfile
  (it daemonized; nanosecond mtime);
- ``active``: the API shows ACTIVE (the agent reported back; includes waiting for QMP).

It then drives ``QemuDriver.spawn`` directly with the same image (the cloud stopped) and times
call -> QEMU process exists: the driver's own work (overlay, config drive, exec).  The
control-plane overhead is ``request -> QEMU exists`` minus that.
(b) boots ``--boots`` servers sequentially and times request -> ``YUNSTACK-READY`` in the console
log (read from the instance directory every 10 ms).
(c) runs in-process: ``scheduler.select`` over 1,000 ``HostState`` objects, then the full
``ComputeService.create`` path (policy, validation, quota, host states, select, claim, insert)
with 1,000 compute nodes registered by ``HostService.heartbeat`` (SQLite unless ``--db-url``).
(d) drives ``GET /compute/v2.1/flavors/detail`` and ``GET /image/v2/images`` with wrk.

Prints and writes JSON (bench/results/compute.json).  Not a test: it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.identity import run_wrk  # noqa: E402
from tests.cloud import RunningCloud, start_cloud  # noqa: E402

C = "/compute/v2.1"
LUA_GET = """
wrk.method = "GET"
wrk.headers["X-Auth-Token"] = "TOKEN"
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _btime() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


BOOT_TIME = _btime()


def _raw_start(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return BOOT_TIME + int(fields[19]) / CLK_TCK


def _calibrate() -> float:
    """``btime`` is whole seconds and the wall clock drifts from the boot clock (NTP): measure the
    offset with child processes whose start we bracket."""
    samples = []
    for _ in range(7):
        before = time.time()
        child = subprocess.Popen(["sleep", "0.05"])
        after = time.time()
        samples.append((before + after) / 2 - _raw_start(child.pid))
        child.wait()
    return statistics.median(samples)


START_OFFSET = _calibrate()


def proc_start(pid: int) -> float:
    """Wall-clock start of ``pid`` (resolution one clock tick, 10 ms)."""
    return _raw_start(pid) + START_OFFSET


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))], 1)

    return {"n": len(ordered), "p50": round(statistics.median(ordered), 1), "p95": pct(0.95),
            "min": round(ordered[0], 1), "max": round(ordered[-1], 1)}


class Client:
    def __init__(self, cloud: RunningCloud) -> None:
        auth = yaml.safe_load(cloud.clouds_yaml.read_text())["clouds"]["yunstack"]["auth"]
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": auth["username"], "domain": {"name": "Default"}, "password": auth["password"]}}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}}
        self.http = httpx.Client(base_url=cloud.url, timeout=60)
        r = self.http.post("/identity/v3/auth/tokens", json=body)
        r.raise_for_status()
        self.token = r.headers["x-subject-token"]
        self.http.headers.update({"X-Auth-Token": self.token, "OpenStack-API-Version": "compute 2.47"})
        project = r.json()["token"]["project"]["id"]
        unlimited = {"quota_set": {"instances": -1, "cores": -1, "ram": -1}}
        self.http.put(f"{C}/os-quota-sets/{project}", json=unlimited).raise_for_status()
        images = self.http.get("/image/v2/images", params={"name": "tiny"}).json()["images"]
        if not images:
            raise SystemExit(f"the cloud has no 'tiny' image; see {cloud.log}")
        self.image = images[0]["id"]

    def status(self, sid: str) -> dict[str, Any]:
        r = self.http.get(f"{C}/servers/{sid}")
        r.raise_for_status()
        return dict(r.json()["server"])

    def boot(self, name: str) -> tuple[str, float, float]:
        """POST a server; returns its id, the wall time just before the request and at the 202."""
        body = {"server": {"name": name, "imageRef": self.image, "flavorRef": "42", "networks": "none"}}
        t0 = time.time()
        r = self.http.post(f"{C}/servers", json=body)
        accepted = time.time()
        if r.status_code != 202:
            raise SystemExit(f"create failed: {r.status_code} {r.text}")
        return str(r.json()["server"]["id"]), t0, accepted

    def wait(self, sid: str, status: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.status(sid)
            if server["status"] == status and server["OS-EXT-STS:task_state"] is None:
                return server
            if server["status"] == "ERROR":
                raise SystemExit(f"server {sid} failed: {server.get('fault')}")
            time.sleep(0.05)  # the API shares the agent's process (and GIL): do not poll it hard
        raise SystemExit(f"server {sid} is not {status} after {timeout}s")

    def delete_all(self) -> None:
        servers = self.http.get(f"{C}/servers").json()["servers"]
        for s in servers:
            self.http.delete(f"{C}/servers/{s['id']}")
        deadline = time.monotonic() + 120
        while self.http.get(f"{C}/servers").json()["servers"] and time.monotonic() < deadline:
            time.sleep(0.2)


def wait_file(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear")
        time.sleep(0.005)


def bench_overhead(cloud: RunningCloud, client: Client, n: int) -> dict[str, Any]:
    """(a) request -> API 202, spawn entered, QEMU process exists, ACTIVE; sequential boots."""
    warm, _, _ = client.boot("warm-up")  # fills the image cache and the accel probe, not counted
    client.wait(warm, "ACTIVE")
    rows: dict[str, list[float]] = {k: [] for k in ("api_accepted", "spawn_entered", "qemu_exists",
                                                    "qemu_pidfile", "active")}
    for i in range(n):
        sid, t0, accepted = client.boot(f"ovh-{i}")
        inst = cloud.state_dir / "instances" / sid
        wait_file(inst / "qemu.pid")  # watch the file system, not the API, until QEMU runs
        client.wait(sid, "ACTIVE")
        active = time.time()
        pid = int((inst / "qemu.pid").read_text().split()[0])
        rows["api_accepted"].append((accepted - t0) * 1000)
        rows["spawn_entered"].append(((inst / "spec.json").stat().st_mtime_ns / 1e9 - t0) * 1000)
        rows["qemu_exists"].append((proc_start(pid) - t0) * 1000)
        rows["qemu_pidfile"].append(((inst / "qemu.pid").stat().st_mtime_ns / 1e9 - t0) * 1000)
        rows["active"].append((active - t0) * 1000)
    client.delete_all()
    return {f"request_to_{k}_ms": summary(v) for k, v in rows.items()}


def bench_boot(cloud: RunningCloud, client: Client, n: int) -> dict[str, Any]:
    """(b) request -> YUNSTACK-READY on the console, sequential."""
    times, active = [], []
    for i in range(n):
        sid, t0, _ = client.boot(f"boot-{i}")
        console = cloud.state_dir / "instances" / sid / "console.log"
        deadline = time.monotonic() + 120
        while True:
            if console.exists() and b"YUNSTACK-READY" in console.read_bytes():
                times.append((time.time() - t0) * 1000)
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"no YUNSTACK-READY from {sid}: {client.status(sid).get('fault')}")
            time.sleep(0.01)
        client.wait(sid, "ACTIVE")
        active.append(client.status(sid)["status"])
        client.delete_all()
    return {"request_to_console_marker_ms": summary(times), "target_ms": 3000}


def bench_driver_spawn(state: Path, base_image: Path, n: int) -> dict[str, Any]:
    """QemuDriver.spawn called directly: call -> QEMU process exists, and the whole call."""
    from yunstack import config as configmod
    from yunstack.compute.driver import ConfigDrive, InstanceSpec, root_disk
    from yunstack.compute.qemu.driver import QemuDriver

    cfg = configmod.load(None, env={}, server={"state_dir": str(state)}, qemu={"accel": "tcg"})
    driver = QemuDriver(cfg)

    async def run() -> dict[str, list[float]]:
        await driver.init_host()
        out: dict[str, list[float]] = {"qemu_exists": [], "qemu_pidfile": [], "spawn_returned": []}
        for i in range(n + 1):
            sid = str(uuid.uuid4())
            drive = ConfigDrive(meta_data={"uuid": sid, "name": f"d{i}", "hostname": f"d{i}"}, user_data=None,
                                network_data={"links": [], "networks": [], "services": []})
            spec = InstanceSpec(id=sid, name=f"d{i}", hostname=f"d{i}", vcpus=1, memory_mib=128,
                                disks=root_disk(base_image, "qcow2", 1), config_drive=drive)
            t0 = time.time()
            await driver.spawn(spec)
            returned = time.time()
            inst = cfg.instances_path / sid
            pid = int((inst / "qemu.pid").read_text().split()[0])
            if i:  # the first one pays for cold caches, as the cloud's warm-up server did
                out["qemu_exists"].append((proc_start(pid) - t0) * 1000)
                out["qemu_pidfile"].append(((inst / "qemu.pid").stat().st_mtime_ns / 1e9 - t0) * 1000)
                out["spawn_returned"].append((returned - t0) * 1000)
            await driver.destroy(sid)
        return out

    rows = asyncio.run(run())
    return {f"call_to_{k}_ms": summary(v) for k, v in rows.items()}


def bench_http(cloud: RunningCloud, client: Client, connections: list[int], seconds: int) -> dict[str, Any]:
    """(d) list endpoints under wrk."""
    script = LUA_GET.replace("TOKEN", client.token)
    return {
        "flavors_detail": [run_wrk(f"{cloud.url}{C}/flavors/detail", script, c, seconds) for c in connections],
        "images": [run_wrk(f"{cloud.url}/image/v2/images", script, c, seconds) for c in connections],
    }


def bench_scheduler(hosts: int, creates: int, db_url: str | None, qcow2: Path) -> dict[str, Any]:
    """(c) select() over HostState objects, and ComputeService.create with registered nodes."""
    from yunstack import config as configmod
    from yunstack.api.app import CATALOG
    from yunstack.compute import scheduler
    from yunstack.compute.agentlink import system_context
    from yunstack.compute.driver import HostInfo
    from yunstack.compute.service import ServerCreate
    from yunstack.wiring import build

    states = [scheduler.HostState(
        host=f"node-{i:04d}", availability_zone="nova", up=True, disabled=i % 50 == 0, vcpus=64,
        memory_mib=256 * 1024, local_gb=4096, vcpus_used=i % 64, memory_used_mib=(i * 977) % 200_000,
        disk_used_gb=i % 100, ram_allocation_ratio=1.5, cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0,
        reserved_host_memory_mib=512, instances=i % 40) for i in range(hosts)]
    spec = scheduler.RequestSpec(vcpus=1, memory_mib=128, disk_gb=1)
    rounds = 300
    started = time.perf_counter()
    for _ in range(rounds):
        decision = scheduler.select(states, spec)
    select_s = (time.perf_counter() - started) / rounds
    assert decision.host is not None

    with tempfile.TemporaryDirectory(prefix="yun-bench-sched-") as tmp:
        url = db_url or f"sqlite:///{tmp}/bench.db"
        if db_url:
            from sqlalchemy import create_engine, text

            name = f"yb_{uuid.uuid4().hex[:10]}"
            admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = db_url.rsplit("/", 1)[0] + "/" + name
        cfg = configmod.load(None, env={}, server={"state_dir": f"{tmp}/state"}, database={"url": url},
                             identity={"argon2_time_cost": 1, "argon2_memory_kib": 1024},
                             compute={"driver": "fake"})
        svc = build(cfg)
        try:
            boot = svc.identity.bootstrap(base_url=cfg.server.base_url, region="RegionOne", services=CATALOG,
                                          admin_password="adminpw")
            svc.flavors.ensure_defaults()
            ctx = system_context(boot.admin_project_id)
            image = svc.image.create(ctx, name="x", disk_format="qcow2", container_format="bare",
                                     visibility="public")
            svc.image.upload_local(ctx, image.id, qcow2)
            svc.quotas.update(ctx, boot.admin_project_id, {"instances": -1, "cores": -1, "ram": -1})
            started = time.perf_counter()
            for i in range(hosts):
                info = HostInfo(hostname=f"node-{i:04d}", vcpus=64, memory_mib=256 * 1024, memory_used_mib=0,
                                local_gb=4096, local_gb_used=0, hypervisor_type="fake", hypervisor_version=1,
                                cpu_info="{}", uptime="", accel="tcg")
                svc.hosts.heartbeat(info.hostname, info, availability_zone="nova", ram_allocation_ratio=1.5,
                                    cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0,
                                    reserved_host_memory_mib=512)
            heartbeat_s = time.perf_counter() - started
            req = ServerCreate(name="s", image_id=image.id, flavor_ref="42", networks="none")
            placed: set[str] = set()
            started = time.perf_counter()
            for i in range(creates):
                placed.update(s.host or "" for s in svc.compute.create(ctx, req, f"req-{i}"))
            create_s = time.perf_counter() - started
            batch = ServerCreate(name="b", image_id=image.id, flavor_ref="42", networks="none",
                                 min_count=10, max_count=10)
            started = time.perf_counter()
            batches = max(1, creates // 10)
            for i in range(batches):
                svc.compute.create(ctx, batch, f"req-b{i}")
            batch_s = time.perf_counter() - started
        finally:
            svc.close()
            if db_url:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    return {
        "hosts": hosts,
        "select_placements_per_s": round(1 / select_s, 1),
        "select_ms": round(select_s * 1000, 3),
        "target_select_placements_per_s": 2000,
        "database": "postgresql" if db_url else "sqlite",
        "heartbeat_registrations_per_s": round(hosts / heartbeat_s, 1),
        "create_placements_per_s": round(creates / create_s, 1),
        "create_ms": round(create_s / creates * 1000, 2),
        "creates": creates,
        "distinct_hosts_used": len(placed - {""}),
        "create_batch_of_10_placements_per_s": round(batches * 10 / batch_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", type=int, default=10, help="(a) sequential boots measured")
    ap.add_argument("--boots", type=int, default=5, help="(b) sequential boots to the console marker")
    ap.add_argument("--seconds", type=int, default=5, help="(d) wrk duration per run")
    ap.add_argument("--connections", default="1,4,16")
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--creates", type=int, default=300)
    ap.add_argument("--db-url", default=None, help="(c) PostgreSQL admin URL (scripts/postgres) instead of SQLite")
    ap.add_argument("--skip-cloud", action="store_true", help="only (c): no QEMU, no yun up")
    ap.add_argument("--overhead-only", action="store_true",
                    help="only (a) and the driver's own spawn: create -> QEMU overhead (no wrk, no scheduler)")
    ap.add_argument("--out", default=str(ROOT / "bench/results/compute.json"))
    args = ap.parse_args()
    disk_dir = Path(tempfile.mkdtemp(prefix="yun-bench-disk-"))
    qcow2 = disk_dir / "x.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(qcow2), "16M"], check=True, capture_output=True)
    result: dict[str, Any] = {
        "benchmark": "compute",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kvm": os.access("/dev/kvm", os.W_OK), "load_average_at_start": load_average()},
    }
    try:
        if not args.overhead_only:
            result["scheduler"] = bench_scheduler(args.hosts, args.creates, args.db_url, qcow2)
        if not args.skip_cloud:
            if shutil.which("wrk") is None and not args.overhead_only:
                sys.exit("wrk is missing: apt-get install wrk")
            state = Path(tempfile.mkdtemp(prefix="yun-bench-"))
            cloud = start_cloud(state, env={"YUN_QEMU_ACCEL": "tcg"}, timeout=300)
            try:
                client = Client(cloud)
                conns = [int(x) for x in args.connections.split(",")]
                if not args.overhead_only:
                    result["http"] = bench_http(cloud, client, conns, args.seconds)
                result["overhead"] = bench_overhead(cloud, client, args.servers)
                if not args.overhead_only:
                    result["boot_to_console"] = bench_boot(cloud, client, args.boots)
                client.delete_all()
            finally:
                cloud.stop()
            tiny = state / "tiny-image" / "tiny.qcow2"
            driver_state = Path(tempfile.mkdtemp(prefix="yun-bench-drv-"))
            try:
                result["driver_spawn"] = bench_driver_spawn(driver_state, tiny, args.servers)
            finally:
                shutil.rmtree(driver_state, ignore_errors=True)
                shutil.rmtree(state, ignore_errors=True)
            ovh, drv = result["overhead"], result["driver_spawn"]
            result["control_plane_overhead_ms"] = {
                "p50": round(ovh["request_to_qemu_exists_ms"]["p50"] - drv["call_to_qemu_exists_ms"]["p50"], 1),
                "p50_by_pidfile": round(ovh["request_to_qemu_pidfile_ms"]["p50"]
                                        - drv["call_to_qemu_pidfile_ms"]["p50"], 1),
                "p50_request_to_spawn_entered": ovh["request_to_spawn_entered_ms"]["p50"],
                "target_ms": 100,
            }
    finally:
        shutil.rmtree(disk_dir, ignore_errors=True)
    result["machine"]["load_average_at_end"] = load_average()
    result["notes"] = ("qemu_exists has clock-tick (10 ms) resolution; qemu_pidfile and spawn_entered use "
                       "nanosecond file mtimes; guests run under TCG; the memory manager runs with its defaults")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
