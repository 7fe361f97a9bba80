"""Identity use cases: domains, projects, users, roles, assignments, application credentials, bootstrap.

Every method takes the caller's ``AuthContext`` and applies ``policy`` before touching anything.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import identity as t
from yunstack.errors import AuthenticationFailed, BadRequest, Conflict, Forbidden, NotFound
from yunstack.identity import policy
from yunstack.identity.auth import AuthService
from yunstack.identity.catalog import CatalogAdmin
from yunstack.identity.context import (
    ADMIN,
    DEFAULT_ROLES,
    DELEGABLE_ROLES,
    MANAGER,
    MEMBER,
    AuthContext,
)
from yunstack.identity.models import (
    AppCredential,
    Assignment,
    Bootstrap,
    Domain,
    Project,
    Role,
    User,
)
from yunstack.identity.passwords import Hasher
from yunstack.types import new_id

DEFAULT_DOMAIN = "default"
PAGE_SHARING = "yunstack_page_sharing"  # project option: False opts its servers out of KSM

def _domain(row: t.Domain) -> Domain:
    return Domain(id=row.id, name=row.name, description=row.description, enabled=row.enabled)


def _project(row: t.Project) -> Project:
    return Project(id=row.id, name=row.name, domain_id=row.domain_id, description=row.description,
                   enabled=row.enabled, tags=tuple(row.tags or ()), options=dict(row.options or {}))


def _user(row: t.User) -> User:
    return User(id=row.id, name=row.name, domain_id=row.domain_id, enabled=row.enabled,
                default_project_id=row.default_project_id, description=row.description,
                email=row.email)


def _role(row: t.Role) -> Role:
    return Role(id=row.id, name=row.name, description=row.description)


def _app_cred(row: t.ApplicationCredential, secret: str | None = None) -> AppCredential:
    return AppCredential(
        id=row.id, name=row.name, user_id=row.user_id, project_id=row.project_id,
        description=row.description,
        roles=tuple(Role(id=r["id"], name=r["name"], description="") for r in row.roles),
        expires_at=row.expires_at, unrestricted=row.unrestricted, secret=secret,
    )


@contextmanager
def _unique(taken: Conflict) -> Iterator[None]:
    """Turn a UNIQUE violation into ``taken``.  The check before each insert answers the common
    case with a clear message; two concurrent creates of one name both pass it, and the database
    constraint decides: exactly one commits, the other gets the same 409, never a 500."""
    try:
        yield
    except IntegrityError as exc:
        raise taken from exc


def _unrestricted(ctx: AuthContext) -> None:
    """A token from a restricted application credential may not create or delete credentials:
    otherwise a leaked credential could mint itself a longer-lived successor."""
    if ctx.app_cred_id is not None and not ctx.app_cred_unrestricted:
        raise Forbidden("You are not authorized to perform the requested action: Using method "
                        "'application_credential' is not allowed for managing additional "
                        "application credentials.")


class IdentityService:
    def __init__(self, db: sessionmaker[Session], auth: AuthService, hasher: Hasher) -> None:
        self._db = db
        self.auth = auth
        self._hasher = hasher
        self.catalog = CatalogAdmin(db, auth)

    # -- domains ---------------------------------------------------------------------------------

    def list_domains(self, ctx: AuthContext, name: str | None = None) -> list[Domain]:
        policy.require_admin(ctx, "identity:list_domains")
        with self._db() as s:
            q = select(t.Domain).order_by(t.Domain.name)
            if name is not None:
                q = q.where(t.Domain.name == name)
            return [_domain(d) for d in s.scalars(q)]

    def get_domain(self, ctx: AuthContext, domain_id: str) -> Domain:
        # Keystone: admin, or the domain of the token's project.  Decided on the id alone, so a
        # non-admin learns nothing about which other domains exist.
        if not ctx.is_admin and (ctx.project is None or ctx.project.domain_id != domain_id):
            raise Forbidden(action="identity:get_domain")
        with self._db() as s:
            row = s.get(t.Domain, domain_id)
            if row is None:
                raise NotFound(kind="domain", id=domain_id)
            return _domain(row)

    def create_domain(self, ctx: AuthContext, *, name: str, description: str = "",
                      enabled: bool = True) -> Domain:
        policy.require_admin(ctx, "identity:create_domain")
        taken = Conflict("Domain {name} already exists.", name=name)
        with _unique(taken), self._db.begin() as s:
            if s.scalar(select(t.Domain).where(t.Domain.name == name)):
                raise taken
            row = t.Domain(id=new_id(), name=name, description=description, enabled=enabled)
            s.add(row)
            s.flush()
            return _domain(row)

    def update_domain(self, ctx: AuthContext, domain_id: str, *, name: str | None = None,
                      description: str | None = None, enabled: bool | None = None) -> Domain:
        policy.require_admin(ctx, "identity:update_domain")
        with _unique(Conflict("Domain {name} already exists.", name=name)), self._db.begin() as s:
            row = s.get(t.Domain, domain_id)
            if row is None:
                raise NotFound(kind="domain", id=domain_id)
            if name is not None and name != row.name:
                if s.scalar(select(t.Domain).where(t.Domain.name == name)):
                    raise Conflict("Domain {name} already exists.", name=name)
                row.name = name
            if description is not None:
                row.description = description
            if enabled is not None:
                if domain_id == DEFAULT_DOMAIN and not enabled:
                    raise Forbidden("The default domain cannot be disabled.")
                row.enabled = enabled
            result = _domain(row)
        if enabled is False:
            self.auth.forget()  # validation checks the domains; cached contexts must not outlive this
        return result

    def user_domains(self, ctx: AuthContext) -> list[Domain]:
        """Domains the caller holds a role on (``GET /v3/auth/domains``).  Roles are only ever
        granted on projects here, so, as in Keystone for such a user, there are none."""
        return []

    # -- projects --------------------------------------------------------------------------------

    def _project_row(self, s: Session, ctx: AuthContext, project_id: str) -> t.Project:
        row = s.get(t.Project, project_id)
        if row is None:
            raise NotFound(kind="project", id=project_id)
        policy.visible(ctx, row.id, kind="project", id=project_id)
        return row

    def list_projects(self, ctx: AuthContext, *, name: str | None = None, domain_id: str | None = None,
                      enabled: bool | None = None) -> list[Project]:
        # Keystone's default: only admins list projects; everyone else asks for their own with
        # GET /v3/auth/projects or /v3/users/{self}/projects (user_projects below).
        policy.require_admin(ctx, "identity:list_projects")
        with self._db() as s:
            q = select(t.Project).order_by(t.Project.name)
            if name is not None:
                q = q.where(t.Project.name == name)
            if domain_id is not None:
                q = q.where(t.Project.domain_id == domain_id)
            if enabled is not None:
                q = q.where(t.Project.enabled.is_(enabled))
            return [_project(p) for p in s.scalars(q)]

    def get_project(self, ctx: AuthContext, project_id: str) -> Project:
        with self._db() as s:
            return _project(self._project_row(s, ctx, project_id))

    def create_project(self, ctx: AuthContext, *, name: str, domain_id: str = DEFAULT_DOMAIN,
                       description: str = "", enabled: bool = True,
                       tags: Sequence[str] = ()) -> Project:
        policy.require_admin(ctx, "identity:create_project")
        taken = Conflict("Project {name} already exists in domain {domain}.", name=name,
                         domain=domain_id)
        with _unique(taken), self._db.begin() as s:
            if s.get(t.Domain, domain_id) is None:
                raise NotFound(kind="domain", id=domain_id)
            if s.scalar(select(t.Project).where(t.Project.name == name,
                                                t.Project.domain_id == domain_id)):
                raise taken
            row = t.Project(id=new_id(), name=name, domain_id=domain_id, description=description,
                            enabled=enabled, tags=list(tags), options={})
            s.add(row)
            s.flush()
            return _project(row)

    def update_project(self, ctx: AuthContext, project_id: str, *, name: str | None = None,
                       description: str | None = None, enabled: bool | None = None,
                       tags: Sequence[str] | None = None, page_sharing: bool | None = None) -> Project:
        with _unique(Conflict("Project {name} already exists.", name=name)), self._db.begin() as s:
            row = self._project_row(s, ctx, project_id)
            policy.require_admin(ctx, "identity:update_project")
            if name is not None and name != row.name:
                if s.scalar(select(t.Project).where(t.Project.name == name,
                                                    t.Project.domain_id == row.domain_id)):
                    raise Conflict("Project {name} already exists.", name=name)
                row.name = name
            if description is not None:
                row.description = description
            if tags is not None:
                row.tags = list(tags)
            if enabled is not None:
                row.enabled = enabled
            if page_sharing is not None:
                row.options = {**(row.options or {}), PAGE_SHARING: page_sharing}
            result = _project(row)
        if enabled is False:
            self.auth.revoke(project_id=project_id)
        return result

    def delete_project(self, ctx: AuthContext, project_id: str) -> None:
        with self._db.begin() as s:
            row = self._project_row(s, ctx, project_id)
            policy.require_admin(ctx, "identity:delete_project")
            if ctx.project_id == project_id:
                raise Forbidden("You cannot delete the project your token is scoped to.")
            s.execute(delete(t.RoleAssignment).where(t.RoleAssignment.project_id == project_id))
            s.execute(delete(t.ApplicationCredential)
                      .where(t.ApplicationCredential.project_id == project_id))
            s.delete(row)
            self.auth.revoke(project_id=project_id, session=s)

    def user_projects(self, ctx: AuthContext, user_id: str) -> list[Project]:
        """Projects where the user has a role (for ``/v3/auth/projects`` and ``/users/{id}/projects``)."""
        if user_id != ctx.user.id:
            policy.require_admin(ctx, "identity:list_user_projects")
        with self._db() as s:
            mine = select(t.RoleAssignment.project_id).where(t.RoleAssignment.user_id == user_id)
            q = select(t.Project).where(t.Project.id.in_(mine)).order_by(t.Project.name)
            return [_project(p) for p in s.scalars(q)]

    # -- users -----------------------------------------------------------------------------------

    def _user_row(self, s: Session, ctx: AuthContext, user_id: str) -> t.User:
        row = s.get(t.User, user_id)
        if row is None or not (ctx.is_admin or row.id == ctx.user.id):
            raise NotFound(kind="user", id=user_id)
        return row

    def list_users(self, ctx: AuthContext, *, name: str | None = None,
                   domain_id: str | None = None) -> list[User]:
        policy.require_admin(ctx, "identity:list_users")
        with self._db() as s:
            q = select(t.User).order_by(t.User.name)
            if name is not None:
                q = q.where(t.User.name == name)
            if domain_id is not None:
                q = q.where(t.User.domain_id == domain_id)
            return [_user(u) for u in s.scalars(q)]

    def get_user(self, ctx: AuthContext, user_id: str) -> User:
        with self._db() as s:
            return _user(self._user_row(s, ctx, user_id))

    def create_user(self, ctx: AuthContext, *, name: str, password: str | None = None,
                    domain_id: str = DEFAULT_DOMAIN, default_project_id: str | None = None,
                    enabled: bool = True, description: str = "", email: str | None = None) -> User:
        policy.require_admin(ctx, "identity:create_user")
        hashed = self._hasher.hash(password) if password is not None else None
        taken = Conflict("User {name} already exists in domain {domain}.", name=name, domain=domain_id)
        with _unique(taken), self._db.begin() as s:
            if s.get(t.Domain, domain_id) is None:
                raise NotFound(kind="domain", id=domain_id)
            if default_project_id is not None and s.get(t.Project, default_project_id) is None:
                raise NotFound(kind="project", id=default_project_id)
            if s.scalar(select(t.User).where(t.User.name == name, t.User.domain_id == domain_id)):
                raise taken
            row = t.User(id=new_id(), name=name, domain_id=domain_id, password_hash=hashed,
                         enabled=enabled, default_project_id=default_project_id,
                         description=description, email=email)
            s.add(row)
            s.flush()
            return _user(row)

    def update_user(self, ctx: AuthContext, user_id: str, *, name: str | None = None,
                    password: str | None = None, enabled: bool | None = None,
                    default_project_id: str | None = None, description: str | None = None,
                    email: str | None = None) -> User:
        policy.require_admin(ctx, "identity:update_user")
        hashed = self._hasher.hash(password) if password is not None else None
        with _unique(Conflict("User {name} already exists.", name=name)), self._db.begin() as s:
            row = self._user_row(s, ctx, user_id)
            if name is not None and name != row.name:
                if s.scalar(select(t.User).where(t.User.name == name,
                                                 t.User.domain_id == row.domain_id)):
                    raise Conflict("User {name} already exists.", name=name)
                row.name = name
            if default_project_id is not None:
                if s.get(t.Project, default_project_id) is None:
                    raise NotFound(kind="project", id=default_project_id)
                row.default_project_id = default_project_id
            if description is not None:
                row.description = description
            if email is not None:
                row.email = email
            if enabled is not None:
                row.enabled = enabled
            if hashed is not None:
                row.password_hash = hashed
            if hashed is not None or enabled is False:
                self.auth.revoke(user_id=user_id, session=s)
            return _user(row)

    def change_password(self, ctx: AuthContext, user_id: str, *, original: str, new: str) -> None:
        """A user changes their own password (``POST /v3/users/{id}/password``)."""
        if user_id != ctx.user.id:
            raise NotFound(kind="user", id=user_id)
        with self._db.begin() as s:
            row = s.get(t.User, user_id)
            if row is None or not self._hasher.verify(row.password_hash, original):
                raise AuthenticationFailed()
            row.password_hash = self._hasher.hash(new)
            self.auth.revoke(user_id=user_id, session=s)

    def delete_user(self, ctx: AuthContext, user_id: str) -> None:
        policy.require_admin(ctx, "identity:delete_user")
        with self._db.begin() as s:
            row = self._user_row(s, ctx, user_id)
            s.execute(delete(t.RoleAssignment).where(t.RoleAssignment.user_id == user_id))
            s.execute(delete(t.ApplicationCredential).where(t.ApplicationCredential.user_id == user_id))
            s.delete(row)
            self.auth.revoke(user_id=user_id, session=s)

    # -- roles and assignments -------------------------------------------------------------------

    def list_roles(self, ctx: AuthContext, name: str | None = None) -> list[Role]:
        # Keystone lets a domain-scoped manager list roles too; our tokens are project-scoped.
        policy.require_admin(ctx, "identity:list_roles")
        with self._db() as s:
            q = select(t.Role).order_by(t.Role.name)
            if name is not None:
                q = q.where(t.Role.name == name)
            return [_role(r) for r in s.scalars(q)]

    def get_role(self, ctx: AuthContext, role_id: str) -> Role:
        with self._db() as s:
            row = s.get(t.Role, role_id)
            if row is None:
                if not ctx.is_admin:
                    raise Forbidden(action="identity:get_role")
                raise NotFound(kind="role", id=role_id)
            # Keystone: a manager may look at the roles a manager may hand out, admins at any.
            if not (ctx.is_admin or (MANAGER in ctx.role_names and row.name in DELEGABLE_ROLES)):
                raise Forbidden(action="identity:get_role")
            return _role(row)

    def create_role(self, ctx: AuthContext, *, name: str, description: str = "") -> Role:
        policy.require_admin(ctx, "identity:create_role")
        taken = Conflict("Role {name} already exists.", name=name)
        with _unique(taken), self._db.begin() as s:
            if s.scalar(select(t.Role).where(t.Role.name == name)):
                raise taken
            row = t.Role(id=new_id(), name=name, description=description)
            s.add(row)
            s.flush()
            return _role(row)

    def delete_role(self, ctx: AuthContext, role_id: str) -> None:
        policy.require_admin(ctx, "identity:delete_role")
        with self._db.begin() as s:
            row = s.get(t.Role, role_id)
            if row is None:
                raise NotFound(kind="role", id=role_id)
            s.delete(row)
        self.auth.forget()

    def _assignment_targets(self, s: Session, project_id: str, user_id: str,
                            role_id: str) -> None:
        if s.get(t.Project, project_id) is None:
            raise NotFound(kind="project", id=project_id)
        if s.get(t.User, user_id) is None:
            raise NotFound(kind="user", id=user_id)
        if s.get(t.Role, role_id) is None:
            raise NotFound(kind="role", id=role_id)

    def grant(self, ctx: AuthContext, project_id: str, user_id: str, role_id: str) -> None:
        policy.require_admin(ctx, "identity:create_grant")
        with self._db.begin() as s:
            self._assignment_targets(s, project_id, user_id, role_id)
            if s.get(t.RoleAssignment, (user_id, project_id, role_id)) is None:
                s.add(t.RoleAssignment(user_id=user_id, project_id=project_id, role_id=role_id))
        self.auth.forget()

    def check_grant(self, ctx: AuthContext, project_id: str, user_id: str, role_id: str) -> None:
        policy.require_admin(ctx, "identity:check_grant")
        with self._db() as s:
            self._assignment_targets(s, project_id, user_id, role_id)
            if s.get(t.RoleAssignment, (user_id, project_id, role_id)) is None:
                raise NotFound(kind="role assignment", id=f"{user_id}/{project_id}/{role_id}")

    def revoke_grant(self, ctx: AuthContext, project_id: str, user_id: str, role_id: str) -> None:
        policy.require_admin(ctx, "identity:revoke_grant")
        with self._db.begin() as s:
            self._assignment_targets(s, project_id, user_id, role_id)
            row = s.get(t.RoleAssignment, (user_id, project_id, role_id))
            if row is None:
                raise NotFound(kind="role assignment", id=f"{user_id}/{project_id}/{role_id}")
            s.delete(row)
            self.auth.revoke(user_id=user_id, project_id=project_id, session=s)

    def list_assignments(self, ctx: AuthContext, *, user_id: str | None = None,
                         project_id: str | None = None, role_id: str | None = None,
                         elsewhere: bool = False) -> list[Assignment]:
        """Project role assignments; ``elsewhere`` (groups, domain or system scope) has none."""
        policy.require_admin(ctx, "identity:list_role_assignments")
        if elsewhere:
            return []
        with self._db() as s:
            q = (select(t.RoleAssignment, t.Role.name)
                 .join(t.Role, t.Role.id == t.RoleAssignment.role_id)
                 .order_by(t.RoleAssignment.project_id, t.RoleAssignment.user_id, t.Role.name))
            if user_id is not None:
                q = q.where(t.RoleAssignment.user_id == user_id)
            if project_id is not None:
                q = q.where(t.RoleAssignment.project_id == project_id)
            if role_id is not None:
                q = q.where(t.RoleAssignment.role_id == role_id)
            return [Assignment(user_id=a.user_id, project_id=a.project_id, role_id=a.role_id,
                               role_name=name) for a, name in s.execute(q)]

    def project_roles(self, ctx: AuthContext, project_id: str, user_id: str) -> list[Role]:
        policy.require_admin(ctx, "identity:list_grants")
        return [Role(id=a.role_id, name=a.role_name, description="")
                for a in self.list_assignments(ctx, user_id=user_id, project_id=project_id)]

    # -- application credentials -----------------------------------------------------------------

    def _own_user(self, ctx: AuthContext, user_id: str) -> None:
        if user_id != ctx.user.id:
            raise NotFound(kind="user", id=user_id)

    def create_app_cred(self, ctx: AuthContext, user_id: str, *, name: str, secret: str | None,
                        description: str = "", roles: Sequence[str] = (),
                        expires_at: datetime | None = None,
                        unrestricted: bool = False) -> AppCredential:
        """Create a credential for the token's project, with a subset of the token's roles."""
        self._own_user(ctx, user_id)
        project_id = policy.require_scoped(ctx, "identity:create_application_credential")
        _unrestricted(ctx)
        if expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)  # Keystone reads a bare time as UTC
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise BadRequest("expires_at must be in the future.")
        held = {r.id: r for r in ctx.roles} | {r.name: r for r in ctx.roles}
        chosen = [held[r] for r in roles if r in held] if roles else list(ctx.roles)
        if roles and len(chosen) != len(roles):
            raise BadRequest("You can only delegate roles you hold on the project.")
        secret = secret or secrets.token_urlsafe(48)
        taken = Conflict("Application credential {name} already exists.", name=name)
        with _unique(taken), self._db.begin() as s:
            if s.scalar(select(t.ApplicationCredential).where(
                    t.ApplicationCredential.user_id == user_id, t.ApplicationCredential.name == name)):
                raise taken
            row = t.ApplicationCredential(
                id=new_id(), name=name, user_id=user_id, project_id=project_id,
                secret_hash=self._hasher.hash(secret), description=description,
                roles=[{"id": r.id, "name": r.name} for r in chosen], expires_at=expires_at,
                unrestricted=unrestricted,
            )
            s.add(row)
            s.flush()
            return _app_cred(row, secret)

    def list_app_creds(self, ctx: AuthContext, user_id: str, name: str | None = None) -> list[AppCredential]:
        self._own_user(ctx, user_id)
        with self._db() as s:
            q = select(t.ApplicationCredential).where(t.ApplicationCredential.user_id == user_id)
            if name is not None:
                q = q.where(t.ApplicationCredential.name == name)
            return [_app_cred(r) for r in s.scalars(q.order_by(t.ApplicationCredential.name))]

    def get_app_cred(self, ctx: AuthContext, user_id: str, cred_id: str) -> AppCredential:
        self._own_user(ctx, user_id)
        with self._db() as s:
            row = s.get(t.ApplicationCredential, cred_id)
            if row is None or row.user_id != user_id:
                raise NotFound(kind="application credential", id=cred_id)
            return _app_cred(row)

    def delete_app_cred(self, ctx: AuthContext, user_id: str, cred_id: str) -> None:
        self._own_user(ctx, user_id)
        _unrestricted(ctx)
        with self._db.begin() as s:
            row = s.get(t.ApplicationCredential, cred_id)
            if row is None or row.user_id != user_id:
                raise NotFound(kind="application credential", id=cred_id)
            s.delete(row)
            self.auth.revoke(app_cred_id=cred_id, session=s)

    # -- bootstrap -------------------------------------------------------------------------------

    def bootstrap(self, *, base_url: str, region: str, services: Sequence[tuple[str, str, str]],
                  admin_password: str = "") -> Bootstrap:
        """Create what a new cloud needs; on later starts keep everything and refresh the catalog.

        ``services`` lists (type, name, path under the base URL) for every API this process serves.
        """
        with self._db.begin() as s:
            if s.get(t.Domain, DEFAULT_DOMAIN) is None:
                s.add(t.Domain(id=DEFAULT_DOMAIN, name="Default", description="The default domain",
                               enabled=True))
            roles = {r.name: r for r in s.scalars(select(t.Role))}
            for name in DEFAULT_ROLES:
                if name not in roles:
                    roles[name] = t.Role(id=new_id(), name=name, description="")
                    s.add(roles[name])
            s.flush()
            admin_project, admin_pw = self._ensure_user(s, "admin", roles[ADMIN], admin_password)
            _, demo_pw = self._ensure_user(s, "demo", roles[MEMBER], "")
            CatalogAdmin.register(s, base_url.rstrip("/"), region, services)
        self.auth.forget()
        return Bootstrap(admin_project_id=admin_project.id, admin_password=admin_pw,
                         demo_password=demo_pw)

    def _ensure_user(self, s: Session, name: str, role: t.Role,
                     password: str) -> tuple[t.Project, str | None]:
        """A project and a user of the same name with ``role`` on it; the password if we made the user."""
        project = s.scalar(select(t.Project).where(t.Project.name == name,
                                                   t.Project.domain_id == DEFAULT_DOMAIN))
        if project is None:
            project = t.Project(id=new_id(), name=name, domain_id=DEFAULT_DOMAIN,
                                description=f"Bootstrap {name} project", enabled=True, tags=[],
                                options={})
            s.add(project)
        user = s.scalar(select(t.User).where(t.User.name == name, t.User.domain_id == DEFAULT_DOMAIN))
        made: str | None = None
        if user is None:
            made = password or secrets.token_urlsafe(18)
            user = t.User(id=new_id(), name=name, domain_id=DEFAULT_DOMAIN,
                          password_hash=self._hasher.hash(made), enabled=True,
                          default_project_id=project.id, description="", email=None)
            s.add(user)
        s.flush()
        if s.get(t.RoleAssignment, (user.id, project.id, role.id)) is None:
            s.add(t.RoleAssignment(user_id=user.id, project_id=project.id, role_id=role.id))
        return project, made


__all__ = ["DEFAULT_DOMAIN", "PAGE_SHARING", "IdentityService"]
