"""The cluster density benchmark (``yun bench density --hosts N``): N_max with the memory balancer and without.

Unlike the single-host harness (``bench.density``), this one drives a whole cloud through its API:
the balancer lives in the control plane (its periodic pass, the scheduler's filters, live
migrations between hosts), so the harness starts ``yun up --hosts N`` as a subprocess (the lab:
N compute hosts in network namespaces, each with its own memory budget) and talks to it over HTTP
with ``client.http.YunClient``, as an operator would.  It only *reads* the host: each lab host's
budget cgroup (usage, OOM kills) and the control plane's CPU time from ``/proc``.

The scenario, the same in every arm (one arm per balancer mode, a fresh cloud each):

- **Skewed arrival.** Guest *k* goes to the host ``arrivals(seed)[k]`` names, pinned with
  ``availability_zone=nova:HOST`` (the scheduler's filters still apply): the first host with
  probability ``skew``, else one of the others.  A guest arrives every ``arrival_s`` seconds.
- **Growth after placement.** Each guest (m1.micro) ticks on its console once a second and, ``grow_after_s``
  seconds after its boot, fills and keeps touching a working set of ``working_set_mib``: the
  scheduler admitted it on its idle footprint, and several arrive before the first has grown.
- **The SLO** (density-benchmark.md's, for a cluster): every guest that was ACTIVE stays ACTIVE; no
  OOM kill in any lab host's budget cgroup; no OOM line on a guest's console; no guest whose console
  tick stops for more than ``stall_s`` (host time; a guest being migrated is exempt until its move
  ends, its pause is the move's downtime).  The first failure ends the arm and is recorded by kind:
  ``oom_kill`` (a host's budget), ``qemu_exit``, ``guest_oom``, ``stall`` or ``boot`` (no tick within
  ``boot_s``).  The lab hosts have no swap, so a swap storm cannot happen here.
- **N_max**: the guests *held*, each counted once it has filled its working set and lived ``settle_s``
  more, before the first failure (or the end).  A placement the scheduler refuses stops the
  arrivals (``refused``, with its fault); the guests already placed are then held for ``hold_s``.

Recorded per arm: N_max and how the arm ended, the live migrations made (``os-migrations``), each
one's downtime (the control plane logs the driver's measure: pause to resume on the target), the
balancer's recorded passes, the control plane's CPU seconds (its own process, an upper bound on the
balancer's cost: it also answers this harness's polling), and a 1 Hz-ish sample of every host's
budget usage.  See docs/explanation/density-benchmark.md ("The cluster scenario").
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from yunstack import cgroups
from yunstack.client.http import ApiError, YunClient
from yunstack.errors import YunError
from yunstack.lab.cluster import budget_cgroup, lab_cidr
from yunstack.lab.underlay import Underlay
from yunstack.network.dataplane.naming import install_tag

Progress = Callable[[str], None]
MIB = 1 << 20
MICROVERSION = {"OpenStack-API-Version": "compute 2.47"}  # networks "none" (2.37), migration_type (2.23)
FLAVOR = "84"  # m1.micro, 192 MiB: the lab test's guest
MODES = ("off", "advise", "auto")
TARGET_RATIO = 1.3  # the target: N_max with the balancer / without

# Ticks once a second on the console; after ``grow_after`` s fills ``mib`` MiB and keeps touching it.
# memload says MEMLOAD-FILLED on the console when the working set is there.
GROWER = """#!/bin/sh
(while :; do echo "TICK $(cut -d' ' -f1 /proc/uptime)" > /dev/console; sleep 1; done) < /dev/null > /dev/null 2>&1 &
(sleep {grow_after:g}; memload --mib {mib} --pattern random --seed {seed} --touch-mib-per-s {touch:g} \
--report-every 10 > /dev/console 2>&1) < /dev/null > /dev/null 2>&1 &
"""
# The whole line: the kernel names its victim and what it held.
GUEST_OOM = re.compile(r"^.*(?:Out of memory|oom-kill|Killed process).*$", re.MULTILINE)
TICK = re.compile(r"TICK (\d+\.\d+)")
# The kernel's line for an OOM kill in a memory cgroup: which limit was hit, and the victim's cgroup.
KERNEL_OOM = re.compile(r"oom-kill:constraint=CONSTRAINT_MEMCG,.*?oom_memcg=/([^,]+),task_memcg=/([^,]+),"
                        r"task=([^,]+),pid=(\d+)")
# compute/operations/migrate.py's line for every finished live migration.
MIGRATED = re.compile(r"live migration (\S+) of (\S+): (\w+) mode, send (\d+) ms, downtime (\d+) ms")


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """The CLI's options for ``--hosts N`` (N > 1)."""

    hosts: int = 3
    host_memory_mib: int = 1024
    modes: tuple[str, ...] = ("off", "auto")
    max_guests: int = 12
    skew: float = 0.75  # share of arrivals pinned to the first host
    arrival_s: float = 20.0
    grow_after_s: float = 40.0
    # What a 192 MiB tiny guest can grow to from any balloon: deflate-on-oom gave a guest ballooned to
    # 96 MiB its 96 and 104 MiB back, but not reliably 110 (once OOM-killed with its balloon all given
    # back; holding 110 it has 6 MiB left): a working set at the guest's own limit fails on ballooning.
    working_set_mib: int = 100
    touch_mib_per_s: float = 10.0
    settle_s: float = 20.0
    hold_s: float = 90.0
    stall_s: float = 30.0
    boot_s: float = 150.0
    poll_s: float = 3.0
    seed: int = 42
    interval_s: float = 10.0  # the balancer's pass ([compute] memory_balancer_interval)
    min_benefit_mib: int = 64  # small guests: a 192 MiB guest's move frees ~200-250 MiB, under the default 256
    # An overcommitted cloud ([compute] ram_allocation_ratio): at the default 1.5 (with 512 MiB reserved) a
    # 1 GiB lab host takes 768 MiB of flavors, 4 m1.micro, whose grown working sets fit it: nothing to relieve.
    ram_allocation_ratio: float = 4.0
    out: Path = Path("bench/results/density-cluster")
    state_root: Path = Path("/var/tmp")


# -- the pure parts ---------------------------------------------------------------------------


def host_names(count: int) -> list[str]:
    return [f"lab-h{i}" for i in range(1, count + 1)]


def arrivals(count: int, hosts: Sequence[str], *, skew: float, seed: int) -> list[str]:
    """Where each of ``count`` guests goes: ``hosts[0]`` with probability ``skew``, else one of the
    others, uniformly; the same sequence for the same seed (every arm gets the same arrivals)."""
    rng = random.Random(seed)
    others = list(hosts[1:]) or list(hosts)
    return [hosts[0] if rng.random() < skew else rng.choice(others) for _ in range(count)]


@dataclass
class Guest:
    """One arrival, as the harness saw it (host times in seconds since the arm began)."""

    name: str
    pinned: str
    id: str = ""
    host: str = ""
    created_at: float = 0.0
    active_at: float | None = None
    ticked_at: float | None = None  # its first tick
    filled_at: float | None = None  # MEMLOAD-FILLED: its working set is there
    last_tick: float = -1.0  # the newest guest uptime seen on its console
    progressed_at: float | None = None  # host time the newest tick was first seen
    migrating: bool = False
    refused: str = ""


@dataclass(frozen=True, kw_only=True)
class Failure:
    """The first SLO failure of an arm."""

    at: float
    kind: str  # oom_kill | qemu_exit | guest_oom | stall | boot
    guest: str
    detail: str


def held(guests: Sequence[Guest], *, until: float, settle_s: float) -> int:
    """N_max: the guests that had filled their working set and lived ``settle_s`` more by ``until``
    (the first failure, or the end of the arm)."""
    return sum(1 for g in guests if g.filled_at is not None and g.filled_at + settle_s <= until)


def check(guests: Sequence[Guest], statuses: Mapping[str, str], consoles: Mapping[str, str],
          oom_kills: Mapping[str, int], *, now: float, stall_s: float, boot_s: float) -> Failure | None:
    """The SLO at ``now``: the first thing that broke, or None.  ``oom_kills`` are new OOM kills per
    lab host since the arm began; ``statuses`` and ``consoles`` are by guest name."""
    for host, kills in sorted(oom_kills.items()):
        if kills > 0:
            victims = [g.name for g in guests if g.host == host and statuses.get(g.name) not in (None, "ACTIVE",
                                                                                                "MIGRATING")]
            return Failure(at=now, kind="oom_kill", guest=",".join(victims),
                           detail=f"{kills} OOM kill(s) in {host}'s budget cgroup")
    for g in guests:
        if g.active_at is None:
            if not g.refused and now - g.created_at > boot_s:
                return Failure(at=now, kind="boot", guest=g.name, detail=f"{g.name}: not ACTIVE {boot_s:.0f}s after "
                                                                         f"its request ({statuses.get(g.name)})")
            continue
        status = statuses.get(g.name, "")
        if status not in ("ACTIVE", "MIGRATING"):
            return Failure(at=now, kind="qemu_exit", guest=g.name, detail=f"{g.name} on {g.host} is {status}")
        found = GUEST_OOM.search(consoles.get(g.name, ""))
        if found:
            return Failure(at=now, kind="guest_oom", guest=g.name,
                           detail=f"{g.name} on {g.host}: {found.group(0).strip()[:240]!r}")
        if g.ticked_at is None:
            if now - g.active_at > boot_s:
                return Failure(at=now, kind="boot", guest=g.name,
                               detail=f"{g.name}: no tick {boot_s:.0f}s after ACTIVE")
        elif not g.migrating and g.progressed_at is not None and now - g.progressed_at > stall_s:
            return Failure(at=now, kind="stall", guest=g.name,
                           detail=f"{g.name} on {g.host}: no tick for {now - g.progressed_at:.0f}s "
                                  f"(its uptime stays at {g.last_tick:.0f}s)")
    return None


def observe(g: Guest, console: str, now: float) -> None:
    """Take what a guest's console shows now: its first tick, its newest uptime, its working set."""
    ticks = [float(x) for x in TICK.findall(console)]
    if ticks:
        if g.ticked_at is None:
            g.ticked_at = now
        if max(ticks) > g.last_tick:
            g.last_tick, g.progressed_at = max(ticks), now
    if g.filled_at is None and "MEMLOAD-FILLED" in console:
        g.filled_at = now


def downtimes(log: str) -> dict[str, dict[str, Any]]:
    """Every finished live migration the control plane logged: its mode, send time and downtime (ms)."""
    return {m.group(1): {"server": m.group(2), "mode": m.group(3), "total_ms": int(m.group(4)),
                         "downtime_ms": int(m.group(5))} for m in MIGRATED.finditer(log)}


def kernel_oom_kills(kernel_log: str, budgets: Mapping[str, str]) -> list[dict[str, str]]:
    """The kernel's OOM kills in the lab hosts' budgets (``budgets``: cgroup name -> host), from its log.

    On cgroup v1 an OOM kill is counted in the victim's own cgroup, not in the budget whose limit
    was hit, and the agent removes a dead guest's cgroup: the kernel log is what keeps the record.
    """
    found = []
    for m in KERNEL_OOM.finditer(kernel_log):
        if m.group(1) in budgets:
            found.append({"host": budgets[m.group(1)], "victim_cgroup": m.group(2), "task": m.group(3),
                          "pid": m.group(4)})
    return found


def _kernel_log() -> str:
    try:
        return subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def summarize(options: ClusterOptions, runs: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """``summary.json``: every arm's run and the verdict (N_max with the balancer / without, at least 1.3)."""
    by_mode = {r["mode"]: r for r in runs}
    verdict: dict[str, Any] = {"target_ratio": TARGET_RATIO}
    off = by_mode.get("off")
    for mode in ("auto", "advise"):
        if off and mode in by_mode:
            ratio = by_mode[mode]["n_max"] / off["n_max"] if off["n_max"] else None
            verdict[f"{mode}_vs_off"] = ratio
            verdict[f"{mode}_vs_off_met"] = ratio is not None and ratio >= TARGET_RATIO
    arms = {r["mode"]: {**{k: r[k] for k in ("n_max", "placed", "ended", "failure", "refused", "downtime_ms_total",
                                               "control_plane_cpu_s", "balancer_passes")},
                        "migrations_completed": sum(1 for m in r["migrations"] if m["status"] == "completed"),
                        "migrations_other": sum(1 for m in r["migrations"] if m["status"] != "completed"),
                        "plan_ms": r.get("plan_ms")}
            for r in runs}
    return {"meta": meta, "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
            "arms": arms, "verdict": verdict, "runs": list(runs)}


# -- the cloud ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """A process's own utime + stime (not its children's: the agents and QEMUs are not the control plane)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class LabCloud:
    """A ``yun up --hosts N`` subprocess with its own state directory."""

    state_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    hosts: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> YunClient:
        return YunClient.from_clouds_yaml(self.state_dir / "clouds.yaml")

    def budget(self, host: str) -> str:
        return budget_cgroup(install_tag(self.state_dir), host.removeprefix("lab-"))

    def leftovers(self) -> dict[str, list[str]]:
        lab = Underlay(install_tag(self.state_dir), lab_cidr(self.state_dir))
        procs = subprocess.run(["pgrep", "-f", str(self.state_dir / "lab")], capture_output=True,
                               text=True).stdout.split()
        return {k: v for k, v in {"namespaces": sorted(lab.namespaces()), "links": sorted(lab.links()),
                                  "processes": procs}.items() if v}


@contextlib.contextmanager
def lab_cloud(options: ClusterOptions, mode: str, state_dir: Path, progress: Progress) -> Iterator[LabCloud]:
    """``yun up --hosts N`` with the balancer in ``mode``; stopped (SIGTERM: the lab and its guests
    go with it) at the end, also on an error or an interrupt."""
    port = _free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    log = state_dir / "yun-up.log"
    env = {**os.environ, "YUN_NETWORK_PUBLIC_NETWORK": "", "YUN_COMPUTE_MEMORY_BALANCER": mode,
           "YUN_COMPUTE_MEMORY_BALANCER_INTERVAL": f"{options.interval_s:g}",
           "YUN_COMPUTE_MEMORY_BALANCER_MIN_BENEFIT_MIB": str(options.min_benefit_mib),
           "YUN_COMPUTE_RAM_ALLOCATION_RATIO": f"{options.ram_allocation_ratio:g}"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "yun"), "up", "--port", str(port), "--state-dir", str(state_dir),
         "--hosts", str(options.hosts), "--host-memory", str(options.host_memory_mib)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    cloud = LabCloud(state_dir=state_dir, port=port, proc=proc, log=log, hosts=host_names(options.hosts))
    try:
        progress(f"{mode}: starting yun up --hosts {options.hosts}")
        _wait_up(cloud, 180.0)
        yield cloud
    finally:
        progress(f"{mode}: stopping the cloud")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_up(cloud: LabCloud, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        if cloud.proc.poll() is not None:
            raise RuntimeError(f"yun up exited with {cloud.proc.returncode}:\n{cloud.log.read_text()[-3000:]}")
        # clouds.yaml is written before the API listens, and the hosts join after it does.
        with contextlib.suppress(OSError, httpx.HTTPError, ApiError, ValueError, KeyError):
            if (cloud.state_dir / "clouds.yaml").exists():
                with cloud.client() as c:
                    found = c.get("compute", "/os-hypervisors/detail")["hypervisors"]
                    seen = {h["hypervisor_hostname"]: h["state"] for h in found}
                    if seen == dict.fromkeys(cloud.hosts, "up"):
                        return
        time.sleep(1)
    raise RuntimeError(f"the lab hosts are not all up within {timeout:.0f}s: {seen}")


# -- one arm ---------------------------------------------------------------------------------


def run_arm(options: ClusterOptions, mode: str, progress: Progress) -> dict[str, Any]:
    """One fresh cloud with the balancer in ``mode``, the arrivals, and what became of them."""
    state_dir = options.state_root / f"ys-bench-cluster-{mode}-{os.getpid()}"
    facts_start = {"loadavg": os.getloadavg(), "time": time.time()}
    kernel_before = len(_kernel_log().splitlines())
    try:
        with lab_cloud(options, mode, state_dir, progress) as cloud:
            try:
                with cloud.client() as c:
                    record = _ramp(options, mode, cloud, c, progress)
            finally:
                log_text = cloud.log.read_text(errors="replace")
                options.out.mkdir(parents=True, exist_ok=True)
                shutil.copy(cloud.log, options.out / f"yun-up-{mode}.log")  # to read, not to commit
        record["leftovers"] = cloud.leftovers()
        budgets = {cloud.budget(h): h for h in cloud.hosts}
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)  # the arm's database, image cache and log
    names = {g["id"]: g["name"] for g in record["guests"]}
    kills = kernel_oom_kills("\n".join(_kernel_log().splitlines()[kernel_before:]), budgets)
    for kill in kills:
        kill["server"] = next((n for i, n in names.items() if i and kill["victim_cgroup"].endswith(i)), "")
    record["kernel_oom_kills"] = kills
    failure = record["failure"]
    if failure is not None and failure["kind"] == "qemu_exit" and any(k["server"] == failure["guest"] for k in kills):
        # A QEMU that ended: the kernel says its host's budget OOM-killed it.
        failure["kind"] = record["ended"] = "oom_kill"
        failure["detail"] += " (the kernel OOM-killed its QEMU: its host's budget was full)"
    record["downtimes"] = [{**d, "uuid": uuid, "server": names.get(d["server"], d["server"])}
                           for uuid, d in downtimes(log_text).items()]
    record["downtime_ms_total"] = sum(d["downtime_ms"] for d in record["downtimes"])
    record["facts_start"], record["facts_end"] = facts_start, {"loadavg": os.getloadavg(), "time": time.time()}
    return record


def _create(c: YunClient, image: str, g: Guest, index: int, options: ClusterOptions) -> None:
    script = GROWER.format(grow_after=options.grow_after_s, mib=options.working_set_mib, seed=options.seed + index,
                           touch=options.touch_mib_per_s)
    body = {"server": {"name": g.name, "imageRef": image, "flavorRef": FLAVOR, "networks": "none",
                       "availability_zone": f"nova:{g.pinned}",
                       "user_data": base64.b64encode(script.encode()).decode()}}
    g.id = c.post("compute", "/servers", json=body, headers=MICROVERSION)["server"]["id"]


def _console(c: YunClient, server_id: str) -> str:
    with contextlib.suppress(ApiError, httpx.TimeoutException):
        out = c.post("compute", f"/servers/{server_id}/action", json={"os-getConsoleOutput": {"length": 100}})
        return str(out["output"])
    return ""


def _balloons(c: YunClient, names: dict[str, str]) -> tuple[dict[str, int], dict[str, str]]:
    """Each guest's balloon (the RAM it has, ``actual``, MiB) and each host's memory level, from the
    memory ledger (``os-memory``): what a guest that runs out of memory inside had before it grew."""
    with contextlib.suppress(ApiError, httpx.TimeoutException, KeyError, TypeError, ValueError):
        entries = c.get("compute", "/os-memory")["memory"]
        balloons = {names[g["instance_id"]]: int(g["actual"]) // MIB
                    for e in entries for g in e.get("servers", []) if g.get("instance_id") in names}
        return balloons, {str(e["host"]): str(e.get("level")) for e in entries}
    return {}, {}


def _budget(groups: cgroups.MemoryCgroups | None, name: str) -> tuple[int, int]:
    """A lab host's budget cgroup: its usage (MiB) and OOM kills so far; zeros before its manager made it."""
    if groups is not None:
        with contextlib.suppress(OSError, YunError, ValueError):
            read = groups.read(name)
            return read.usage // MIB, read.oom_kill
    return 0, 0


def _ramp(options: ClusterOptions, mode: str, cloud: LabCloud, c: YunClient, progress: Progress) -> dict[str, Any]:
    groups = cgroups.detect()
    image = next(i["id"] for i in c.get("image", "/v2/images")["images"] if i["name"] == "tiny")
    # The project's quota (10 instances by default) is not what the arms measure.
    projects = c.get("identity", "/auth/projects")["projects"]
    project = next((p for p in projects if p["name"] == "admin"), projects[0])["id"]
    c.put("compute", f"/os-quota-sets/{project}", json={"quota_set": {"instances": -1, "cores": -1, "ram": -1}})
    where = arrivals(options.max_guests, cloud.hosts, skew=options.skew, seed=options.seed)
    kills0 = {h: _budget(groups, cloud.budget(h))[1] for h in cloud.hosts}
    cpu0 = _cpu_seconds(cloud.proc.pid)
    began = time.monotonic()
    guests: list[Guest] = []
    refused: dict[str, Any] | None = None
    failure: Failure | None = None
    samples: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []
    next_arrival = 0.0
    arrivals_over_at: float | None = None
    while True:
        now = time.monotonic() - began
        if refused is None and len(guests) < len(where) and now >= next_arrival:
            g = Guest(name=f"b{len(guests) + 1:02d}", pinned=where[len(guests)], created_at=now)
            try:
                _create(c, image, g, len(guests), options)
            except ApiError as exc:  # refused at the API (a quota, a bad request): no server, arrivals end
                g.refused = str(exc)
                refused = {"guest": g.name, "host": g.pinned, "at": round(now, 1), "fault": g.refused}
                arrivals_over_at = now
            guests.append(g)
            next_arrival = now + options.arrival_s
            progress(f"{mode}: {g.name} -> {g.pinned} ({len(guests)}/{len(where)})")
        try:
            servers = {s["name"]: s for s in c.get("compute", "/servers/detail")["servers"]}
        except httpx.TimeoutException:  # a busy control plane: look again, the SLO clock goes on
            continue
        statuses = {name: str(s["status"]) for name, s in servers.items()}
        consoles: dict[str, str] = {}
        for g in guests:
            s = servers.get(g.name, {})
            host = s.get("OS-EXT-SRV-ATTR:host") or g.host
            if g.host and host != g.host:
                moves.append({"server": g.name, "source": g.host, "target": host, "seen_at": round(now, 1)})
            g.host = host
            g.migrating = s.get("OS-EXT-STS:task_state") is not None and g.active_at is not None
            if g.migrating:  # paused while it moves: its stall clock starts again when it arrives
                g.progressed_at = now
            if g.active_at is None and statuses.get(g.name) == "ACTIVE":
                g.active_at = now
            elif g.active_at is None and statuses.get(g.name) == "ERROR" and refused is None:
                g.refused = str((s.get("fault") or {}).get("message", "ERROR"))
                refused = {"guest": g.name, "host": g.pinned, "at": round(now, 1), "fault": g.refused}
                arrivals_over_at = now
                progress(f"{mode}: {g.name} refused: {g.refused[:80]}")
            if g.active_at is not None:
                consoles[g.name] = _console(c, g.id)
                observe(g, consoles[g.name], now)
        live = [g for g in guests if not g.refused]
        budgets = {h: _budget(groups, cloud.budget(h)) for h in cloud.hosts}
        kills = {h: budgets[h][1] - kills0[h] for h in cloud.hosts}
        usage = {h: budgets[h][0] for h in cloud.hosts}
        balloons, levels = _balloons(c, {g.id: g.name for g in guests if g.id})
        samples.append({"t": round(now, 1), "usage_mib": usage, "placed": len(live),
                        "balloon_mib": balloons, "levels": levels,
                        "filled": sum(1 for g in live if g.filled_at is not None),
                        "held": held(live, until=now, settle_s=options.settle_s),
                        "where": {h: sum(1 for g in live if g.host == h) for h in cloud.hosts}})
        failure = check(live, statuses, consoles, kills, now=now, stall_s=options.stall_s, boot_s=options.boot_s)
        if failure is not None:
            progress(f"{mode}: {failure.kind}: {failure.detail}")
            break
        if arrivals_over_at is None and len(guests) == len(where):
            arrivals_over_at = now
        # After the last arrival: until every guest has filled and settled, and then the hold.
        if arrivals_over_at is not None and all(g.filled_at is not None for g in live) and \
                now >= max([arrivals_over_at] + [g.filled_at or 0.0 for g in live]) + options.settle_s + options.hold_s:
            break
        if arrivals_over_at is not None and now > arrivals_over_at + options.boot_s + options.grow_after_s + \
                options.settle_s + options.hold_s + 120:
            break  # a guest that never fills: it does not count, the arm ends
        time.sleep(options.poll_s)
    end = failure.at if failure is not None else time.monotonic() - began
    live = [g for g in guests if not g.refused]
    migrations = [{"id": m["id"], "server": next((g.name for g in guests if g.id == m["instance_uuid"]),
                                                 m["instance_uuid"]),
                   "source": m["source_compute"], "target": m["dest_compute"], "status": m["status"],
                   "created_at": m["created_at"], "updated_at": m["updated_at"]}
                  for m in c.get("compute", "/os-migrations", headers=MICROVERSION)["migrations"]
                  if m.get("migration_type") == "live-migration"]
    passes = c.memory_balancer_history(limit=1000)
    plan_ms = []  # what one plan costs the control plane now, over HTTP (an upper bound on a pass's planning)
    for _ in range(5):
        t0 = time.perf_counter()
        c.memory_balancer()
        plan_ms.append(round((time.perf_counter() - t0) * 1000, 1))
    cpu = _cpu_seconds(cloud.proc.pid) - cpu0
    for g in guests:  # the lab's stop removes them too; deleting first keeps the cloud's own stop short
        with contextlib.suppress(ApiError):
            c.delete("compute", f"/servers/{g.id}")
    return {
        "mode": mode, "n_max": held(live, until=end, settle_s=options.settle_s), "placed": len(live),
        "ended": failure.kind if failure else ("refused" if refused else "held"),
        "failure": asdict(failure) if failure else None, "refused": refused, "seconds": round(end, 1),
        "arrivals": where[:len(guests)],
        "guests": [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(g).items()} for g in guests],
        "migrations": migrations, "balancer_passes": len(passes),
        "applied": [a for p in passes for a in p.get("applied", [])],
        "control_plane_cpu_s": round(cpu, 2), "plan_ms": plan_ms, "moves_seen": moves, "samples": samples,
    }


# -- the invocation --------------------------------------------------------------------------


def run(options: ClusterOptions, progress: Progress, argv: Sequence[str] = ()) -> Path:
    """Every arm, one after the other, each on a fresh cloud; ``summary.json`` and the plot in ``out``."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for mode in options.modes:
        runs.append(run_arm(options, mode, progress))
        (out / "runs.partial.json").write_text(json.dumps(runs, default=str))
    meta: dict[str, Any] = {"command": " ".join(argv), "finished": time.time(), "cpus": os.cpu_count()}
    summary = summarize(options, runs, meta)
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=1, default=str))  # before the plot: a plot error loses no run
    summary["plot"] = plot(out, runs, options)
    path.write_text(json.dumps(summary, indent=1, default=str))
    (out / "runs.partial.json").unlink(missing_ok=True)
    return path


def plot(out: Path, runs: Sequence[dict[str, Any]], options: ClusterOptions) -> str:
    """Per arm, each host's budget usage and the guests held over time; then N_max per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(5 * (len(runs) + 1), 4.2))
    for ax, r in zip(axes, runs, strict=False):
        ts = [s["t"] for s in r["samples"]]
        for host in host_names(options.hosts):
            ax.plot(ts, [s["usage_mib"][host] for s in r["samples"]], label=f"{host} usage (MiB)")
        ax.axhline(options.host_memory_mib, color="r", ls="--", lw=1, label="host budget")
        twin = ax.twinx()
        twin.step(ts, [s["placed"] for s in r["samples"]], color="0.6", ls="--", where="post", label="guests placed")
        twin.step(ts, [s["held"] for s in r["samples"]], "k-", where="post", label="guests held")
        twin.set_ylabel("guests placed (dashed) and held (solid)")
        ax.set_ylabel("lab host budget usage (MiB)")
        for i, m in enumerate(r["moves_seen"]):
            ax.axvline(m["seen_at"], color="g", lw=0.8, ls=":", label="a guest seen moved" if i == 0 else None)
        ax.set_xlabel("seconds")
        ax.set_title(f"balancer {r['mode']}: N_max {r['n_max']}, ended: {r['ended']}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    last = axes[-1]
    last.bar(range(len(runs)), [r["n_max"] for r in runs], color=["#7f7f7f" if r["mode"] == "off" else "#2ca02c"
                                                                   for r in runs])
    last.set_xticks(range(len(runs)), [r["mode"] for r in runs])
    last.set_ylabel("N_max (guests held)")
    last.set_title("cluster N_max by balancer mode", fontsize=9)
    fig.suptitle(f"{options.hosts} lab hosts x {options.host_memory_mib} MiB; skew {options.skew:.0%} to lab-h1; "
                 f"{options.working_set_mib} MiB working sets")
    fig.tight_layout()
    path = out / "density-cluster.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
