"""os-server-groups and the ``group`` scheduler hint, through the API with the real agent on the FakeDriver."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.functional.compute import test_servers as servers
from tests.functional.compute.test_flavors_keypairs_quotas import heartbeat
from tests.functional.compute.test_servers import body, wait_for

world, host, qcow2 = servers.world, servers.host, servers.qcow2
KEYS_21 = {"id", "name", "policies", "members", "metadata"}


def make_group(world: dict[str, Any], policy: str, who: str = "alice", version: str = "2.15") -> dict[str, Any]:
    r = world[who].at(version).post("/os-server-groups", {"server_group": {"name": f"g-{policy}",
                                                                           "policies": [policy]}})
    assert r.status_code == 200, r.text
    group: dict[str, Any] = r.json()["server_group"]
    return group


def boot_in(world: dict[str, Any], group_id: str, name: str = "vm", **extra: Any) -> str:
    payload = {**body(world, name, **extra), "os:scheduler_hints": {"group": group_id}}
    r = world["alice"].post("/servers", payload)
    assert r.status_code == 202, r.text
    return str(r.json()["server"]["id"])


def host_of(world: dict[str, Any], server_id: str) -> str | None:
    server = world["admin"].get(f"/servers/{server_id}").json()["server"]
    return server["OS-EXT-SRV-ATTR:host"]


@pytest.mark.parametrize(("version", "extra"), [("2.1", set()), ("2.13", {"project_id", "user_id"}),
                                                ("2.47", {"project_id", "user_id"})])
def test_server_group_crud_has_novas_shape_at_each_microversion(world: dict[str, Any], version: str,
                                                                extra: set[str]) -> None:
    alice = world["alice"].at(version)
    r = alice.post("/os-server-groups", {"server_group": {"name": "web", "policies": ["anti-affinity"]}})
    assert r.status_code == 200, r.text
    group = r.json()["server_group"]
    assert set(group) == KEYS_21 | extra
    assert group["policies"] == ["anti-affinity"] and group["members"] == [] and group["metadata"] == {}
    if extra:
        assert group["project_id"] == world["a"]["project_id"]
    assert alice.get(f"/os-server-groups/{group['id']}").json() == {"server_group": group}
    assert alice.get("/os-server-groups").json() == {"server_groups": [group]}
    assert alice.delete(f"/os-server-groups/{group['id']}").status_code == 204
    assert alice.get(f"/os-server-groups/{group['id']}").status_code == 404


def test_soft_policies_need_2_15_and_bad_bodies_are_400(world: dict[str, Any]) -> None:
    alice = world["alice"]
    soft = {"server_group": {"name": "s", "policies": ["soft-anti-affinity"]}}
    assert alice.at("2.14").post("/os-server-groups", soft).status_code == 400
    assert alice.at("2.15").post("/os-server-groups", soft).status_code == 200
    for bad in ({"server_group": {"name": "x", "policies": ["affinity", "anti-affinity"]}},
                {"server_group": {"name": "x", "policies": []}},
                {"server_group": {"name": "x", "policies": ["spread"]}},
                {"server_group": {"name": "", "policies": ["affinity"]}},
                {"server_group": {"name": "x", "policies": ["affinity"], "rules": {}}},
                {"server_group": {"name": "x"}}):
        r = alice.at("2.15").post("/os-server-groups", bad)
        assert r.status_code == 400, (bad, r.text)
        assert "badRequest" in r.json()


def test_another_projects_group_is_404_and_only_admins_list_all_projects(world: dict[str, Any]) -> None:
    group = make_group(world, "affinity")
    bob = world["bob"]
    for r in (bob.get(f"/os-server-groups/{group['id']}"), bob.delete(f"/os-server-groups/{group['id']}")):
        assert r.status_code == 404
        assert r.json()["itemNotFound"]["message"] == f"Instance group {group['id']} could not be found."
    assert bob.get("/os-server-groups").json()["server_groups"] == []
    assert bob.get("/os-server-groups", all_projects="True").json()["server_groups"] == []
    admin = world["admin"]
    assert admin.get("/os-server-groups").json()["server_groups"] == []
    assert [g["id"] for g in admin.get("/os-server-groups", all_projects="True").json()["server_groups"]] == [
        group["id"]]
    payload = {**body(world), "os:scheduler_hints": {"group": group["id"]}}
    r = bob.post("/servers", payload)
    assert r.status_code == 400 and "Invalid server group" in r.json()["badRequest"]["message"]


def test_the_server_groups_quota_is_403(world: dict[str, Any]) -> None:
    pa = world["a"]["project_id"]
    assert world["admin"].put(f"/os-quota-sets/{pa}", {"quota_set": {"server_groups": 1}}).status_code == 200
    make_group(world, "affinity")
    r = world["alice"].post("/os-server-groups", {"server_group": {"name": "two", "policies": ["affinity"]}})
    assert r.status_code == 403 and "too many server groups" in r.json()["forbidden"]["message"]
    usage = world["alice"].get(f"/os-quota-sets/{pa}/detail").json()["quota_set"]["server_groups"]
    assert (usage["limit"], usage["in_use"]) == (1, 1)


def test_anti_affinity_spreads_members_and_refuses_a_third_on_two_hosts_naming_each_host(
        world: dict[str, Any], api: Any) -> None:
    heartbeat(api, "node2")
    group = make_group(world, "anti-affinity")
    first, second = boot_in(world, group["id"], "a"), boot_in(world, group["id"], "b")
    assert {host_of(world, first), host_of(world, second)} == {world["host"].driver.hostname, "node2"}
    third = boot_in(world, group["id"], "c")
    failed = wait_for(world["admin"], third, "ERROR")
    details = failed["fault"]["details"]
    assert f"{world['host'].driver.hostname}: ServerGroupAntiAffinityFilter: the host already runs 1" in details
    assert "node2: ServerGroupAntiAffinityFilter" in details
    members = world["alice"].get(f"/os-server-groups/{group['id']}").json()["server_group"]["members"]
    assert members == [first, second, third]


def test_affinity_keeps_a_multi_create_on_one_host(world: dict[str, Any], api: Any) -> None:
    heartbeat(api, "node2")
    group = make_group(world, "affinity")
    boot_in(world, group["id"], "web", min_count=3, max_count=3)
    members = world["alice"].get(f"/os-server-groups/{group['id']}").json()["server_group"]["members"]
    assert len(members) == 3 and len({host_of(world, m) for m in members}) == 1


def test_a_deleted_server_leaves_its_group(world: dict[str, Any]) -> None:
    group = make_group(world, "soft-anti-affinity")
    sid = boot_in(world, group["id"])
    wait_for(world["alice"], sid, "ACTIVE")
    path = f"/os-server-groups/{group['id']}"
    assert world["alice"].get(path).json()["server_group"]["members"] == [sid]
    assert world["alice"].delete(f"/servers/{sid}").status_code == 204
    servers.until(lambda: world["alice"].get(path).json()["server_group"]["members"] == [])


def test_a_group_hint_that_is_not_a_uuid_or_names_no_group_is_400(world: dict[str, Any]) -> None:
    for hint in ("nope", str(uuid.uuid4())):
        r = world["alice"].post("/servers", {**body(world), "os:scheduler_hints": {"group": hint}})
        assert r.status_code == 400, r.text
    assert servers.instance_count(world["api"].services) == 0


def test_the_server_group_members_quota_refuses_a_create_that_would_pass_it(world: dict[str, Any]) -> None:
    pa = world["a"]["project_id"]
    assert world["admin"].put(f"/os-quota-sets/{pa}",
                              {"quota_set": {"server_group_members": 2}}).status_code == 200
    group = make_group(world, "soft-affinity")
    boot_in(world, group["id"], "web", min_count=2, max_count=2)
    r = world["alice"].post("/servers", {**body(world), "os:scheduler_hints": {"group": group["id"]}})
    assert r.status_code == 403 and "too many servers in group" in r.json()["forbidden"]["message"]
