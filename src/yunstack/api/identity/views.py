"""Identity entities -> Keystone v3 JSON, exactly as Keystone shapes them."""

from __future__ import annotations

from typing import Any

from yunstack.identity.context import AuthContext
from yunstack.identity.models import (
    AppCredential,
    CatalogService,
    Domain,
    Endpoint,
    Project,
    Role,
    Service,
    User,
)
from yunstack.types import isotime

Json = dict[str, Any]


def version(base: str) -> Json:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.identity-v3+json"}],
    }


def domain(base: str, d: Domain) -> Json:
    return {"id": d.id, "name": d.name, "description": d.description, "enabled": d.enabled,
            "tags": [], "options": {}, "links": {"self": f"{base}/identity/v3/domains/{d.id}"}}


def project(base: str, p: Project) -> Json:
    return {"id": p.id, "name": p.name, "domain_id": p.domain_id, "description": p.description,
            "enabled": p.enabled, "is_domain": False, "parent_id": p.domain_id, "tags": list(p.tags),
            "options": {}, "links": {"self": f"{base}/identity/v3/projects/{p.id}"},
            "yunstack_page_sharing": bool(p.options.get("yunstack_page_sharing", True))}


def user(base: str, u: User) -> Json:
    body: Json = {"id": u.id, "name": u.name, "domain_id": u.domain_id, "enabled": u.enabled,
                  "password_expires_at": None, "options": {},
                  "links": {"self": f"{base}/identity/v3/users/{u.id}"}}
    if u.default_project_id:
        body["default_project_id"] = u.default_project_id
    if u.description:
        body["description"] = u.description
    if u.email:
        body["email"] = u.email
    return body


def role(base: str, r: Role) -> Json:
    return {"id": r.id, "name": r.name, "domain_id": None, "description": r.description or None,
            "options": {}, "links": {"self": f"{base}/identity/v3/roles/{r.id}"}}


def app_cred(base: str, c: AppCredential) -> Json:
    body: Json = {
        "id": c.id, "name": c.name, "description": c.description or None,
        "expires_at": isotime(c.expires_at, micro=True), "project_id": c.project_id,
        "user_id": c.user_id,
        "roles": [{"id": r.id, "name": r.name, "domain_id": None} for r in c.roles],
        "unrestricted": c.unrestricted, "access_rules": [], "system": None,
        "links": {"self": f"{base}/identity/v3/users/{c.user_id}/application_credentials/{c.id}"},
    }
    if c.secret is not None:
        body["secret"] = c.secret
    return body


def service(base: str, s: Service) -> Json:
    return {"id": s.id, "type": s.type, "name": s.name, "description": s.description,
            "enabled": s.enabled, "links": {"self": f"{base}/identity/v3/services/{s.id}"}}


def endpoint(base: str, e: Endpoint) -> Json:
    region = e.region or None
    return {"id": e.id, "service_id": e.service_id, "interface": e.interface, "url": e.url,
            "region": region, "region_id": region, "enabled": e.enabled,
            "links": {"self": f"{base}/identity/v3/endpoints/{e.id}"}}


def region(base: str, region_id: str) -> Json:
    return {"id": region_id, "description": "", "parent_region_id": None,
            "links": {"self": f"{base}/identity/v3/regions/{region_id}"}}


def catalog(services: list[CatalogService]) -> list[Json]:
    return [
        {"id": s.id, "type": s.type, "name": s.name,
         "endpoints": [{"id": e.id, "interface": e.interface, "region": e.region,
                        "region_id": e.region, "url": e.url} for e in s.endpoints]}
        for s in services
    ]


def token(ctx: AuthContext, services: list[CatalogService] | None) -> Json:
    body: Json = {
        "methods": list(ctx.methods),
        "user": {"id": ctx.user.id, "name": ctx.user.name,
                 "domain": {"id": ctx.user.domain_id, "name": ctx.user.domain_name},
                 "password_expires_at": None},
        "audit_ids": list(ctx.audit_ids),
        "expires_at": isotime(ctx.expires_at, micro=True),
        "issued_at": isotime(ctx.issued_at, micro=True),
    }
    if ctx.project is not None:
        body["project"] = {"id": ctx.project.id, "name": ctx.project.name,
                           "domain": {"id": ctx.project.domain_id, "name": ctx.project.domain_name}}
        body["is_domain"] = False
        body["roles"] = [{"id": r.id, "name": r.name} for r in ctx.roles]
        if services is not None:
            body["catalog"] = catalog(services)
    if ctx.app_cred_id is not None:
        body["application_credential"] = {"id": ctx.app_cred_id, "name": ctx.app_cred_name,
                                          "restricted": not ctx.app_cred_unrestricted}
    return body
