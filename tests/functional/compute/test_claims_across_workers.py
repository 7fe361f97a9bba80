"""Two API workers (two engines, two connection pools) booting onto one host at the same moment.

The scheduler's claims run under a database lock, not a per-process one: a host with room for
exactly N guests gets exactly N, whichever worker each request reaches, and every other boot
fails with the per-host reason.  (With the old ``threading.Lock`` each worker held its own lock
and both could read "room for one" and both claim it.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import Api, need
from tests.functional.identity.test_identity_api import make_member
from yunstack.api.app import create_app
from yunstack.compute.driver import HostInfo
from yunstack.db.tables import compute as t
from yunstack.wiring import Services, build

C = "/compute/v2.1"
ROOM = 4  # guests of 4 GiB on a 16 GiB host, ratio 1.0, nothing reserved
PROJECTS = 4
PER_PROJECT = 3


def _host(services: Services, name: str) -> None:
    info = HostInfo(hostname=name, vcpus=64, memory_mib=ROOM * 4096, memory_used_mib=0, local_gb=1000,
                    local_gb_used=0, hypervisor_type="QEMU", hypervisor_version=8002000,
                    cpu_info=json.dumps({"arch": "x86_64"}), uptime="up", accel="tcg")
    services.hosts.heartbeat(name, info, availability_zone="nova", ram_allocation_ratio=1.0,
                             cpu_allocation_ratio=16.0, disk_allocation_ratio=1.0, reserved_host_memory_mib=0)


@pytest.fixture
def second_worker(services: Services) -> Iterator[Services]:
    """Another API process's view: the same config and database, its own engine and pool."""
    other = build(services.config, migrate=False)
    try:
        yield other
    finally:
        other.close()


@pytest.fixture
def image(api: Api, tmp_path: Path) -> str:
    need(shutil.which("qemu-img") is not None, "qemu-img")
    disk = tmp_path / "x.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(disk), "16M"], check=True, capture_output=True)
    h = api.headers(api.admin())
    r = api.http.post("/image/v2/images", json={"name": "cirros", "disk_format": "qcow2",
                                                 "container_format": "bare", "visibility": "public"}, headers=h)
    assert r.status_code == 201, r.text
    image_id = str(r.json()["id"])
    r = api.http.put(f"/image/v2/images/{image_id}/file", content=disk.read_bytes(),
                     headers={**h, "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    return image_id


def test_two_workers_booting_at_once_never_put_a_host_over_its_capacity(
        api: Api, services: Services, second_worker: Services, image: str) -> None:
    admin = api.admin()
    r = api.http.post(f"{C}/flavors", json={"flavor": {"name": "m4", "id": "m4", "ram": 4096, "vcpus": 1,
                                                        "disk": 1}}, headers=api.headers(admin))
    assert r.status_code == 200, r.text
    tokens = []
    for i in range(PROJECTS):
        make_member(api, admin, f"p{i}", f"u{i}")
        tokens.append(api.login(f"u{i}", f"u{i}-pw", f"p{i}"))
    # This test is about claims, not liveness: on a loaded CI machine the setup and the storm of
    # boots together have taken over the 30 s after which a silent host counts as down, and then
    # no boot was placed at all.
    for worker in (services, second_worker):
        worker.hosts.down_after = 3600.0
    _host(services, "rack1")
    workers = [create_app(services), create_app(second_worker)]
    for app in workers:  # FastAPI builds a body's validator on first use, which is not thread-safe
        with TestClient(app, base_url="http://127.0.0.1:8080") as http:
            r = http.post(f"{C}/servers", headers={"X-Auth-Token": tokens[0]}, json={"server": {
                "name": "warm-up", "imageRef": image, "flavorRef": "no-such-flavor", "networks": "none"}})
            assert r.status_code == 400, r.text
    calls = [(workers[n % 2], tokens[n % PROJECTS], f"vm{n}") for n in range(PROJECTS * PER_PROJECT)]
    start = threading.Barrier(len(calls))

    def boot(call: tuple[Any, str, str]) -> int:
        app, token, name = call
        with TestClient(app, base_url="http://127.0.0.1:8080", raise_server_exceptions=False) as http:
            start.wait()
            r = http.post(f"{C}/servers", headers={"X-Auth-Token": token}, json={"server": {
                "name": name, "imageRef": image, "flavorRef": "m4", "networks": "none"}})
            return r.status_code

    with ThreadPoolExecutor(len(calls)) as pool:
        codes = list(pool.map(boot, calls))
    assert codes == [202] * len(calls)  # a boot that finds no host is accepted, then ERROR (as Nova)

    with services.db() as s:
        rows = list(s.scalars(select(t.Instance)))
    placed = [r for r in rows if r.host == "rack1"]
    failed = [r for r in rows if r.host is None]
    assert len(placed) == ROOM
    assert len(failed) == len(calls) - ROOM
    assert sum(r.flavor["ram"] for r in placed) <= ROOM * 4096
    for row in failed:
        assert row.vm_state == "error"
        assert row.fault is not None and row.fault["details"].startswith("rack1: "), row.fault
        assert "RAM" in row.fault["details"] or "MiB" in row.fault["details"], row.fault
    with services.db() as s:
        usage = next(u for u in services.hosts.host_states(s) if u.host == "rack1")
    assert usage.memory_used_mib == ROOM * 4096 <= usage.memory_mib
