"""The memory ledger through the API: os-memory, per-server memory, statistics and /metrics."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from tests.conftest import Api
from yunstack.compute.driver import HostInfo
from yunstack.compute.memoryledger import observed_free_mib, observed_load
from yunstack.db.tables import compute as t
from yunstack.db.tables import identity as ident

MIB = 1 << 20


def ledger(server_ids: list[str]) -> dict[str, Any]:
    return {
        "wall_time": 1.0, "level": "ksm", "reasons": ["KSM on: overcommitted"], "errors": [],
        "manager": {"tick_seconds": 0.01, "cpu_seconds": 0.005, "rss_bytes": 40 * MIB},
        "host": {"physical": 4096 * MIB, "committed": 1024 * MIB, "guests_resident": 600 * MIB,
                 "guests_used": 500 * MIB, "consolidation_ratio": 2.048, "savings_ksm": 100 * MIB,
                 "savings_balloon": 64 * MIB, "savings_swap": 0, "shared_method": "ksm_stat",
                 "ksm_pages_sharing": 25600, "ksm_run": 1, "available": 3000 * MIB, "swap_free": 0,
                 "psi_some_avg10": 0.0},
        "guests": [{"instance_id": sid, "configured": 512 * MIB, "actual": 480 * MIB, "resident": 300 * MIB,
                    "ballooned": 32 * MIB, "shared": 50 * MIB, "swapped": 0, "working_set": 200 * MIB,
                    "target": 480 * MIB, "entitlement": 512 * MIB, "pressured": False, "page_sharing": True,
                    "thp": False} for sid in server_ids],
    }


def seed(api: Api, host: str) -> tuple[str, str]:
    """Two instances on ``host``, one in the admin project and one in demo, and a heartbeat."""
    svc = api.services
    svc.hosts.heartbeat(host, HostInfo(hostname=host, vcpus=2, memory_mib=4096, memory_used_mib=1000,
                                       local_gb=100, local_gb_used=1, hypervisor_type="QEMU",
                                       hypervisor_version=7002000, cpu_info="{}", uptime="up", accel="tcg"),
                        availability_zone="nova", ram_allocation_ratio=1.5, cpu_allocation_ratio=16.0,
                        disk_allocation_ratio=1.0, reserved_host_memory_mib=512)
    now = datetime.now(UTC)
    ids = []
    with svc.db.begin() as s:
        pids = {p.name: p.id for p in s.scalars(select(ident.Project))}
        for i, project in enumerate(("admin", "demo")):
            sid = f"00000000-0000-0000-0000-00000000000{i}"
            s.add(t.Instance(id=sid, name=f"m{i}", hostname=f"m{i}", project_id=pids[project], user_id="u",
                             host=host, flavor={"id": "42", "name": "m1.nano", "ram": 512, "vcpus": 1, "disk": 1},
                             vm_state="active", power_state=1, created_at=now, updated_at=now))
            ids.append(sid)
    svc.memory.record(host, ledger(ids))
    return ids[0], ids[1]


def test_admins_see_hosts_and_every_server(api: Api) -> None:
    admin = api.headers(api.admin())
    mine, theirs = seed(api, api.services.config.host_name)
    body = api.http.get("/compute/v2.1/os-memory", headers=admin).json()["memory"]
    assert len(body) == 1 and body[0]["balance"]["consolidation_ratio"] == 2.048
    assert {s["instance_id"] for s in body[0]["servers"]} == {mine, theirs}
    history = api.http.get("/compute/v2.1/os-memory/history", headers=admin).json()["history"]
    assert len(history) == 1
    one = api.http.get(f"/compute/v2.1/servers/{mine}/os-memory", headers=admin).json()["memory"]
    assert one["memory"]["shared"] == 50 * MIB
    stats = api.http.get("/compute/v2.1/os-hypervisors/statistics", headers=admin).json()
    assert stats["hypervisor_statistics"]["yunstack:memory_saved_ksm_mb"] == 100


def test_members_see_only_their_own_servers_and_no_host_balance(api: Api) -> None:
    mine, theirs = seed(api, api.services.config.host_name)
    from tests.functional.identity.test_identity_api import make_member

    admin = api.admin()
    make_member(api, admin, "demo", "dora")
    dora = api.headers(api.login("dora", "dora-pw", "demo"))
    body = api.http.get("/compute/v2.1/os-memory", headers=dora).json()["memory"]
    assert [s["instance_id"] for s in body[0]["servers"]] == [theirs]
    assert "balance" not in body[0] and body[0]["host"] is None
    assert api.http.get(f"/compute/v2.1/servers/{mine}/os-memory", headers=dora).status_code == 404


def test_observed_free_memory_feeds_admission() -> None:
    entry = ledger(["a", "b"])
    # 4096 physical - 2 x (200 working set + 32 headroom) - 512 reserved
    assert observed_free_mib(entry, 512) == 4096 - 2 * 232 - 512
    # a manager that reports its admission room is taken at its word; a blocked host has no room
    roomy = {**entry, "host": {**entry["host"], "admission_room": 700 * 2**20, "admission_blocked": None}}
    assert observed_free_mib(roomy, 512) == 700
    blocked = {**entry, "host": {**roomy["host"], "admission_blocked": "level SWAP"}}
    assert observed_free_mib(blocked, 512) == 0


def test_metrics_expose_the_ledger(api: Api) -> None:
    seed(api, api.services.config.host_name)
    text = api.http.get("/metrics").text
    assert "yunstack_host_memory_consolidation_ratio" in text
    assert 'yunstack_server_memory_shared_bytes{host="' in text
    assert "yunstack_http_request_seconds" in text


def test_the_latest_entry_feeds_the_memory_pressure_weigher(api: Api) -> None:
    host = api.services.config.host_name
    seed(api, host)
    with api.services.db() as s:
        seen = {h.host: h for h in api.services.hosts.scheduling(s)}[host]
    # 4096 MiB physical, 3000 available: 1096 in use, level ksm, no PSI
    assert (seen.observed_physical_mib, seen.observed_used_mib, seen.observed_level, seen.observed_psi) == (
        4096, 1096, 1, 0.0)
    assert observed_load({"host": {"admission_room": 1}}) == {}  # an older agent's entry: nothing to weigh
