"""`yun task list|show` against a real HTTP server: the operations view for admins, at 80 columns and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Api
from tests.functional.cli.test_yun_cli import served, services, yun
from tests.taskkit import REGISTRY, Clock, PrepareArgs, SpawnArgs, server
from yunstack.tasks.service import TaskService

__all__ = ["served", "services"]  # fixtures, used by name


def seed(api: Api) -> tuple[str, str]:
    """A queued spawn on h1 and a migration group whose prepare step failed on h2."""
    tasks = TaskService(api.services.db, REGISTRY, clock=Clock())
    with api.services.db.begin() as s:
        spawn = tasks.enqueue(s, kind="server.spawn", resource=server(1), host="h1", step="spawn",
                              args=SpawnArgs(image_id="img"))
        group = tasks.enqueue_group(s, kind="server.migrate", resource=server(2))
        prepare = tasks.enqueue(s, kind="server.migrate", resource=server(2), host="h2", step="prepare",
                                args=PrepareArgs(source="h1"), parent_id=group)
    tasks.claim("h2")
    tasks.fail(prepare, "no room on h2")
    return spawn, group


def test_yun_task_list_fits_80_columns_and_filters(api: Api, served: Path) -> None:
    spawn, group = seed(api)
    out = yun(served, "task", "list")
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert spawn.split("-")[0] in out and group.split("-")[0] in out and "(group)" in out
    rows = json.loads(yun(served, "task", "list", "--state", "failed", "-f", "json"))
    assert {r["kind"] for r in rows} == {"server.migrate"}
    assert {r["step"] for r in rows} == {None, "prepare"}


def test_yun_task_show_takes_a_prefix_and_says_why_a_group_failed(api: Api, served: Path) -> None:
    _, group = seed(api)
    shown = json.loads(yun(served, "task", "show", group.split("-")[0], "-f", "json"))
    assert shown["id"] == group
    assert shown["reason"] == "step prepare on host h2 failed: no room on h2"
    assert "no room on h2" in yun(served, "task", "show", group)
