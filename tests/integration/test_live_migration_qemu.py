"""Live migration of a running TCG guest between two real QEMU hosts on this machine.

One `yun up` (its own agent is host A) and a second `yun agent` process (host B, its own state and
instance directory, joined with a one-time token; fake dataplane and no memory manager, so that it
shares nothing of the machine with host A).  The guest prints its uptime on the console every
second; after `os-migrateLive` it runs on the other host with an uptime that went on (no reboot), and the source has
no QEMU and no file of it left.  Run it alone, under the lock:

    flock /tmp/yun-integration.lock .venv/bin/python -m pytest tests/integration/test_live_migration_qemu.py -x -q
"""

from __future__ import annotations

import base64
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cloud import BIN, RunningCloud, start_cloud
from tests.integration.test_crash_restart import Client, qemu_pids

pytestmark = pytest.mark.integration

HOST_B = "ysmig-b"
TICKER = (b"#!/bin/sh\n"
          b"(while :; do echo \"TICK $(cut -d' ' -f1 /proc/uptime)\" > /dev/console; sleep 1; done)"
          b" < /dev/null > /dev/null 2>&1 &\n")
TICK = re.compile(r"TICK (\d+\.\d+)")


def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not reached in {timeout}s (the machine is shared: TCG boots are slow)")


@pytest.fixture
def clouds(tmp_path: Path) -> Iterator[tuple[RunningCloud, Client, Path]]:
    cloud = start_cloud(tmp_path / "a", timeout=180)
    client = Client(cloud)
    b_state = tmp_path / "b"
    b_state.mkdir()
    agent: subprocess.Popen[bytes] | None = None
    try:
        r = client.call("POST", "/agent/v1/hosts", {"host": {"name": HOST_B}})
        assert r.status_code == 201, r.text
        env = {**os.environ, "YUN_NETWORK_DATAPLANE": "fake", "YUN_MEMORY_ENABLED": "false"}
        agent = subprocess.Popen([str(BIN / "yun"), "agent", "--control", cloud.url, "--join-token",
                                  r.json()["host"]["join_token"], "--state-dir", str(b_state)],
                                 stdout=(b_state / "agent.log").open("ab"), stderr=subprocess.STDOUT, env=env,
                                 start_new_session=True)

        def both_up() -> bool:
            hyps = client.call("GET", "/compute/v2.1/os-hypervisors/detail").json()["hypervisors"]
            return sum(1 for h in hyps if h["state"] == "up") == 2

        until(both_up, 60, "host B joined and reported")
        yield cloud, client, b_state
    finally:
        for s in client.servers():
            client.call("DELETE", f"/compute/v2.1/servers/{s['id']}")
        until(lambda: not client.servers(), 60, "servers deleted")
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
        cloud.stop()
        for state in (tmp_path / "a", b_state):
            for pid in qemu_pids(str(state / "instances")):  # only this test's guests
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _ticks(client: Client, sid: str) -> list[float]:
    r = client.call("POST", f"/compute/v2.1/servers/{sid}/action", {"os-getConsoleOutput": {}})
    return [float(x) for x in TICK.findall(r.json().get("output", ""))] if r.status_code == 200 else []


def _ticking_server(cloud: RunningCloud, client: Client, b_state: Path,
                    name: str) -> tuple[str, str, str, dict[str, Path], list[float]]:
    """A ticking guest, ACTIVE: (id, its host, the other host, each host's instance dir, its ticks)."""
    host_a = next(h["hypervisor_hostname"] for h in
                  client.call("GET", "/compute/v2.1/os-hypervisors/detail").json()["hypervisors"]
                  if h["hypervisor_hostname"] != HOST_B)
    image = client.call("GET", "/image/v2/images?name=tiny").json()["images"][0]["id"]
    r = client.call("POST", "/compute/v2.1/servers", {"server": {
        "name": name, "imageRef": image, "flavorRef": "42", "networks": "none", "config_drive": True,
        "user_data": base64.b64encode(TICKER).decode()}})
    assert r.status_code == 202, r.text
    sid = str(r.json()["server"]["id"])

    def active() -> bool:
        server = client.call("GET", f"/compute/v2.1/servers/{sid}").json()["server"]
        assert server["status"] != "ERROR", server.get("fault")
        return bool(server["status"] == "ACTIVE")

    until(active, 300, "the server is ACTIVE")
    source = client.call("GET", f"/compute/v2.1/servers/{sid}").json()["server"]["OS-EXT-SRV-ATTR:host"]
    target = HOST_B if source == host_a else host_a
    dirs = {host_a: cloud.state_dir / "instances", HOST_B: b_state / "instances"}
    before = until(lambda: (t := _ticks(client, sid)) and len(t) >= 2 and t, 120, "the guest ticks")
    return sid, source, target, dirs, before


def test_a_running_guest_moves_to_the_other_host_without_a_reboot_and_leaves_nothing_behind(
        clouds: tuple[RunningCloud, Client, Path]) -> None:
    cloud, client, b_state = clouds
    sid, source, target, dirs, before = _ticking_server(cloud, client, b_state, "mover")
    # No microversion header: 2.1, where a client cannot say "auto" (every disk here is local anyway).
    r = client.call("POST", f"/compute/v2.1/servers/{sid}/action",
                    {"os-migrateLive": {"host": target, "block_migration": False, "disk_over_commit": False}})
    assert r.status_code == 202, r.text

    def moved() -> dict[str, Any] | None:
        server = client.call("GET", f"/compute/v2.1/servers/{sid}").json()["server"]
        done = server["OS-EXT-STS:task_state"] is None and server["OS-EXT-SRV-ATTR:host"] == target
        return server if done else None

    server = until(moved, 120, f"the server runs on {target}")
    assert server["status"] == "ACTIVE"
    after = until(lambda: (t := _ticks(client, sid)) and t[-1] > before[-1] + 1 and t, 60, "ticks on the destination")
    # The uptime went on: every tick B's console shows since the move is later than the last one
    # before it (a rebooted guest would start counting again from its boot).
    new = after[len(before):] if after[:len(before)] == before else after
    assert new and all(x > before[-1] for x in new), (before, after)
    migrations = client.call("GET", "/compute/v2.1/os-migrations").json()["migrations"]
    assert migrations and migrations[0]["status"] == "completed"
    with sqlite3.connect(cloud.state_dir / "yunstack.db") as db:  # the downtime is kept with the migration
        downtime, total = db.execute("SELECT downtime_ms, total_ms FROM migrations").fetchone()
    assert downtime is not None and 0 < downtime <= total
    print(f"\nlive migration (TCG, paused, tiny guest, flavor 42): send {total} ms, downtime {downtime} ms")
    gone, there = dirs[source] / sid, dirs[target] / sid
    until(lambda: not gone.exists(), 30, "the source removed the guest's directory and disks")
    assert qemu_pids(str(gone)) == []  # no QEMU left on the source
    assert there.is_dir() and len(qemu_pids(str(there))) == 1  # exactly one QEMU for the guest


def _migration_status(cloud: RunningCloud) -> str | None:
    with sqlite3.connect(cloud.state_dir / "yunstack.db", timeout=5) as db:
        row = db.execute("SELECT status FROM migrations ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else str(row[0])


def test_kill_9_of_the_control_plane_during_a_live_migration_ends_it_with_exactly_one_guest(
        clouds: tuple[RunningCloud, Client, Path]) -> None:
    cloud, client, b_state = clouds
    sid, source, target, dirs, before = _ticking_server(cloud, client, b_state, "crashmover")
    r = client.call("POST", f"/compute/v2.1/servers/{sid}/action",
                    {"os-migrateLive": {"host": target, "block_migration": False, "disk_over_commit": False}})
    assert r.status_code == 202, r.text
    # The kill lands while the destination prepares or the source sends (the migration's middle).
    deadline = time.monotonic() + 60
    while (status := _migration_status(cloud)) not in ("preparing", "running"):
        assert time.monotonic() < deadline and status not in ("completed", "error", "cancelled"), status
        time.sleep(0.02)
    os.kill(cloud.proc.pid, signal.SIGKILL)  # the control plane, and host A's agent with it
    cloud.proc.wait()
    print(f"\nkilled the control plane with the migration {status}")
    cloud.proc = start_cloud(cloud.state_dir, cloud.port, timeout=120).proc

    def ended() -> dict[str, Any] | None:
        migrations = client.call("GET", "/compute/v2.1/os-migrations").json()["migrations"]
        server = client.call("GET", f"/compute/v2.1/servers/{sid}").json()["server"]
        final = migrations and migrations[0]["status"] in ("completed", "error", "cancelled")
        return server if final and server["OS-EXT-STS:task_state"] is None else None

    server = until(ended, 300, "the migration ended after the restart")
    assert server["status"] == "ACTIVE", server
    where = server["OS-EXT-SRV-ATTR:host"]
    other = target if where == source else source
    print(f"after the restart the migration ended "
          f"{client.call('GET', '/compute/v2.1/os-migrations').json()['migrations'][0]['status']}, "
          f"the guest on {'the destination' if where == target else 'the source'}")
    until(lambda: not (dirs[other] / sid).exists(), 60, f"{other} removed its copy of the guest")
    assert qemu_pids(str(dirs[other] / sid)) == []
    assert len(qemu_pids(f"guest={sid}")) == 1  # exactly one QEMU for the guest, on its host
    assert len(qemu_pids(str(dirs[where] / sid))) == 1
    # The guest went on running across all of it (its uptime counts on: no reboot).
    after = until(lambda: (t := _ticks(client, sid)) and t[-1] > before[-1] + 2 and t, 90, "ticks after the restart")
    new = after[len(before):] if after[:len(before)] == before else after
    assert new and all(x > before[-1] for x in new), (before, after)
