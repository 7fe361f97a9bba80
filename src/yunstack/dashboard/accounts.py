"""The admin pages for flavors (create, delete), projects with their quotas, users and roles
(create a project or a user, grant a role)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from yunstack.client.accounts import (
    create_flavor,
    create_project,
    create_user,
    delete_flavor,
    grant_role,
    list_flavors,
    list_grants,
    list_projects,
    list_roles,
    list_users,
    quotas,
    set_quotas,
)
from yunstack.dashboard.admin import admin_change, admin_show
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import Form, number

FLAVORS = "/admin/flavors"
PROJECTS = "/admin/projects"
UNLIMITED = 1 << 31  # a quota's largest value (Nova's is a 32-bit integer); -1 means no limit


# -- flavors --------------------------------------------------------------------------------------

async def flavors(request: Request) -> Response:
    return await admin_show(request, "admin_flavors.html", "flavors",
                            lambda s: {"flavors": list_flavors(s.client)}, {"flavors": []})


async def create_flavor_post(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        name = form.get("name", "").strip()
        if not name:
            raise ValueError("A flavor needs a name.")
        vcpus = number(form, "vcpus", "vCPUs", 1, 1024)
        ram = number(form, "ram", "RAM (MiB)", 1, 1 << 24)
        disk = number(form, "disk", "Disk (GiB)", 0, 1 << 16)
        flavor_id = create_flavor(session.client, name=name, vcpus=vcpus, ram_mib=ram, disk_gb=disk,
                                  public=form.get("public") == "on")
        return f"Created the flavor {name} ({flavor_id})."

    return await admin_change(request, FLAVORS, act)


async def delete_flavor_post(request: Request) -> Response:
    flavor_id = request.path_params["flavor_id"]

    def act(session: Session, form: Form) -> str:
        delete_flavor(session.client, flavor_id)
        return f"Deleted the flavor {flavor_id}; servers of it keep their size."

    return await admin_change(request, FLAVORS, act)


# -- projects, users, roles -----------------------------------------------------------------------

def _accounts(session: Session) -> dict[str, Any]:
    client = session.client
    projects, users, roles = list_projects(client), list_users(client), list_roles(client)
    names = {u.id: u.name for u in users}
    role_names = {r.id: r.name for r in roles}
    members: dict[str, list[str]] = {}
    for g in list_grants(client):
        members.setdefault(g.project_id, []).append(f"{names.get(g.user_id, g.user_id)} "
                                                    f"({role_names.get(g.role_id, g.role_id)})")
    # "projects" is the base page's (the switcher's: the admin's own); these are the cloud's
    return {"all_projects": projects, "users": users, "roles": roles,
            "members": {p: sorted(m) for p, m in members.items()},
            "project_names": {p.id: p.name for p in projects}}


async def projects(request: Request) -> Response:
    return await admin_show(request, "admin_projects.html", "projects", _accounts,
                            {"all_projects": [], "users": [], "roles": [], "members": {}, "project_names": {}})


async def create_project_post(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        name = form.get("name", "").strip()
        if not name:
            raise ValueError("A project needs a name.")
        create_project(session.client, name, form.get("description", "").strip())
        return f"Created the project {name}."

    return await admin_change(request, PROJECTS, act)


async def create_user_post(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        name, password = form.get("name", "").strip(), form.get("password", "")
        if not name or not password:
            raise ValueError("A user needs a name and a password.")
        project_id, role_id = form.get("project_id", ""), form.get("role_id", "")
        user_id = create_user(session.client, name, password, project_id=project_id, email=form.get("email", ""))
        if project_id and role_id:
            grant_role(session.client, project_id, user_id, role_id)
            return f"Created the user {name} with a role on the chosen project."
        return f"Created the user {name}."

    return await admin_change(request, PROJECTS, act)


async def grant_post(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        project_id, user_id, role_id = form.get("project_id", ""), form.get("user_id", ""), form.get("role_id", "")
        if not (project_id and user_id and role_id):
            raise ValueError("Choose a project, a user and a role.")
        grant_role(session.client, project_id, user_id, role_id)
        return "Granted the role."

    return await admin_change(request, PROJECTS, act)


# -- a project's quotas ---------------------------------------------------------------------------

def _quota_path(project_id: str) -> str:
    return f"{PROJECTS}/{quote(project_id, safe='')}/quotas"


async def quotas_page(request: Request) -> Response:
    project_id = request.path_params["project_id"]

    def load(session: Session) -> dict[str, Any]:
        named = {p.id: p.name for p in list_projects(session.client)}
        return {"quotas": quotas(session.client, project_id), "project_id": project_id,
                "project_name": named.get(project_id, project_id)}

    return await admin_show(request, "admin_quotas.html", "projects", load,
                            {"quotas": {}, "project_id": project_id, "project_name": project_id})


async def quotas_post(request: Request) -> Response:
    project_id = request.path_params["project_id"]

    def act(session: Session, form: Form) -> str:
        known = quotas(session.client, project_id)
        values = {key: number(form, key, key.replace("_", " ").capitalize(), -1, UNLIMITED)
                  for key in known if key in form}
        changed = {k: v for k, v in values.items() if v != known[k]}
        if changed:
            set_quotas(session.client, project_id, changed)
        return ("Changed " + ", ".join(f"{k} to {v}" for k, v in sorted(changed.items())) + ".") if changed \
            else "Nothing changed."

    return await admin_change(request, lambda form: _quota_path(project_id), act)
