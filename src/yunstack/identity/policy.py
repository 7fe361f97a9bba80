"""Who may do what: the one place where roles become permissions.

Rules: admin (any project-scoped token with the admin role) acts cloud-wide; member and manager act
inside their own project; reader only reads its own project.  A resource of another project is
reported as absent (404), never as forbidden, so its existence does not leak; an action that only
admins may take is 403.
"""

from __future__ import annotations

from yunstack.errors import Forbidden, NotFound
from yunstack.identity.context import AuthContext


def require_admin(ctx: AuthContext, action: str) -> None:
    if not ctx.is_admin:
        raise Forbidden(action=action)


def require_write(ctx: AuthContext, action: str) -> None:
    """Reader-only tokens may not change anything."""
    if not ctx.can_write:
        raise Forbidden(action=action)


def require_scoped(ctx: AuthContext, action: str) -> str:
    """A project-scoped token; returns its project id."""
    if ctx.project is None:
        raise Forbidden("Action {action} requires a project-scoped token.", action=action)
    return ctx.project.id


def visible(ctx: AuthContext, owner_project_id: str | None, *, kind: str, id: str) -> None:
    """Raise NotFound unless the caller may see a resource owned by ``owner_project_id``."""
    if ctx.is_admin or (owner_project_id is not None and owner_project_id == ctx.project_id):
        return
    raise NotFound(kind=kind, id=id)


def project_filter(ctx: AuthContext, requested: str | None = None, *, all_projects: bool = False) -> str | None:
    """The project a list call is limited to; None means all (admins asking for it only)."""
    if ctx.is_admin and (all_projects or requested):
        return requested
    if ctx.is_admin and not all_projects and requested is None:
        return ctx.project_id
    return ctx.project_id
