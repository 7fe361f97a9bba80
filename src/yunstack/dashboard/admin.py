"""The admin pages: compute hosts (enable, disable, drain), a host's servers (live migration,
evacuation), the migrations and the running operations.

Only a token with the ``admin`` role sees them: anyone else gets a 403 page before any API call
(the API would refuse those calls anyway; this keeps a member from even seeing the page's frame).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from yunstack.client import ApiError
from yunstack.client.admin import (
    evacuate,
    list_hosts,
    list_migrations,
    list_tasks,
    live_migrate,
    servers_on,
    set_host_enabled,
    start_drain,
)
from yunstack.client.servers import TRANSITIONAL
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import Form, _dashboard, _ended, _session, change, show

HOSTS = "/admin/hosts"
ADMIN_ONLY = "This page is for administrators: your token in this project has no admin role."
OPERATIONS = 100  # the newest tasks the operations page shows
# Migration statuses that end by themselves: the list looks again every 2 s while one is there.
MOVING = frozenset({"queued", "accepted", "pre-migrating", "preparing", "running", "post-migrating",
                    "migrating"})


def _refused(request: Request) -> Response | None:
    """The response for anyone who is not signed in as an admin, else None."""
    session = _session(request)
    if session is None:
        return _ended(request)
    if not session.scope.is_admin:
        return _dashboard(request).error(403, ADMIN_ONLY)
    return None


async def admin_show(request: Request, template: str, section: str, load: Callable[[Session], dict[str, Any]],
                     empty: dict[str, Any]) -> Response:
    """``views.show`` for an admin page (``section``: which one the admin tabs mark)."""
    refused = _refused(request)
    if refused is not None:
        return refused
    return await show(request, template, "admin", lambda s: {**load(s), "section": section},
                      {**empty, "section": section})


async def admin_change(request: Request, back: str | Callable[[Form], str],
                       fn: Callable[[Session, Form], str | Response]) -> Response:
    """``views.change`` for an admin form: a non-admin is refused before the form is even read."""
    refused = _refused(request)
    if refused is not None:
        return refused
    return await change(request, back, fn)


def host_path(host: str) -> str:
    return f"{HOSTS}/{quote(host, safe='')}"


# -- hosts ----------------------------------------------------------------------------------------

async def hosts(request: Request) -> Response:
    return await admin_show(request, "admin_hosts.html", "hosts", lambda s: {"hosts": list_hosts(s.client)},
                            {"hosts": []})


async def enable(request: Request) -> Response:
    host = request.path_params["host"]

    def act(session: Session, form: Form) -> str:
        set_host_enabled(session.client, host, True)
        return f"Enabled {host}: the scheduler places servers on it again."

    return await admin_change(request, HOSTS, act)


async def disable(request: Request) -> Response:
    host = request.path_params["host"]

    def act(session: Session, form: Form) -> str:
        reason = form.get("reason", "").strip()
        set_host_enabled(session.client, host, False, reason)
        return f"Disabled {host}" + (f" ({reason})" if reason else "") + ": the scheduler places nothing new on it."

    return await admin_change(request, HOSTS, act)


async def drain(request: Request) -> Response:
    host = request.path_params["host"]

    def act(session: Session, form: Form) -> str:
        reason = form.get("reason", "").strip() or "draining for maintenance (dashboard)"
        results = start_drain(session.client, host, reason)
        queued = sum(r.result == "queued" for r in results)
        left = [f"{r.name}: {r.result}, {r.why}" for r in results if r.result != "queued"]
        return (f"Disabled {host} and queued {queued} live migration(s) off it."
                + (" Not moved: " + "; ".join(left) + "." if left else ""))

    return await admin_change(request, lambda form: host_path(host), act)


# -- a host's servers: live migration and evacuation -----------------------------------------------

def _host_load(host: str) -> Callable[[Session], dict[str, Any]]:
    def load(session: Session) -> dict[str, Any]:
        everyone = list_hosts(session.client)
        found = [h for h in everyone if h.name == host]
        if not found:
            raise ApiError(404, f"There is no compute host named {host}.")
        servers = servers_on(session.client, host)
        return {"host": found[0], "servers": servers,
                "targets": [h.name for h in everyone if h.name != host and h.up and h.enabled],
                "busy": any(s.status in TRANSITIONAL or s.task_state for s in servers)}

    return load


async def host_page(request: Request) -> Response:
    return await admin_show(request, "admin_host.html", "hosts", _host_load(request.path_params["host"]),
                            {"host": None, "servers": [], "targets": [], "busy": False})


def _back(form: Form) -> str:
    return host_path(form.get("back_host", "")) if form.get("back_host") else HOSTS


async def migrate(request: Request) -> Response:
    server_id = request.path_params["server_id"]

    def act(session: Session, form: Form) -> str:
        target = form.get("host", "").strip()
        live_migrate(session.client, server_id, target or None)
        return f"Live-migrating the server to {target or 'a host the scheduler chooses'}."

    return await admin_change(request, _back, act)


async def evacuate_server(request: Request) -> Response:
    server_id = request.path_params["server_id"]

    def act(session: Session, form: Form) -> str:
        target = form.get("host", "").strip()
        evacuate(session.client, server_id, target or None)
        return f"Evacuating the server: rebuilding it on {target or 'a host the scheduler chooses'}."

    return await admin_change(request, _back, act)


# -- migrations -----------------------------------------------------------------------------------

def _migrations(session: Session) -> dict[str, Any]:
    found = list_migrations(session.client)
    names = {s.id: s.name for s in servers_on(session.client)} if found else {}
    return {"migrations": found, "names": names, "busy": any(m.status in MOVING for m in found)}


async def migrations(request: Request) -> Response:
    return await admin_show(request, "admin_migrations.html", "migrations", _migrations,
                            {"migrations": [], "names": {}, "busy": False})


# -- operations -----------------------------------------------------------------------------------

def _operations(session: Session) -> dict[str, Any]:
    found = list_tasks(session.client, limit=OPERATIONS)
    return {"running": [x for x in found if x.active], "finished": [x for x in found if not x.active]}


async def operations(request: Request) -> Response:
    return await admin_show(request, "admin_operations.html", "operations", _operations,
                            {"running": [], "finished": []})
