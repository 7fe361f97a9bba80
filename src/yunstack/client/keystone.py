"""Sign-in helpers over Keystone v3: a password token for a user, rescoping, the user's projects.

The dashboard keeps one ``YunClient`` per browser session, holding the token and never the password:
when the token expires the user signs in again.  The session's first token is unscoped; each project
it looks at gets a token rescoped from it, so revoking that first token at sign-out ends them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from yunstack.client.http import YunClient


@dataclass(frozen=True, kw_only=True)
class Scope:
    """Who a token speaks for: its user, its project (if any) and its roles there."""

    user_id: str
    user_name: str
    domain_name: str
    project_id: str | None
    project_name: str | None
    roles: tuple[str, ...]
    expires_at: datetime

    @property
    def reader_only(self) -> bool:
        """True when the token's only role in its project is ``reader`` (it may look, not change)."""
        return set(self.roles) <= {"reader"}

    @property
    def is_admin(self) -> bool:
        """True when the token carries the ``admin`` role (the API's admin is cloud-wide)."""
        return "admin" in self.roles


@dataclass(frozen=True, kw_only=True)
class Project:
    id: str
    name: str


def scope_of(client: YunClient) -> Scope:
    """The scope of ``client``'s current token (from the body Keystone answered with)."""
    body = client.token_body
    user = body.get("user") or {}
    project = body.get("project")
    expires = str(body.get("expires_at") or "")
    return Scope(user_id=str(user.get("id", "")), user_name=str(user.get("name", "")),
                 domain_name=str((user.get("domain") or {}).get("name", "")),
                 project_id=str(project["id"]) if project else None,
                 project_name=str(project["name"]) if project else None,
                 roles=tuple(str(r["name"]) for r in body.get("roles") or ()),
                 expires_at=datetime.fromisoformat(expires.replace("Z", "+00:00")))


def password_sign_in(base_url: str, *, domain: str, user: str, password: str,
                     transport: httpx.BaseTransport | None = None, timeout: float = 30.0) -> YunClient:
    """A client holding an unscoped token for ``user`` of ``domain``; raises ``ApiError`` (401 for a
    wrong name or password).  Keep the token: ``rescope`` it to each project the user works in,
    and revoke it at sign-out (which revokes every token rescoped from it)."""
    client = YunClient(base_url, transport=transport, timeout=timeout)
    try:
        client.issue_token({"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": domain}, "password": password}}}, "scope": "unscoped"})
    except BaseException:
        client.close()
        raise
    return client


def projects(client: YunClient) -> list[Project]:
    """The projects the token's user has a role on, by name."""
    r = client.request("GET", "identity", "/auth/projects")
    body: dict[str, Any] = r.json()
    found = [Project(id=str(p["id"]), name=str(p["name"])) for p in body["projects"] if p.get("enabled", True)]
    return sorted(found, key=lambda p: p.name)


def rescope(client: YunClient, project_id: str, *, source: str | None = None) -> Scope:
    """Trade ``source`` (by default the client's token) for a token scoped to ``project_id``, which
    becomes the client's (Keystone's token method: it expires when ``source`` does, and revoking
    ``source`` revokes it too)."""
    client.issue_token({"identity": {"methods": ["token"], "token": {"id": source or client.token or ""}},
                        "scope": {"project": {"id": project_id}}})
    return scope_of(client)
