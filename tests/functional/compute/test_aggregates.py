"""Nova os-aggregates through the in-process API, on both DBs: CRUD, hosts, metadata, zones, policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.conftest import Api
from tests.functional.compute.test_flavors_keypairs_quotas import add_instance, heartbeat, world
from tests.functional.compute.test_servers import IM, Host, body, host, qcow2, wait_for
from yunstack.compute.aggregates import BALANCER_KEY
from yunstack.compute.hosts import api_id
from yunstack.db.base import Base
from yunstack.errors import BadRequest

__all__ = ["host", "qcow2", "world"]  # the fixtures, imported for this module's tests
KEYS = {"availability_zone", "created_at", "deleted", "deleted_at", "hosts", "id", "metadata", "name", "updated_at"}


def create(world: dict[str, Any], name: str = "fast", zone: str | None = None, version: str | None = None) -> Any:
    body: dict[str, Any] = {"name": name}
    if zone is not None:
        body["availability_zone"] = zone
    r = world["admin"].at(version).post("/os-aggregates", {"aggregate": body})
    assert r.status_code == 200, r.text
    return r.json()["aggregate"]


def act(world: dict[str, Any], agg_id: object, action: str, args: Any, who: str = "admin") -> Any:
    return world[who].post(f"/os-aggregates/{agg_id}/action", {action: args})


def test_the_migration_builds_exactly_the_aggregate_tables_the_code_declares(api: Api) -> None:
    with api.services.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert [d for d in diff if "aggregate" in repr(d)] == []


@pytest.mark.parametrize(("version", "extra"), [("2.1", set()), ("2.40", set()), ("2.41", {"uuid"}),
                                                ("2.47", {"uuid"})])
def test_aggregate_crud_has_novas_shape_at_each_microversion(world: dict[str, Any], version: str,
                                                             extra: set[str]) -> None:
    admin = world["admin"].at(version)
    r = admin.post("/os-aggregates", {"aggregate": {"name": "fast", "availability_zone": "az-fast"}})
    assert r.status_code == 200, r.text
    created = r.json()["aggregate"]
    assert set(created) == KEYS - {"hosts", "metadata"} | extra  # Nova's create shows neither
    assert created["name"] == "fast" and created["availability_zone"] == "az-fast"
    assert created["deleted"] is False and created["deleted_at"] is None and created["updated_at"] is None
    assert isinstance(created["id"], int) and "+" not in created["created_at"]
    shown = admin.get(f"/os-aggregates/{created['id']}").json()["aggregate"]
    assert set(shown) == KEYS | extra
    assert shown["hosts"] == [] and shown["metadata"] == {"availability_zone": "az-fast"}
    assert admin.get("/os-aggregates").json() == {"aggregates": [shown]}
    r = admin.put(f"/os-aggregates/{created['id']}", {"aggregate": {"name": "faster"}})
    assert r.status_code == 200, r.text
    assert r.json()["aggregate"]["name"] == "faster" and r.json()["aggregate"]["updated_at"] is not None
    r = admin.put(f"/os-aggregates/{created['id']}", {"aggregate": {"availability_zone": "az-2"}})
    assert r.json()["aggregate"]["availability_zone"] == "az-2"
    assert r.json()["aggregate"]["metadata"] == {"availability_zone": "az-2"}
    r = admin.delete(f"/os-aggregates/{created['id']}")
    assert r.status_code == 200 and r.content == b""
    assert admin.get(f"/os-aggregates/{created['id']}").status_code == 404
    assert admin.get("/os-aggregates").json() == {"aggregates": []}


def test_an_aggregate_is_found_by_its_uuid_too(world: dict[str, Any]) -> None:
    agg = create(world, version="2.41")
    assert world["admin"].get(f"/os-aggregates/{agg['uuid']}").json()["aggregate"]["id"] == agg["id"]


def test_hosts_join_and_leave_and_the_errors_are_novas(api: Api, world: dict[str, Any]) -> None:
    heartbeat(api, "node1")
    agg = create(world)
    r = act(world, agg["id"], "add_host", {"host": "node1"})
    assert r.status_code == 200, r.text
    assert r.json()["aggregate"]["hosts"] == ["node1"]
    r = act(world, agg["id"], "add_host", {"host": "node1"})
    assert r.status_code == 409 and "conflictingRequest" in r.json()
    r = act(world, agg["id"], "add_host", {"host": "nowhere"})
    assert r.status_code == 404 and "itemNotFound" in r.json()
    assert "nowhere" in r.json()["itemNotFound"]["message"]
    r = world["admin"].delete(f"/os-aggregates/{agg['id']}")
    assert r.status_code == 400 and "badRequest" in r.json()  # Nova: 400 while it has hosts
    r = act(world, agg["id"], "remove_host", {"host": "node1"})
    assert r.status_code == 200 and r.json()["aggregate"]["hosts"] == []
    assert act(world, agg["id"], "remove_host", {"host": "node1"}).status_code == 404
    assert world["admin"].delete(f"/os-aggregates/{agg['id']}").status_code == 200


def test_unknown_aggregates_are_404_and_duplicate_names_409(world: dict[str, Any]) -> None:
    admin = world["admin"]
    for missing in ("999", "abc", "99999999999999999999", "2147483648"):
        for r in (admin.get(f"/os-aggregates/{missing}"), admin.delete(f"/os-aggregates/{missing}"),
                  admin.put(f"/os-aggregates/{missing}", {"aggregate": {"name": "x"}}),
                  act(world, missing, "set_metadata", {"metadata": {"a": "b"}})):
            assert r.status_code == 404, (missing, r.text)
            assert r.json()["itemNotFound"]["message"] == f"Aggregate {missing} could not be found."
    first = create(world, "one")
    create(world, "two")
    r = admin.post("/os-aggregates", {"aggregate": {"name": "one"}})
    assert r.status_code == 409 and "conflictingRequest" in r.json()
    r = admin.put(f"/os-aggregates/{first['id']}", {"aggregate": {"name": "two"}})
    assert r.status_code == 409
    assert admin.put(f"/os-aggregates/{first['id']}", {"aggregate": {"name": "one"}}).status_code == 200


@pytest.mark.parametrize("bad", [
    {}, {"aggregate": {}}, {"aggregate": {"name": ""}}, {"aggregate": {"name": "x" * 256}},
    {"aggregate": {"name": "x", "colour": "red"}}, {"aggregate": {"name": " x"}},
    {"aggregate": {"name": "x", "availability_zone": "a:b"}}, {"aggregate": {"name": "x", "availability_zone": ""}},
    {"aggregate": {"name": "x", "availability_zone": "internal"}}, {"aggregate": {"name": 5}},
    {"aggregate": {"name": "x"}, "other": 1}, [], "aggregate"])
def test_bad_create_bodies_are_400(world: dict[str, Any], bad: Any) -> None:
    r = world["admin"].post("/os-aggregates", bad)
    assert r.status_code == 400, r.text
    assert "badRequest" in r.json()


def test_bad_update_and_action_bodies_are_400(api: Api, world: dict[str, Any]) -> None:
    heartbeat(api, "node1")
    agg = create(world)
    admin = world["admin"]
    for bad in ({"aggregate": {}}, {"aggregate": {"name": None}}, {"aggregate": {"uuid": "x"}}, {"name": "x"}):
        assert admin.put(f"/os-aggregates/{agg['id']}", bad).status_code == 400, bad
    for action, args in (("add_host", {}), ("add_host", {"host": ""}), ("add_host", {"host": "node1", "x": 1}),
                         ("add_host", "node1"), ("remove_host", None), ("set_metadata", {}),
                         ("set_metadata", {"metadata": []}), ("set_metadata", {"metadata": {"a": 1}}),
                         ("set_metadata", {"metadata": {"bad/key": "x"}}),
                         ("set_metadata", {"metadata": {"a": "x" * 256}}),
                         ("set_metadata", {"metadata": {"a": "b"}, "x": 1}), ("explode", {})):
        r = act(world, agg["id"], action, args)
        assert r.status_code == 400, (action, args, r.text)
        assert "badRequest" in r.json()
    r = admin.post(f"/os-aggregates/{agg['id']}/action", {"add_host": {"host": "node1"}, "remove_host": {}})
    assert r.status_code == 400


def test_set_metadata_merges_and_a_null_value_deletes_a_key(world: dict[str, Any]) -> None:
    agg = create(world)
    r = act(world, agg["id"], "set_metadata", {"metadata": {"ssd": "true", "gpu": "no"}})
    assert r.status_code == 200 and r.json()["aggregate"]["metadata"] == {"ssd": "true", "gpu": "no"}
    r = act(world, agg["id"], "set_metadata", {"metadata": {"gpu": None, "absent": None, "ssd": "yes"}})
    assert r.json()["aggregate"]["metadata"] == {"ssd": "yes"}
    r = act(world, agg["id"], "set_metadata", {"metadata": {"availability_zone": "az9"}})
    assert r.json()["aggregate"]["availability_zone"] == "az9"
    r = act(world, agg["id"], "set_metadata", {"metadata": {"availability_zone": None}})
    assert r.json()["aggregate"]["availability_zone"] is None


def test_members_and_readers_get_403_for_every_aggregate_call(api: Api, world: dict[str, Any]) -> None:
    heartbeat(api, "node1")
    agg = create(world)
    for who in ("alice", "bob"):
        nova = world[who]
        calls = (nova.get("/os-aggregates"), nova.get(f"/os-aggregates/{agg['id']}"),
                 nova.post("/os-aggregates", {"aggregate": {"name": "mine"}}),
                 nova.put(f"/os-aggregates/{agg['id']}", {"aggregate": {"name": "mine"}}),
                 nova.delete(f"/os-aggregates/{agg['id']}"),
                 act(world, agg["id"], "add_host", {"host": "node1"}, who=who),
                 act(world, agg["id"], "remove_host", {"host": "node1"}, who=who),
                 act(world, agg["id"], "set_metadata", {"metadata": {BALANCER_KEY: "auto"}}, who=who),
                 nova.get("/os-aggregates/999"))
        for r in calls:
            assert r.status_code == 403, r.text
            assert "forbidden" in r.json()
    shown = world["admin"].get(f"/os-aggregates/{agg['id']}").json()["aggregate"]
    assert (shown["name"], shown["hosts"], shown["metadata"]) == ("fast", [], {})
    assert [a["name"] for a in world["admin"].get("/os-aggregates").json()["aggregates"]] == ["fast"]


# -- availability zones ------------------------------------------------------------------------------

def zones(world: dict[str, Any]) -> dict[str, list[str]]:
    detail = world["admin"].get("/os-availability-zone/detail").json()["availabilityZoneInfo"]
    return {z["zoneName"]: sorted(z["hosts"] or {}) for z in detail if z["zoneName"] != "internal"}


def test_an_aggregates_zone_is_its_hosts_zone_in_zones_and_services(api: Api, world: dict[str, Any]) -> None:
    heartbeat(api, "node1")
    heartbeat(api, "node2")
    agg = create(world, zone="az-fast")
    assert zones(world) == {"nova": ["node1", "node2"]}
    act(world, agg["id"], "add_host", {"host": "node1"})
    assert zones(world) == {"az-fast": ["node1"], "nova": ["node2"]}
    services = world["admin"].get("/os-services").json()["services"]
    assert {s["host"]: s["zone"] for s in services} == {"node1": "az-fast", "node2": "nova"}
    names = [z["zoneName"] for z in world["alice"].get("/os-availability-zone").json()["availabilityZoneInfo"]]
    assert names == ["az-fast", "nova"]
    world["admin"].put(f"/os-aggregates/{agg['id']}", {"aggregate": {"availability_zone": "az-quick"}})
    assert zones(world) == {"az-quick": ["node1"], "nova": ["node2"]}
    act(world, agg["id"], "remove_host", {"host": "node1"})
    assert zones(world) == {"nova": ["node1", "node2"]}


def test_a_host_is_in_one_zone_only(api: Api, world: dict[str, Any]) -> None:
    heartbeat(api, "node1")
    east, west, plain = create(world, "east", "az-east"), create(world, "west", "az-west"), create(world, "plain")
    assert act(world, east["id"], "add_host", {"host": "node1"}).status_code == 200
    r = act(world, west["id"], "add_host", {"host": "node1"})
    assert r.status_code == 409 and "availability zone" in r.json()["conflictingRequest"]["message"]
    assert act(world, plain["id"], "add_host", {"host": "node1"}).status_code == 200  # no zone: no conflict
    r = act(world, plain["id"], "set_metadata", {"metadata": {"availability_zone": "az-west"}})
    assert r.status_code == 400 and "badRequest" in r.json()
    r = world["admin"].put(f"/os-aggregates/{plain['id']}", {"aggregate": {"availability_zone": "az-west"}})
    assert r.status_code == 400
    r = world["admin"].put(f"/os-aggregates/{plain['id']}", {"aggregate": {"availability_zone": "az-east"}})
    assert r.status_code == 200  # the same zone twice is one zone
    assert zones(world) == {"az-east": ["node1"]}


def test_a_host_that_runs_servers_keeps_its_zone(api: Api, world: dict[str, Any]) -> None:
    heartbeat(api, "node1")
    add_instance(api, world["a"]["project_id"], world["a"]["user_id"], host="node1", vcpus=1, ram=64)
    zoned, plain = create(world, "zoned", "az-fast"), create(world, "plain")
    r = act(world, zoned["id"], "add_host", {"host": "node1"})
    assert r.status_code == 409 and "run servers" in r.json()["conflictingRequest"]["message"]
    assert act(world, plain["id"], "add_host", {"host": "node1"}).status_code == 200
    r = act(world, plain["id"], "set_metadata", {"metadata": {"availability_zone": "az-2"}})
    assert r.status_code == 400 and "run servers" in r.json()["badRequest"]["message"]
    r = act(world, plain["id"], "set_metadata", {"metadata": {"availability_zone": "nova"}})
    assert r.status_code == 200  # the zone it is in already: nothing moves
    assert act(world, plain["id"], "set_metadata", {"metadata": {"other": "x"}}).status_code == 200


def test_deleting_a_compute_service_takes_its_host_out_of_its_aggregates(api: Api, world: dict[str, Any]) -> None:
    node_id = heartbeat(api, "node1")
    agg = create(world, zone="az-fast")
    act(world, agg["id"], "add_host", {"host": "node1"})
    assert world["admin"].delete(f"/os-services/{api_id(node_id)}").status_code == 204
    assert world["admin"].get(f"/os-aggregates/{agg['id']}").json()["aggregate"]["hosts"] == []


# -- the memory balancer's mode per host ---------------------------------------------------------------

def test_the_balancer_mode_is_validated_and_the_most_conservative_wins(api: Api, world: dict[str, Any]) -> None:
    for name in ("node1", "node2", "node3"):
        heartbeat(api, name)
    one, two = create(world, "one"), create(world, "two")
    act(world, one["id"], "add_host", {"host": "node1"})
    act(world, one["id"], "add_host", {"host": "node2"})
    act(world, two["id"], "add_host", {"host": "node2"})
    r = act(world, one["id"], "set_metadata", {"metadata": {BALANCER_KEY: "aggressive"}})
    assert r.status_code == 400 and BALANCER_KEY in r.json()["badRequest"]["message"]
    aggregates = api.services.compute.aggregates
    assert aggregates.mode_for_hosts("advise") == {"node1": "advise", "node2": "advise", "node3": "advise"}
    assert act(world, one["id"], "set_metadata", {"metadata": {BALANCER_KEY: "auto"}}).status_code == 200
    act(world, two["id"], "set_metadata", {"metadata": {BALANCER_KEY: "off"}})
    assert aggregates.mode_for_hosts("advise") == {"node1": "auto", "node2": "off", "node3": "advise"}
    act(world, two["id"], "set_metadata", {"metadata": {BALANCER_KEY: "advise"}})
    assert aggregates.mode_for_hosts("off") == {"node1": "auto", "node2": "advise", "node3": "off"}
    act(world, two["id"], "set_metadata", {"metadata": {BALANCER_KEY: None}})
    assert aggregates.mode_for_hosts("off")["node2"] == "auto"
    with pytest.raises(BadRequest):
        aggregates.mode_for_hosts("sometimes")


# -- scheduling into an aggregate's zone, with the real agent on the FakeDriver ----------------------

def test_servers_that_ask_for_an_aggregates_zone_land_on_its_hosts(api: Api, world: dict[str, Any], host: Host,
                                                                   qcow2: Path) -> None:
    admin = api.headers(api.admin())
    r = api.http.post(f"{IM}/images", json={"name": "cirros", "disk_format": "qcow2", "container_format": "bare",
                                             "visibility": "public"}, headers=admin)
    world["image"] = r.json()["id"]
    r = api.http.put(f"{IM}/images/{world['image']}/file", content=qcow2.read_bytes(),
                     headers={**admin, "Content-Type": "application/octet-stream"})
    assert r.status_code == 204, r.text
    me = api.services.config.host_name
    alice = world["alice"]

    def boot(name: str, **extra: Any) -> str:
        r = alice.post("/servers", body(world, name, **extra))
        assert r.status_code == 202, r.text
        return str(r.json()["server"]["id"])

    agg = create(world, zone="az-fast")
    early = wait_for(alice, boot("early", availability_zone="az-fast"), "ERROR")
    assert "No valid host" in early["fault"]["message"]
    assert act(world, agg["id"], "add_host", {"host": me}).status_code == 200
    inside = wait_for(alice, boot("inside", availability_zone="az-fast"), "ACTIVE")
    assert inside["OS-EXT-AZ:availability_zone"] == "az-fast"
    assert world["admin"].get(f"/servers/{inside['id']}").json()["server"]["OS-EXT-SRV-ATTR:host"] == me
    anywhere = wait_for(alice, boot("anywhere"), "ACTIVE")
    assert anywhere["OS-EXT-AZ:availability_zone"] == "az-fast"  # as Nova: the zone of the host it got
    wait_for(alice, boot("elsewhere", availability_zone="nova"), "ERROR")  # the host left "nova"
    # Its servers pin the host's zone now.
    r = act(world, agg["id"], "remove_host", {"host": me})
    assert r.status_code == 409, r.text
