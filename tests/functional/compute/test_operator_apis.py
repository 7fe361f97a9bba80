"""os-services, os-migrations and os-simple-tenant-usage through the API with the real agent (FakeDriver)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_servers import body, boot, wait_for

world, host, qcow2 = servers.world, servers.host, servers.qcow2
SERVICE_KEYS = {"id", "binary", "host", "zone", "status", "state", "updated_at", "disabled_reason"}


def hostname(world: dict[str, Any]) -> str:
    return str(world["host"].driver.hostname)


# -- os-services ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "extra"), [("2.1", set()), ("2.11", {"forced_down"}), ("2.47", {"forced_down"})])
def test_services_list_one_nova_compute_per_host_with_its_heartbeat(world: dict[str, Any], version: str,
                                                                    extra: set[str]) -> None:
    services = world["admin"].at(version).get("/os-services").json()["services"]
    assert len(services) == 1
    svc = services[0]
    assert set(svc) == SERVICE_KEYS | extra
    assert isinstance(svc["id"], int)
    assert (svc["binary"], svc["host"], svc["zone"], svc["status"], svc["state"], svc["disabled_reason"]) == (
        "nova-compute", hostname(world), "nova", "enabled", "up", None)
    assert datetime.fromisoformat(svc["updated_at"]) > datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    if extra:
        assert svc["forced_down"] is False
    assert world["admin"].get("/os-services", binary="nova-scheduler").json() == {"services": []}
    assert world["admin"].get("/os-services", host="elsewhere").json() == {"services": []}


def test_only_admins_see_or_change_services(world: dict[str, Any]) -> None:
    alice = world["alice"]
    assert alice.get("/os-services").status_code == 403
    r = alice.put("/os-services/disable", {"host": hostname(world), "binary": "nova-compute"})
    assert r.status_code == 403


def test_a_disabled_compute_service_is_skipped_by_the_scheduler_with_a_reason(world: dict[str, Any]) -> None:
    admin, h = world["admin"], hostname(world)
    r = admin.put("/os-services/disable-log-reason", {"host": h, "binary": "nova-compute",
                                                      "disabled_reason": "maintenance"})
    assert r.status_code == 200, r.text
    assert r.json() == {"service": {"host": h, "binary": "nova-compute", "status": "disabled",
                                    "disabled_reason": "maintenance"}}
    listed = admin.get("/os-services").json()["services"][0]
    assert (listed["status"], listed["disabled_reason"]) == ("disabled", "maintenance")
    r = world["alice"].post("/servers", body(world))
    failed = wait_for(admin, r.json()["server"]["id"], "ERROR")
    assert f"{h}: ComputeFilter: the host's compute service is disabled" in failed["fault"]["details"]
    r = admin.put("/os-services/enable", {"host": h, "binary": "nova-compute"})
    assert r.json() == {"service": {"host": h, "binary": "nova-compute", "status": "enabled"}}
    assert admin.get("/os-services").json()["services"][0]["disabled_reason"] is None
    boot(world)


def test_service_updates_refuse_unknown_hosts_binaries_actions_and_fields(world: dict[str, Any]) -> None:
    admin, h = world["admin"], hostname(world)
    assert admin.put("/os-services/disable", {"host": "nowhere", "binary": "nova-compute"}).status_code == 404
    r = admin.put("/os-services/disable", {"host": h, "binary": "nova-scheduler"})
    assert r.status_code == 400 and "Only nova-compute" in r.json()["badRequest"]["message"]
    assert admin.put("/os-services/disable-log-reason", {"host": h, "binary": "nova-compute"}).status_code == 400
    assert admin.put("/os-services/reboot", {"host": h, "binary": "nova-compute"}).status_code == 404
    assert admin.put("/os-services/disable", {"host": h, "binary": "nova-compute", "x": 1}).status_code == 400
    assert admin.get("/os-services").json()["services"][0]["status"] == "enabled"


# -- os-migrations -------------------------------------------------------------------------------

def test_migrations_are_an_empty_list_before_any_move_and_forbidden_to_members(world: dict[str, Any]) -> None:
    assert world["admin"].get("/os-migrations").json() == {"migrations": []}
    assert world["admin"].at("2.23").get("/os-migrations").json() == {"migrations": []}
    assert world["alice"].get("/os-migrations").status_code == 403


# -- os-simple-tenant-usage ----------------------------------------------------------------------

def _period() -> dict[str, str]:
    now = datetime.now(UTC).replace(tzinfo=None)
    return {"start": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
            "end": (now + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")}


def test_usage_totals_per_project_for_admins_and_a_member_sees_its_own(world: dict[str, Any]) -> None:
    server = boot(world)
    pa = world["a"]["project_id"]
    listed = world["admin"].get("/os-simple-tenant-usage", **_period()).json()["tenant_usages"]
    assert [u["tenant_id"] for u in listed] == [pa]
    usage = listed[0]
    assert set(usage) == {"tenant_id", "start", "stop", "total_hours", "total_memory_mb_usage",
                          "total_vcpus_usage", "total_local_gb_usage"}
    assert 0 < usage["total_hours"] < 0.1
    detailed = world["admin"].get("/os-simple-tenant-usage", detailed="1", **_period()).json()["tenant_usages"][0]
    (one,) = detailed["server_usages"]
    assert set(one) == {"instance_id", "name", "tenant_id", "flavor", "hours", "memory_mb", "local_gb", "vcpus",
                        "started_at", "ended_at", "state", "uptime"}
    assert (one["instance_id"], one["state"], one["ended_at"]) == (server["id"], "active", None)
    assert detailed["total_memory_mb_usage"] == pytest.approx(one["memory_mb"] * one["hours"])
    assert detailed["total_vcpus_usage"] == pytest.approx(one["vcpus"] * one["hours"])
    assert detailed["total_local_gb_usage"] == pytest.approx(one["local_gb"] * one["hours"])
    own = world["alice"].get(f"/os-simple-tenant-usage/{pa}", **_period()).json()["tenant_usage"]
    assert own["tenant_id"] == pa and [s["instance_id"] for s in own["server_usages"]] == [server["id"]]


def test_usage_of_a_deleted_server_stays_and_is_terminated(world: dict[str, Any]) -> None:
    sid = boot(world)["id"]
    assert world["alice"].delete(f"/servers/{sid}").status_code == 204
    servers.until(lambda: world["alice"].get(f"/servers/{sid}").status_code == 404)
    pa = world["a"]["project_id"]
    (one,) = world["alice"].get(f"/os-simple-tenant-usage/{pa}", **_period()).json()["tenant_usage"]["server_usages"]
    assert one["state"] == "terminated" and one["ended_at"] is not None
    # The row stays for usage, but the server is gone everywhere else.
    for path in (f"/servers/{sid}", f"/servers/{sid}/os-memory", f"/servers/{sid}/os-instance-actions"):
        assert world["alice"].get(path).status_code == 404, path
    assert world["admin"].get("/servers", all_tenants="1").json()["servers"] == []


def test_usage_is_forbidden_across_projects_and_refuses_bad_periods(world: dict[str, Any]) -> None:
    pb = world["b"]["project_id"]
    alice = world["alice"]
    assert alice.get("/os-simple-tenant-usage").status_code == 403
    assert alice.get(f"/os-simple-tenant-usage/{pb}").status_code == 403
    assert alice.get(f"/os-simple-tenant-usage/{world['a']['project_id']}", **_period()).json() == {
        "tenant_usage": {}}
    period = _period()
    r = alice.get(f"/os-simple-tenant-usage/{world['a']['project_id']}", start=period["end"], end=period["start"])
    assert r.status_code == 400 and "start time" in r.json()["badRequest"]["message"]
    assert alice.get(f"/os-simple-tenant-usage/{world['a']['project_id']}", start="yesterday").status_code == 400


def test_usage_pages_over_servers_from_2_40(world: dict[str, Any]) -> None:
    boot(world, name="a")
    boot(world, name="b")
    admin = world["admin"].at("2.40")
    page = admin.get("/os-simple-tenant-usage", detailed="1", limit="1", **_period()).json()
    assert len(page["tenant_usages"][0]["server_usages"]) == 1
    assert "marker=" in page["tenant_usages_links"][0]["href"]
    assert "tenant_usages_links" not in world["admin"].get("/os-simple-tenant-usage", limit="1",
                                                           **_period()).json()
