"""``/compute/v2.1/os-tasks``: the operations view, admin only, with filters and paging."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.functional.identity.test_identity_api import make_member
from tests.taskkit import REGISTRY, Clock, PrepareArgs, SendArgs, SpawnArgs, SpawnResult, server
from yunstack.tasks.service import TaskService

NOVA = "/compute/v2.1"
KEYS = {"id", "kind", "step", "state", "resource_type", "resource_id", "project_id", "host", "attempt",
        "max_attempts", "lease_owner", "lease_expires_at", "request_id", "parent_id", "children", "may_cancel",
        "reason", "args", "result", "created_at", "updated_at", "finished_at"}


@pytest.fixture
def world(api: Api) -> dict[str, Any]:
    """Three tasks: a finished spawn on h1, a migration group (prepare running on h2, send queued on h1)."""
    tasks = TaskService(api.services.db, REGISTRY, clock=Clock())
    with api.services.db.begin() as s:
        spawn = tasks.enqueue(s, kind="server.spawn", resource=server(1), host="h1", step="spawn",
                              args=SpawnArgs(image_id="img-1"), request_id="req-spawn")
    tasks.claim("h1")
    tasks.complete(spawn, SpawnResult(adopted=False))
    with api.services.db.begin() as s:
        group = tasks.enqueue_group(s, kind="server.migrate", resource=server(2), request_id="req-mig")
        prepare = tasks.enqueue(s, kind="server.migrate", resource=server(2), host="h2", step="prepare",
                                args=PrepareArgs(source="h1"), parent_id=group, request_id="req-mig")
        send = tasks.enqueue(s, kind="server.migrate", resource=server(2), host="h1", step="send",
                             args=SendArgs(target="h2"), parent_id=group, request_id="req-mig")
    tasks.claim("h2", lease_seconds=60)
    admin = api.admin()
    make_member(api, admin, "alpha", "alice")
    return {"admin": api.headers(admin), "alice": api.headers(api.login("alice", "alice-pw", "alpha")),
            "spawn": spawn, "group": group, "prepare": prepare, "send": send}


def get(api: Api, headers: dict[str, str], path: str, **params: str) -> Any:
    return api.http.get(f"{NOVA}{path}", params=params, headers=headers)


def test_admins_list_every_hosts_tasks_newest_first_with_their_whole_record(api: Api, world: dict[str, Any]
                                                                            ) -> None:
    r = get(api, world["admin"], "/os-tasks")
    assert r.status_code == 200, r.text
    tasks = r.json()["tasks"]
    assert [x["id"] for x in tasks] == [world["send"], world["prepare"], world["group"], world["spawn"]]
    assert all(set(x) == KEYS for x in tasks)
    assert "tasks_links" not in r.json()
    spawn = tasks[-1]
    assert {k: spawn[k] for k in ("kind", "step", "state", "resource_type", "resource_id", "project_id", "host",
                                  "attempt", "max_attempts", "lease_owner", "lease_expires_at", "request_id",
                                  "parent_id", "children", "may_cancel", "reason", "args", "result")} == {
        "kind": "server.spawn", "step": "spawn", "state": "succeeded", "resource_type": "server",
        "resource_id": server(1).id, "project_id": "p1", "host": "h1", "attempt": 1, "max_attempts": 2,
        "lease_owner": "h1", "lease_expires_at": None, "request_id": "req-spawn", "parent_id": None,
        "children": [], "may_cancel": False, "reason": None, "args": {"image_id": "img-1"},
        "result": {"adopted": False}}
    assert spawn["finished_at"] == "2026-12-02T03:00:00.000000Z"
    prepare = tasks[1]
    assert (prepare["state"], prepare["lease_owner"], prepare["lease_expires_at"], prepare["parent_id"]) == (
        "running", "h2", "2026-12-02T03:01:00.000000Z", world["group"])
    assert (tasks[0]["state"], tasks[0]["may_cancel"]) == ("queued", True)


def test_a_group_shows_its_steps_and_its_state_from_them(api: Api, world: dict[str, Any]) -> None:
    r = get(api, world["admin"], f"/os-tasks/{world['group']}")
    assert r.status_code == 200, r.text
    group = r.json()["task"]
    assert set(group) == KEYS
    assert (group["kind"], group["step"], group["host"], group["state"], group["args"]) == (
        "server.migrate", None, None, "running", {})
    assert group["children"] == [world["prepare"], world["send"]]


@pytest.mark.parametrize(("params", "expect"), [
    ({"state": "queued"}, ["send"]),
    ({"state": "running"}, ["prepare", "group"]),
    ({"host": "h1"}, ["send", "spawn"]),
    ({"resource_id": server(1).id}, ["spawn"]),
    ({"kind": "server.migrate", "host": "h2"}, ["prepare"]),
    ({"state": "failed"}, []),
])
def test_the_list_filters_by_state_host_resource_and_kind(api: Api, world: dict[str, Any], params: dict[str, str],
                                                          expect: list[str]) -> None:
    r = get(api, world["admin"], "/os-tasks", **params)
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["tasks"]] == [world[name] for name in expect]


def test_the_list_pages_with_limit_and_a_next_link(api: Api, world: dict[str, Any]) -> None:
    r = get(api, world["admin"], "/os-tasks", limit="3", host="h1")
    assert [x["id"] for x in r.json()["tasks"]] == [world["send"], world["spawn"]]
    assert "tasks_links" not in r.json()
    r = get(api, world["admin"], "/os-tasks", limit="2")
    assert [x["id"] for x in r.json()["tasks"]] == [world["send"], world["prepare"]]
    [link] = r.json()["tasks_links"]
    assert link["rel"] == "next" and f"marker={world['prepare']}" in link["href"]
    r = api.http.get(link["href"], headers=world["admin"])
    assert [x["id"] for x in r.json()["tasks"]] == [world["group"], world["spawn"]]


@pytest.mark.parametrize("params", [{"limit": "abc"}, {"limit": "-1"}, {"state": "sleeping"},
                                    {"marker": "00000000-0000-0000-0000-00000000dead"}])
def test_bad_filters_and_paging_are_a_400_fault(api: Api, world: dict[str, Any], params: dict[str, str]) -> None:
    r = get(api, world["admin"], "/os-tasks", **params)
    assert r.status_code == 400, r.text
    assert r.json()["badRequest"]["code"] == 400


def test_members_may_not_see_the_operations_view(api: Api, world: dict[str, Any]) -> None:
    for path in ("/os-tasks", f"/os-tasks/{world['spawn']}", "/os-tasks/nope"):
        r = get(api, world["alice"], path)
        assert r.status_code == 403, r.text
        assert r.json()["forbidden"]["code"] == 403
    assert get(api, {}, "/os-tasks").status_code == 401


def test_an_unknown_task_is_a_404_fault(api: Api, world: dict[str, Any]) -> None:
    r = get(api, world["admin"], "/os-tasks/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    assert r.json() == {"itemNotFound": {"code": 404, "message":
                                         "Task 00000000-0000-0000-0000-000000000000 could not be found."}}
