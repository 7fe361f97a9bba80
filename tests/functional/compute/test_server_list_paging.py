"""Server list paged in SQL: walking the pages with limit/marker gives exactly the filtered, sorted
list, on both databases, also when a filter runs per row (name, tags, status) across batches."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Api
from tests.functional.compute.test_flavors_keypairs_quotas import Nova
from tests.functional.identity.test_identity_api import make_member
from yunstack.compute import listing
from yunstack.db.tables import compute as t

C = "/compute/v2.1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def world(api: Api, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(listing, "BATCH", 4)  # a per-row filter crosses many batches with few rows
    admin = api.admin()
    a = make_member(api, admin, "alpha", "alice")
    b = make_member(api, admin, "beta", "bob")
    rng = random.Random(9)
    rows = []
    with api.services.db.begin() as s:
        for n in range(40):
            project = a if n % 5 else b
            created = T0 + timedelta(minutes=rng.randrange(10))  # many ties: paging must break them by id
            row = t.Instance(
                id=f"{n:08d}-0000-4000-8000-{rng.randrange(16**12):012x}", name=f"{'app' if n % 3 else 'db'}-{n}",
                hostname=f"h{n}", project_id=project["project_id"], user_id=project["user_id"],
                host=None if n % 7 == 0 else f"node{n % 3}", availability_zone="nova",
                vm_state=("active", "stopped", "error", "deleted")[n % 4], task_state=None, power_state=1,
                flavor={"id": "42" if n % 2 else "84", "name": "x", "vcpus": 1, "ram": 64, "disk": 1,
                        "ephemeral": 0, "swap": 0, "extra_specs": {}},
                image_id="img-a" if n % 4 < 2 else "img-b", tags=["blue"] if n % 3 == 1 else [],
                reservation_id=f"r-{n % 2}", created_at=created, updated_at=created + timedelta(hours=n))
            s.add(row)
            rows.append(row)
    return {"rows": rows, "alpha": a["project_id"],
            "alice": Nova(api, api.login("alice", "alice-pw", "alpha"), "2.26"), "admin": Nova(api, admin, "2.26")}


def walk(nova: Nova, limit: int, **params: Any) -> list[str]:
    """Every id, page by page, following the next links' markers."""
    ids: list[str] = []
    marker: str | None = None
    for _ in range(100):
        page = nova.get("/servers/detail", limit=str(limit), **params, **({"marker": marker} if marker else {}))
        assert page.status_code == 200, page.text
        body = page.json()
        ids += [s["id"] for s in body["servers"]]
        assert len(body["servers"]) <= limit
        if "servers_links" not in body:
            return ids
        marker = body["servers"][-1]["id"]
        assert f"marker={marker}" in body["servers_links"][0]["href"]
    raise AssertionError("paging did not end")


STATUS = {"active": "ACTIVE", "stopped": "SHUTOFF", "error": "ERROR"}


def expected(world: dict[str, Any], key: str = "created_at", reverse: bool = True, **match: Any) -> list[str]:
    rows = [r for r in world["rows"] if r.project_id == world["alpha"] and r.vm_state != "deleted"]
    rows = [r for r in rows if all(fn(r) for fn in match.values())]
    value = {"created_at": lambda r: r.created_at, "display_name": lambda r: r.name,
             "host": lambda r: r.host or "", "uuid": lambda r: r.id}[key]
    # Sorted by the key in the asked direction, then by id ascending (stable sorts, last key first).
    rows = sorted(rows, key=lambda r: r.id)
    return [r.id for r in sorted(rows, key=value, reverse=reverse)]


@pytest.mark.parametrize("limit", [1, 3, 7, 100])
def test_pages_walk_the_whole_list_in_order_with_no_gap_or_repeat(world: dict[str, Any], limit: int) -> None:
    assert walk(world["alice"], limit) == expected(world)


@pytest.mark.parametrize("key,direction", [("display_name", "asc"), ("host", "desc"), ("uuid", "asc"),
                                           ("created_at", "asc")])
def test_pages_follow_each_sort_key_and_direction(world: dict[str, Any], key: str, direction: str) -> None:
    got = walk(world["alice"], 4, sort_key=key, sort_dir=direction)
    assert got == expected(world, key, reverse=direction == "desc")


def test_column_filters_and_per_row_filters_page_together(world: dict[str, Any]) -> None:
    nova = world["alice"]
    assert walk(nova, 2, name="^app-", status="active") == expected(
        world, name=lambda r: r.name.startswith("app-"), status=lambda r: r.vm_state == "active")
    assert walk(nova, 3, tags="blue", flavor="42") == expected(
        world, tags=lambda r: "blue" in r.tags, flavor=lambda r: r.flavor["id"] == "42")
    assert walk(nova, 2, image="img-b", reservation_id="r-1") == expected(
        world, image=lambda r: r.image_id == "img-b", rid=lambda r: r.reservation_id == "r-1")
    since = T0 + timedelta(hours=20)
    assert walk(nova, 5, **{"changes-since": since.isoformat()}) == expected(
        world, since=lambda r: r.updated_at >= since)
    assert walk(nova, 3, status="SHUTOFF") == expected(world, status=lambda r: r.vm_state == "stopped")
    assert walk(nova, 3, name="^nothing$") == []


def test_admins_filter_by_host_across_projects(world: dict[str, Any]) -> None:
    got = walk(world["admin"], 3, all_tenants="1", host="node1")
    want = [r for r in world["rows"] if r.host == "node1" and r.vm_state != "deleted"]
    assert sorted(got) == sorted(r.id for r in want)


def test_a_marker_may_be_a_server_deleted_since_but_not_another_projects_or_unknown(
        world: dict[str, Any]) -> None:
    nova = world["alice"]
    deleted = next(r for r in world["rows"] if r.project_id == world["alpha"] and r.vm_state == "deleted")
    after = nova.get("/servers", marker=deleted.id, sort_key="uuid", sort_dir="asc").json()["servers"]
    assert [s["id"] for s in after] == [i for i in expected(world, "uuid", reverse=False) if i > deleted.id]
    others = next(r for r in world["rows"] if r.project_id != world["alpha"])
    for marker in (others.id, "no-such-server"):
        r = nova.get("/servers", marker=marker)
        assert r.status_code == 400 and f"marker [{marker}] not found" in r.text


def test_limit_zero_is_an_empty_page_and_a_bad_sort_key_is_400(world: dict[str, Any]) -> None:
    assert world["alice"].get("/servers", limit="0").json()["servers"] == []
    assert world["alice"].get("/servers", sort_key="nope").status_code == 400
