"""``os-tasks``: the cloud's long-running work, for admins (a yunstack extension, after Incus's operations).

Each task is one step a host runs under a lease, or a group of such steps (``children``).  Nova's
instance actions (``os-instance-actions``) stay the view users see of their servers' operations;
this view is the operator's: every host's work, its attempts, leases and failure reasons.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from yunstack.api.compute.views_misc import next_links, paging
from yunstack.api.deps import Ctx, Svc
from yunstack.tasks.model import TaskRecord
from yunstack.types import isotime

router = APIRouter(prefix="/compute/v2.1", tags=["compute", "tasks"])
Json = dict[str, Any]


def view(task: TaskRecord) -> Json:
    return {"id": task.id, "kind": task.kind, "step": task.step, "state": task.state.value,
            "resource_type": task.resource.type, "resource_id": task.resource.id,
            "project_id": task.resource.project_id, "host": task.host, "attempt": task.attempt,
            "max_attempts": task.max_attempts, "lease_owner": task.lease_owner,
            "lease_expires_at": isotime(task.lease_expires_at, micro=True), "request_id": task.request_id,
            "parent_id": task.parent_id, "children": list(task.children), "may_cancel": task.may_cancel,
            "reason": task.reason, "args": dict(task.args),
            "result": None if task.result is None else dict(task.result),
            "created_at": isotime(task.created_at, micro=True), "updated_at": isotime(task.updated_at, micro=True),
            "finished_at": isotime(task.finished_at, micro=True)}


@router.get("/os-tasks")
def list_tasks(request: Request, ctx: Ctx, svc: Svc) -> Json:
    """Tasks, newest first; filters ``state``, ``host``, ``resource_id``, ``kind``; paging ``limit``/``marker``."""
    q = request.query_params
    limit, marker = paging(q.get("limit"), q.get("marker"))
    found = svc.tasks.list_tasks(ctx, state=q.get("state") or None, host=q.get("host") or None,
                                 resource_id=q.get("resource_id") or None, kind=q.get("kind") or None,
                                 limit=limit, marker=marker)
    body: Json = {"tasks": [view(task) for task in found]}
    links = next_links(request, svc.config.server.base_url, [task.id for task in found], limit)
    if links:
        body["tasks_links"] = links
    return body


@router.get("/os-tasks/{task_id}")
def show_task(task_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"task": view(svc.tasks.show(ctx, task_id))}
