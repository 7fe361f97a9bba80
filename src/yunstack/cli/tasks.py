"""`yun task list|show`: the cloud's long-running work (the admin ``os-tasks`` view), through the client."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from yunstack.cli.common import Cloud, Format, FormatOpt, StateDirOpt, client, emit_json, output
from yunstack.client import ApiError, YunClient

task_app = typer.Typer(help="Tasks: every host's long-running work, its attempts and leases (admin).",
                       no_args_is_help=True)
FULL_ID = 36


def _short(value: Any) -> str:
    """The first block of a UUID: enough to tell rows apart in a table at 80 columns."""
    return str(value).split("-", 1)[0] if value else ""


@task_app.command("list")
def task_list(
    state: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")] = None,
    host: Annotated[str | None, typer.Option(help="Only this host's steps.")] = None,
    resource: Annotated[str | None, typer.Option(help="Only the tasks of this resource id (a server's id).")] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind of work (e.g. server.migrate).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many, newest first.")] = None,
    cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table,
) -> None:
    """List tasks, newest first."""
    params = {k: v for k, v in {"state": state, "host": host, "resource_id": resource, "kind": kind,
                                "limit": limit}.items() if v is not None}
    with client(cloud, state_dir) as c:
        tasks: list[dict[str, Any]] = c.get("compute", "/os-tasks", params=params)["tasks"]
    if fmt is Format.json:
        emit_json(tasks)
        return
    output(fmt, ["ID", "Kind", "Step", "Resource", "Host", "State", "Try"],
           [(_short(x["id"]), x["kind"], x["step"] or "(group)", _short(x["resource_id"]), x["host"] or "",
             x["state"], f"{x['attempt']}/{x['max_attempts']}") for x in tasks])


def _full_id(c: YunClient, given: str) -> str:
    """A whole id, or the one id among the newest 1,000 tasks that starts with ``given`` (as `list` shows)."""
    if len(given) >= FULL_ID or not given:
        return given
    found = [x["id"] for x in c.get("compute", "/os-tasks", params={"limit": 1000})["tasks"]
             if x["id"].startswith(given)]
    if len(found) != 1:
        raise ApiError(404 if not found else 409,
                       f"{'No' if not found else 'More than one'} recent task id starts with {given!r}.")
    return str(found[0])


@task_app.command("show")
def task_show(
    task_id: Annotated[str, typer.Argument(help="A task id, or the start of one (as `list` shows).")],
    cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table,
) -> None:
    """Show one task: its arguments, lease, attempts, and why it failed."""
    with client(cloud, state_dir) as c:
        task: dict[str, Any] = c.get("compute", f"/os-tasks/{_full_id(c, task_id)}")["task"]
    if fmt is Format.json:
        emit_json(task)
        return
    rows = [(k, json.dumps(v) if isinstance(v, dict | list) else v) for k, v in task.items()]
    output(fmt, ["Field", "Value"], rows)
