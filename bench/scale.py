"""Many hosts, one control plane: placement rate, heartbeat CPU and server list at scale.

The control plane is the real API (``create_app``) under uvicorn in a process of its own, on
PostgreSQL.  ``--hosts`` simulated compute hosts are coroutines in this process that speak the
real agent protocol over HTTP (``/agent/v1``, httpx, each with its own host credential): they
report their resources as an idle agent does (at start, then once a minute: nothing changes), hold
the long-poll (``wait``, the agent's sign of life) at all times, and answer each spawn the way an
agent on the fake driver would (``spec``, then ``finish`` with a running guest).  No QEMU, no
driver: what is measured is the control plane.

1. ``heartbeat_cpu``: with every host reporting and long-polling and nothing else happening, the
   server process's CPU time (``/proc/PID/stat``) over ``--window`` seconds (at least a minute:
   one round of reports), as a fraction of one core.  Target <= 25 % at 1,000 hosts.
   ``--periodic`` adds the rest of an idle agent's periodic calls (power sync, network state and
   memory report, each at the agent's period) and measures them as ``periodic_cpu``.
2. ``placement``: ``--servers`` creates through ``POST /servers`` from ``--clients`` concurrent
   clients; the rate is servers ACTIVE per second, from the first request to the last ACTIVE
   (create -> schedule and claim -> wake -> spec -> finish).  Target >= 200/s.
3. ``server_list``: the project topped up to ``--list-servers`` with rows as create writes them
   (``bench/server_list.py``'s fill), then ``GET /servers/detail?limit=100`` p50.  Target <= 100 ms.

    .venv/bin/python bench/scale.py --db-url $(scripts/postgres) [--hosts 1000] [--servers 2000]
                                    [--clients 16] [--window 30] [--list-servers 10000]

Host credentials are issued directly (``HostAuthService.issue``) instead of a join per host; a
join is one extra request per host and is not what is measured.  Prints and writes JSON
(bench/results/scale.json).  Not a test: it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import server_list  # noqa: E402
from tests.conftest import make_config  # noqa: E402

from yunstack.agent import agent as agent_mod  # noqa: E402
from yunstack.agent.wire import METHODS  # noqa: E402
from yunstack.api.app import CATALOG  # noqa: E402
from yunstack.compute.driver import HostInfo, PowerState  # noqa: E402
from yunstack.protocol import Outcome, Work  # noqa: E402
from yunstack.protocol.steps import SpawnResult  # noqa: E402
from yunstack.wiring import build  # noqa: E402

C = "/compute/v2.1"
REPORT_SECONDS = agent_mod.REPORT_SECONDS  # an idle host's resource report: nothing changes in between
LONG_POLL_SECONDS = agent_mod.LONG_POLL_SECONDS
TICK = os.sysconf("SC_CLK_TCK")
KEEP_ALIVE_SERVER, KEEP_ALIVE_CLIENT = 75, 30.0  # seconds an idle HTTP connection is kept


def _stat_cpu(stat: str) -> float:
    """User + system CPU seconds from a ``/proc/PID/stat`` line (the name may hold spaces)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads)."""
    return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def database_cpu_seconds() -> float:
    """CPU time so far of every PostgreSQL process on this machine (the bench's database server's:
    the test cluster of ``scripts/postgres``; 0 on SQLite)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended while we looked
        name = text[text.index("(") + 1:text.rindex(")")]
        if name.startswith("postgres"):
            total += _stat_cpu(text)
    return total


def machine_cpu(server_pid: int) -> dict[str, float]:
    """Where this machine's CPU went so far: the control plane, its database, this bench process
    (the simulated hosts and the API clients)."""
    return {"control_plane": cpu_seconds(server_pid), "database": database_cpu_seconds(),
            "bench": time.process_time()}


NETWORK_SECONDS = 30.0  # [network] reconcile_period's default: the agent fetches its network state
GIB = 1 << 30
# An idle host's memory ledger entry (memory.manager.LedgerEntry.as_dict): no guests, no pressure.
IDLE_MEMORY_ENTRY: dict[str, Any] = {
    "wall_time": 0.0, "timestamp": 0.0, "level": "none", "guests": [], "errors": [], "reasons": [],
    "host": {"physical": 256 * GIB, "committed": 0, "guests_resident": 0, "guests_used": 0,
             "consolidation_ratio": 1.0, "savings_ksm": 0, "savings_balloon": 0, "savings_swap": 0,
             "shared_method": "none", "ksm_pages_sharing": 0, "ksm_run": 0, "available": 250 * GIB,
             "swap_free": 0, "psi_some_avg10": 0.0, "admission_room": 240 * GIB, "admission_blocked": None},
    "manager": {"tick_seconds": 0.01, "cpu_seconds": 0.005, "rss_bytes": 60 << 20},
}


def host_info(name: str) -> HostInfo:
    return HostInfo(hostname=name, vcpus=64, memory_mib=262144, memory_used_mib=4096, local_gb=2000,
                    local_gb_used=10, hypervisor_type="QEMU", hypervisor_version=8002000, cpu_info="{}",
                    uptime=" 10:00:00 up 1 day", accel="tcg")


@dataclasses.dataclass
class Stats:
    heartbeats: int = 0
    polls: int = 0
    periodic: int = 0
    spawned: int = 0
    errors: int = 0
    active_at: dict[str, float] = dataclasses.field(default_factory=dict)


class SimHost:
    """One simulated compute host: heartbeat, long-poll, answer spawns; the real wire format."""

    def __init__(self, name: str, credential: str, http: httpx.AsyncClient, stats: Stats) -> None:
        self.name, self.http, self.stats = name, http, stats
        self.inflight: set[str] = set()  # task ids of the steps it runs now
        self.headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}

    async def call(self, method: str, *, http_timeout: float = 60.0, **args: Any) -> Any:
        spec = METHODS[method]
        r = await self.http.post(f"/agent/v1/hosts/{self.name}/calls/{method}", content=spec.encode_args(args),
                                 headers=self.headers, timeout=http_timeout)
        if r.status_code != 200:
            self.stats.errors += 1
            raise RuntimeError(f"{self.name} {method}: {r.status_code} {r.text[:200]}")
        return spec.decode_result(r.content)

    async def start(self, stop: asyncio.Event, after: float) -> None:
        """Come up ``after`` seconds from now, then report and long-poll until ``stop``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), after)
        await asyncio.gather(self.heartbeats(stop), self.polls(stop))

    async def heartbeats(self, stop: asyncio.Event) -> None:
        """The resource report: at start (it registers the host), then once a minute, as an agent
        whose host does not change sends it; hosts do not report in lockstep."""
        first = True
        while not stop.is_set():
            try:
                await self.call("heartbeat", host=self.name, info=host_info(self.name))
                self.stats.heartbeats += 1
            except Exception:  # counted in errors; a real agent tries again next period too
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), random.uniform(1, REPORT_SECONDS) if first else REPORT_SECONDS)
            first = False

    async def periodic(self, stop: asyncio.Event) -> None:
        """``--periodic``: what else an idle agent sends on its own periods (agent.agent._tick,
        the network reconciler): its guests' power states, its network state, its memory report."""
        every = {"sync_power": agent_mod.POWER_RESYNC_SECONDS, "network_state": NETWORK_SECONDS,
                 "report_memory": agent_mod.MEMORY_REPORT_SECONDS}
        due = {m: time.monotonic() + random.uniform(0, p) for m, p in every.items()}
        while not stop.is_set():
            method = min(due, key=lambda m: due[m])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due[method] - time.monotonic()))
            if stop.is_set():
                return
            args: dict[str, Any] = {"host": self.name}
            if method == "sync_power":
                args.update(infos=[], busy=sorted(self.inflight))
            elif method == "network_state":
                args.update(tunnel_ip="")
            else:
                args.update(entry=IDLE_MEMORY_ENTRY)
            with contextlib.suppress(Exception):
                await self.call(method, **args)
                self.stats.periodic += 1
            due[method] = time.monotonic() + every[method]

    async def polls(self, stop: asyncio.Event) -> None:
        """The long-poll, held all the time as an idle agent holds it; work is answered at once."""
        while not stop.is_set():
            try:
                # As a real agent: the steps it runs are its busy list (their leases are renewed).
                wakeup = await self.call("wait", http_timeout=LONG_POLL_SECONDS + 30, host=self.name,
                                         busy=sorted(self.inflight), timeout=LONG_POLL_SECONDS,
                                         owner=f"{self.name}/bench")
            except Exception:
                await asyncio.sleep(1.0)
                continue
            self.stats.polls += 1
            for work in wakeup.work:
                if work.task_id not in self.inflight:
                    self.inflight.add(work.task_id)
                    asyncio.get_running_loop().create_task(self.spawn(work))

    async def spawn(self, work: Work) -> None:
        try:
            await self.call("spec", instance_id=work.instance_id)
            outcome = Outcome(instance_id=work.instance_id, op=work.op, request_id=work.request_id,
                              power_state=int(PowerState.RUNNING),
                              result=SpawnResult() if work.op == "spawn" else None, task_id=work.task_id,
                              attempt=work.attempt)
            await self.call("finish", outcome=outcome)
            self.stats.spawned += 1
            self.stats.active_at[work.instance_id] = time.perf_counter()
        except Exception:
            pass
        finally:
            self.inflight.discard(work.task_id)


# -- the control plane, in its own process --------------------------------------------------------

def serve(state: Path, url: str, port: int) -> None:
    """``--serve``: the API alone, as ``yun up`` serves it (no agent of its own)."""
    import uvicorn

    from yunstack.api.app import create_app

    svc = build(make_config(state, url))
    uvicorn.run(create_app(svc), host="127.0.0.1", port=port, log_config=None, access_log=False,
                lifespan="off", backlog=4096, timeout_keep_alive=KEEP_ALIVE_SERVER)


def start_server(state: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--state", str(state), "--db-url", url,
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=(state / "server.log").open("wb"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/identity/v3", timeout=2).status_code < 500:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit((state / "server.log").read_text()[-3000:])
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the control plane did not start")


# -- the measurements -----------------------------------------------------------------------------

async def login(http: httpx.AsyncClient) -> tuple[dict[str, str], str, str]:
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"id": "default"}, "password": "adminpw"}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
    r = await http.post("/identity/v3/auth/tokens", json=body)
    r.raise_for_status()
    headers = {"X-Auth-Token": r.headers["x-subject-token"], "OpenStack-API-Version": "compute 2.47"}
    token = r.json()["token"]
    return headers, str(token["project"]["id"]), str(token["user"]["id"])


async def place(http: httpx.AsyncClient, headers: dict[str, str], image: str, n: int, clients: int,
                stats: Stats, batch: int = 1) -> dict[str, Any]:
    """``n`` servers created by ``clients`` concurrent API clients, ``batch`` per request (Nova's
    multi-create, ``min_count`` = ``max_count``: one request, one scheduling pass), placed and
    spawned by the simulated hosts; the rate counts until the last one is ACTIVE."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(0, n, batch):
        queue.put_nowait(i)
    already = set(stats.active_at)
    created: list[str] = []
    create_ms: list[float] = []
    failures: list[str] = []

    async def client() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            count = min(batch, n - i)
            body: dict[str, Any] = {"name": f"s-{i}", "imageRef": image, "flavorRef": "42", "networks": "none"}
            if batch > 1:
                body.update(min_count=count, max_count=count, return_reservation_id=True)
            began = time.perf_counter()
            r = await http.post(f"{C}/servers", headers=headers, timeout=120, json={"server": body})
            create_ms.append((time.perf_counter() - began) * 1000)
            if r.status_code != 202:
                failures.append(f"{r.status_code} {r.text[:200]}")
                continue
            if batch > 1:
                created.extend([f"{r.json()['reservation_id']}/{k}" for k in range(count)])  # counted below
            else:
                created.append(r.json()["server"]["id"])

    def active() -> list[float]:
        if batch == 1:
            return [stats.active_at[c] for c in created if c in stats.active_at]
        return [at for sid, at in stats.active_at.items() if sid not in already]

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    deadline = time.monotonic() + max(120.0, n / 5)
    while len(active()) < len(created) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    done = active()
    elapsed = (max(done) - began) if done else float("nan")
    r = await http.get(f"{C}/servers/detail", headers=headers, params={"status": "ERROR", "limit": "5"})
    errors = [s.get("fault", {}).get("details", "")[:200] for s in r.json()["servers"]]
    return {"servers": n, "clients": clients, "per_request": batch, "created": len(created), "active": len(done),
            "create_failures": failures[:5], "error_servers": errors,
            "elapsed_s": round(elapsed, 2), "servers_per_s": round(len(done) / elapsed, 1) if done else 0.0,
            "create_request_ms": server_list.summary(create_ms) if create_ms else None,
            "target_servers_per_s": 200}


def list_p50(port: int, headers: dict[str, str], requests: int) -> dict[str, float]:
    """``GET /servers/detail?limit=100`` timings over HTTP (sequential, after one warm-up)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as sync:
        timings, page = server_list.timed(lambda: sync.get(f"{C}/servers/detail", params={"limit": "100"}),
                                          requests)
    assert len(page.json()["servers"]) == 100
    return timings


async def run(args: argparse.Namespace, url: str, state: Path) -> dict[str, Any]:
    svc = build(make_config(state, url))
    svc.identity.bootstrap(base_url=svc.config.server.base_url, region="RegionOne", services=CATALOG,
                           admin_password="adminpw")
    svc.flavors.ensure_defaults()
    names = [f"sim-{i:05d}" for i in range(args.hosts)]
    credentials = {n: svc.hostauth.issue(n) for n in names}
    port = server_list.free_port()
    proc = start_server(state, url, port)
    # The client lets idle connections go well before the server does: a request on a connection
    # the server is closing at that moment fails with a read error instead of being served.
    limits = httpx.Limits(max_connections=2 * args.hosts + args.clients + 16, max_keepalive_connections=None,
                          keepalive_expiry=KEEP_ALIVE_CLIENT)
    stats = Stats()
    stop = asyncio.Event()
    result: dict[str, Any] = {"database": svc.engine.dialect.name, "hosts": args.hosts}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as http, \
                contextlib.AsyncExitStack() as own:
            # Each host its own client, as each real agent has: one pool shared by a thousand
            # held long-polls makes every request scan them all (httpcore), and the bench process,
            # not the control plane, becomes what is measured.
            host_limits = httpx.Limits(max_connections=4, max_keepalive_connections=4,
                                       keepalive_expiry=KEEP_ALIVE_CLIENT)
            hosts = [SimHost(n, credentials[n], await own.enter_async_context(httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", limits=host_limits, timeout=60)), stats) for n in names]
            headers, project, user = await login(http)
            r = await http.put(f"{C}/os-quota-sets/{project}", headers=headers, json={"quota_set": {
                "instances": -1, "cores": -1, "ram": -1}})
            r.raise_for_status()
            r = await http.post("/image/v2/images", headers=headers, json={
                "name": "bench", "disk_format": "raw", "container_format": "bare", "visibility": "public"})
            r.raise_for_status()
            image = r.json()["id"]
            r = await http.put(f"/image/v2/images/{image}/file", content=b"\0" * 1024,
                               headers={**headers, "Content-Type": "application/octet-stream"})
            r.raise_for_status()
            # The hosts come up over --ramp seconds, as agents of a cloud do (all in the same
            # second is a restart's herd: a thousand first reports and long-polls at once).
            tasks = [asyncio.create_task(h.start(stop, random.uniform(0, args.ramp))) for h in hosts]
            # Every host has registered (its first heartbeat) before anything is measured.
            deadline = time.monotonic() + args.ramp + 120
            while stats.heartbeats < args.hosts and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(5.0)  # past the registrations (each host's next report is at a random second)

            async def cpu_window(name: str) -> dict[str, Any]:
                beats, polls, periodic = stats.heartbeats, stats.polls, stats.periodic
                t0, machine0 = time.perf_counter(), machine_cpu(proc.pid)
                await asyncio.sleep(args.window)
                t1, machine1 = time.perf_counter(), machine_cpu(proc.pid)
                cpu0, cpu1 = machine0["control_plane"], machine1["control_plane"]
                out = {"window_s": round(t1 - t0, 1), "reports": stats.heartbeats - beats,
                       "long_polls_ended": stats.polls - polls, "server_cpu_s": round(cpu1 - cpu0, 2),
                       "fraction_of_a_core": round((cpu1 - cpu0) / (t1 - t0), 3),
                       # the same, for each of the machine's spenders (cores each)
                       "machine_cores": {k: round((machine1[k] - machine0[k]) / (t1 - t0), 3) for k in machine0}}
                if name == "periodic":
                    out["periodic_calls"] = stats.periodic - periodic
                else:
                    out["target_fraction"] = 0.25
                return out

            result["heartbeat_cpu"] = await cpu_window("heartbeat")
            if args.periodic:
                extra = [asyncio.create_task(h.periodic(stop)) for h in hosts]
                await asyncio.sleep(2.0)
                result["periodic_cpu"] = await cpu_window("periodic")
                for task in extra:
                    task.cancel()
                await asyncio.gather(*extra, return_exceptions=True)

            for key, batch in (("placement", 1), ("placement_batched", args.batch)):
                if key == "placement_batched" and batch <= 1:
                    continue
                machine0 = machine_cpu(proc.pid)
                placed_ = await place(http, headers, image, args.servers, args.clients, stats, batch)
                machine1 = machine_cpu(proc.pid)
                # What each placed server cost, all of it (the create request, the host's claim of
                # the step, its spec and its report), by who spent it, with and without the idle
                # hosts' own traffic over the same time (as measured above): on 2 cores, what a
                # placed server costs in all bounds the rate whatever the locking.
                placed, elapsed = placed_["active"], placed_["elapsed_s"]
                spent_by = {k: machine1[k] - machine0[k] for k in machine0}
                idle = result["heartbeat_cpu"]["machine_cores"]
                less_idle = {k: v - idle[k] * elapsed for k, v in spent_by.items()}
                placed_["server_cpu_ms_per_server"] = (
                    round(less_idle["control_plane"] * 1000 / placed, 1) if placed else None)
                placed_["machine_cpu_ms_per_server"] = {
                    k: round(v * 1000 / placed, 1) for k, v in spent_by.items()} if placed else None
                placed_["machine_cores_busy"] = round(sum(spent_by.values()) / elapsed, 2) if placed else None
                placed_["machine_cpu_ms_per_server_less_idle"] = {
                    k: round(v * 1000 / placed, 1) for k, v in less_idle.items()} if placed else None
                result[key] = placed_

            made = args.servers * (2 if args.batch > 1 else 1)
            fill = max(0, args.list_servers - made)
            server_list.fill(svc, project, user, fill)
            # Timed while the hosts keep heartbeating: the list as an operator sees it on a busy cloud.
            first = await asyncio.to_thread(list_p50, port, headers, args.requests)
            result["server_list"] = {"servers": made + fill, "limit": 100, "detail_first_page_ms": first,
                                     "target_p50_ms": 100}
            result["protocol_errors"] = stats.errors
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        svc.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db-url", required=True, help="PostgreSQL server URL (scripts/postgres), or 'sqlite'")
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--servers", type=int, default=2000, help="servers created through the API")
    ap.add_argument("--clients", type=int, default=16, help="concurrent API clients creating servers")
    ap.add_argument("--batch", type=int, default=1,
                    help="also create the servers again, this many per request (Nova's multi-create)")
    ap.add_argument("--window", type=float, default=REPORT_SECONDS,
                    help="seconds of each CPU measurement (a minute holds one round of resource reports)")
    ap.add_argument("--ramp", type=float, default=30.0, help="seconds over which the hosts come up")
    ap.add_argument("--periodic", action="store_true",
                    help="also measure an idle agent's other periodic calls (power sync, network, memory)")
    ap.add_argument("--list-servers", type=int, default=10_000, help="servers in the project for the list")
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "bench/results/scale.json"))
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.state), args.db_url, args.port)
        return
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="yun-scale-") as state:
        tmp = Path(state)
        with server_list.database(args.db_url, tmp) as url:
            result = asyncio.run(run(args, url, tmp))
    # The database URL carries a password: the command is recorded with the helper that prints it.
    argv = [a if a != args.db_url or a == "sqlite" else "$(scripts/postgres)" for a in sys.argv[1:]]
    result.update(command=" ".join([".venv/bin/python bench/scale.py", *argv]),
                  when=datetime.now(UTC).isoformat(timespec="seconds"),
                  machine={"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average_at_start": load_start,
                           "load_average_at_end": [round(x, 2) for x in os.getloadavg()]})
    text_out = json.dumps(result, indent=2)
    print(text_out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text_out + "\n")


if __name__ == "__main__":
    main()
