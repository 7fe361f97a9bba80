"""Keystone v3 resource routes: projects, users, roles, grants, role assignments, app credentials."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from yunstack.api.deps import Ctx, Svc
from yunstack.api.identity import catalog
from yunstack.api.identity import schemas as s
from yunstack.api.identity import views as v
from yunstack.errors import BadRequest
from yunstack.identity.service import DEFAULT_DOMAIN

router = APIRouter(prefix="/identity/v3", tags=["identity"])
Json = dict[str, Any]


def _links(request: Request) -> Json:
    return {"self": str(request.url), "next": None, "previous": None}


def _bool(value: str | None) -> bool | None:
    if value is None:
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise BadRequest("Expected a boolean, got {value!r}.", value=value)


# -- projects ------------------------------------------------------------------------------------

@router.get("/projects")
def list_projects(ctx: Ctx, svc: Svc, request: Request, name: str | None = None,
                  domain_id: str | None = None, enabled: str | None = None) -> Json:
    rows = svc.identity.list_projects(ctx, name=name, domain_id=domain_id, enabled=_bool(enabled))
    base = svc.config.server.base_url
    return {"projects": [v.project(base, p) for p in rows], "links": _links(request)}


@router.post("/projects", status_code=201)
def create_project(body: s.ProjectCreateBody, ctx: Ctx, svc: Svc) -> Json:
    p = body.project
    if p.is_domain:
        raise BadRequest("Projects acting as domains are not supported.")
    if p.parent_id not in (None, p.domain_id or DEFAULT_DOMAIN):
        raise BadRequest("Nested projects are not supported; parent_id must be the domain.")
    made = svc.identity.create_project(ctx, name=p.name, domain_id=p.domain_id or DEFAULT_DOMAIN,
                                       description=p.description or "", enabled=p.enabled,
                                       tags=p.tags)
    return {"project": v.project(svc.config.server.base_url, made)}


@router.get("/projects/{project_id}")
def show_project(project_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"project": v.project(svc.config.server.base_url, svc.identity.get_project(ctx, project_id))}


@router.patch("/projects/{project_id}")
def update_project(project_id: str, body: s.ProjectUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    p = body.project
    made = svc.identity.update_project(ctx, project_id, name=p.name, description=p.description,
                                       enabled=p.enabled, tags=p.tags, page_sharing=p.yunstack_page_sharing)
    return {"project": v.project(svc.config.server.base_url, made)}


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(project_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.delete_project(ctx, project_id)
    return Response(status_code=204)


# -- users ---------------------------------------------------------------------------------------

@router.get("/users")
def list_users(ctx: Ctx, svc: Svc, request: Request, name: str | None = None,
               domain_id: str | None = None) -> Json:
    base = svc.config.server.base_url
    return {"users": [v.user(base, u) for u in svc.identity.list_users(ctx, name=name, domain_id=domain_id)],
            "links": _links(request)}


@router.post("/users", status_code=201)
def create_user(body: s.UserCreateBody, ctx: Ctx, svc: Svc) -> Json:
    u = body.user
    made = svc.identity.create_user(ctx, name=u.name, password=u.password,
                                    domain_id=u.domain_id or DEFAULT_DOMAIN,
                                    default_project_id=u.default_project_id, enabled=u.enabled,
                                    description=u.description or "", email=u.email)
    return {"user": v.user(svc.config.server.base_url, made)}


@router.get("/users/{user_id}")
def show_user(user_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"user": v.user(svc.config.server.base_url, svc.identity.get_user(ctx, user_id))}


@router.patch("/users/{user_id}")
def update_user(user_id: str, body: s.UserUpdateBody, ctx: Ctx, svc: Svc) -> Json:
    u = body.user
    made = svc.identity.update_user(ctx, user_id, name=u.name, password=u.password, enabled=u.enabled,
                                    default_project_id=u.default_project_id,
                                    description=u.description, email=u.email)
    return {"user": v.user(svc.config.server.base_url, made)}


@router.delete("/users/{user_id}", status_code=204)
def delete_user(user_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.delete_user(ctx, user_id)
    return Response(status_code=204)


@router.post("/users/{user_id}/password", status_code=204)
def change_password(user_id: str, body: s.PasswordChangeBody, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.change_password(ctx, user_id, original=body.user.original_password,
                                 new=body.user.password)
    return Response(status_code=204)


@router.get("/users/{user_id}/projects")
def user_projects(user_id: str, ctx: Ctx, svc: Svc, request: Request) -> Json:
    base = svc.config.server.base_url
    return {"projects": [v.project(base, p) for p in svc.identity.user_projects(ctx, user_id)],
            "links": _links(request)}


# -- roles, grants, assignments ------------------------------------------------------------------

@router.get("/roles")
def list_roles(ctx: Ctx, svc: Svc, request: Request, name: str | None = None) -> Json:
    base = svc.config.server.base_url
    return {"roles": [v.role(base, r) for r in svc.identity.list_roles(ctx, name)], "links": _links(request)}


@router.post("/roles", status_code=201)
def create_role(body: s.RoleCreateBody, ctx: Ctx, svc: Svc) -> Json:
    if body.role.domain_id:
        raise BadRequest("Domain-specific roles are not supported.")
    made = svc.identity.create_role(ctx, name=body.role.name, description=body.role.description or "")
    return {"role": v.role(svc.config.server.base_url, made)}


@router.get("/roles/{role_id}")
def show_role(role_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"role": v.role(svc.config.server.base_url, svc.identity.get_role(ctx, role_id))}


@router.delete("/roles/{role_id}", status_code=204)
def delete_role(role_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.delete_role(ctx, role_id)
    return Response(status_code=204)


GRANT = "/projects/{project_id}/users/{user_id}/roles/{role_id}"


@router.put(GRANT, status_code=204)
def grant(project_id: str, user_id: str, role_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.grant(ctx, project_id, user_id, role_id)
    return Response(status_code=204)


@router.head(GRANT, status_code=204)
@router.get(GRANT, status_code=204)
def check_grant(project_id: str, user_id: str, role_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.check_grant(ctx, project_id, user_id, role_id)
    return Response(status_code=204)


@router.delete(GRANT, status_code=204)
def revoke_grant(project_id: str, user_id: str, role_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.revoke_grant(ctx, project_id, user_id, role_id)
    return Response(status_code=204)


@router.get("/projects/{project_id}/users/{user_id}/roles")
def project_user_roles(project_id: str, user_id: str, ctx: Ctx, svc: Svc, request: Request) -> Json:
    base = svc.config.server.base_url
    return {"roles": [v.role(base, r) for r in svc.identity.project_roles(ctx, project_id, user_id)],
            "links": _links(request)}


@router.get("/role_assignments")
def role_assignments(ctx: Ctx, svc: Svc, request: Request) -> Json:
    q = request.query_params
    allowed = {"user.id", "scope.project.id", "role.id", "include_names", "effective",
               "include_subtree", "group.id", "scope.domain.id", "scope.system"}
    unknown = set(q) - allowed
    if unknown:
        raise BadRequest("Unknown filters: {names}.", names=", ".join(sorted(unknown)))
    names = q.get("include_names") is not None and q.get("include_names", "").lower() not in ("0", "false")
    # Groups and domain or system scopes hold no assignments here: the answer is empty, once the
    # policy has let the caller ask.
    elsewhere = bool(q.get("group.id") or q.get("scope.domain.id") or q.get("scope.system"))
    rows = svc.identity.list_assignments(ctx, user_id=q.get("user.id"), project_id=q.get("scope.project.id"),
                                         role_id=q.get("role.id"), elsewhere=elsewhere)
    base = svc.config.server.base_url
    out = []
    domains = {d.id: d.name for d in svc.identity.list_domains(ctx)}

    def domain_ref(domain_id: str) -> Json:
        return {"id": domain_id, "name": domains.get(domain_id, domain_id)}

    users: dict[str, Any] = {}
    projects: dict[str, Any] = {}
    for a in rows:
        item: Json = {
            "role": {"id": a.role_id},
            "user": {"id": a.user_id},
            "scope": {"project": {"id": a.project_id}},
            "links": {"assignment": f"{base}/identity/v3/projects/{a.project_id}/users/{a.user_id}"
                                    f"/roles/{a.role_id}"},
        }
        if names:
            if a.user_id not in users:
                users[a.user_id] = svc.identity.get_user(ctx, a.user_id)
            if a.project_id not in projects:
                projects[a.project_id] = svc.identity.get_project(ctx, a.project_id)
            u, p = users[a.user_id], projects[a.project_id]
            item["role"]["name"] = a.role_name
            item["user"].update(name=u.name, domain=domain_ref(u.domain_id))
            item["scope"]["project"].update(name=p.name, domain=domain_ref(p.domain_id))
        out.append(item)
    return {"role_assignments": out, "links": _links(request)}


# -- application credentials ---------------------------------------------------------------------

@router.post("/users/{user_id}/application_credentials", status_code=201)
def create_app_cred(user_id: str, body: s.AppCredCreateBody, ctx: Ctx, svc: Svc) -> Json:
    c = body.application_credential
    if c.access_rules:
        raise BadRequest("Access rules are not supported.")
    roles = [r.id or r.name or "" for r in c.roles]
    made = svc.identity.create_app_cred(ctx, user_id, name=c.name, secret=c.secret,
                                        description=c.description or "", roles=roles,
                                        expires_at=c.expires_at, unrestricted=c.unrestricted)
    return {"application_credential": v.app_cred(svc.config.server.base_url, made)}


@router.get("/users/{user_id}/application_credentials")
def list_app_creds(user_id: str, ctx: Ctx, svc: Svc, request: Request, name: str | None = None) -> Json:
    base = svc.config.server.base_url
    rows = svc.identity.list_app_creds(ctx, user_id, name)
    return {"application_credentials": [v.app_cred(base, c) for c in rows], "links": _links(request)}


@router.get("/users/{user_id}/application_credentials/{cred_id}")
def show_app_cred(user_id: str, cred_id: str, ctx: Ctx, svc: Svc) -> Json:
    made = svc.identity.get_app_cred(ctx, user_id, cred_id)
    return {"application_credential": v.app_cred(svc.config.server.base_url, made)}


@router.delete("/users/{user_id}/application_credentials/{cred_id}", status_code=204)
def delete_app_cred(user_id: str, cred_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.identity.delete_app_cred(ctx, user_id, cred_id)
    return Response(status_code=204)


router.include_router(catalog.router)
