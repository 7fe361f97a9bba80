"""Authentication: password, token and application-credential methods, validation, revocation."""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.config import IdentityConfig
from yunstack.db.tables import identity as t
from yunstack.errors import AuthenticationFailed, BadRequest, Forbidden, NotFound, Unauthorized
from yunstack.identity.context import SERVICE, AuthContext, Ref
from yunstack.identity.models import CatalogService, Endpoint
from yunstack.identity.passwords import Hasher
from yunstack.identity.tokens import TokenCodec, TokenPayload


@dataclass(frozen=True, kw_only=True)
class NamedRef:
    """Something named by id, or by name within a domain named by id or name."""

    id: str | None = None
    name: str | None = None
    domain_id: str | None = None
    domain_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class AuthRequest:
    methods: tuple[str, ...]
    user: NamedRef | None = None
    password: str | None = None
    token: str | None = None
    app_cred: NamedRef | None = None
    app_cred_user: NamedRef | None = None
    app_cred_secret: str | None = None
    project: NamedRef | None = None
    unscoped: bool = False


def _audit_id() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")


class AuthService:
    """Issues and validates tokens.  Validation is cached briefly; any revocation clears the cache."""

    def __init__(self, db: sessionmaker[Session], config: IdentityConfig, codec: TokenCodec,
                 hasher: Hasher) -> None:
        self._db = db
        self._config = config
        self._codec = codec
        self._hasher = hasher
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, AuthContext]] = {}
        self._revocations: list[t.RevocationEvent] = []
        self._revocations_loaded = 0.0
        self._catalog: tuple[float, list[CatalogService]] | None = None

    # -- issuing ---------------------------------------------------------------------------------

    def authenticate(self, req: AuthRequest) -> AuthContext:
        if not req.methods:
            raise BadRequest("auth.identity.methods must name at least one method.")
        method = req.methods[0]
        with self._db() as s:
            if method == "password":
                user = self._password_user(s, req)
                ctx = self._issue(s, user, ("password",), req, audit_chain=())
            elif method == "token":
                if not req.token:
                    raise BadRequest("auth.identity.token.id is required.")
                prior = self.validate(req.token)
                if prior.app_cred_id:
                    raise Unauthorized("A token from an application credential cannot be rescoped.")
                rescoping = s.get(t.User, prior.user.id)
                if rescoping is None:
                    raise Unauthorized("The token is invalid.")
                ctx = self._issue(s, rescoping, prior.methods, req, audit_chain=prior.audit_ids[:1],
                                  expires_at=prior.expires_at)
            elif method == "application_credential":
                ctx = self._app_cred_login(s, req)
            else:
                raise Unauthorized("Authentication method {method} is not supported.", method=method)
        return ctx

    def _domain_id(self, s: Session, ref: NamedRef) -> str:
        if ref.domain_id:
            return ref.domain_id
        if ref.domain_name:
            dom = s.scalar(select(t.Domain).where(t.Domain.name == ref.domain_name))
            if dom is not None:
                return dom.id
            return "(no such domain)"
        raise BadRequest("A name needs its domain (domain.id or domain.name).")

    def _find_user(self, s: Session, ref: NamedRef) -> t.User | None:
        if ref.id:
            return s.get(t.User, ref.id)
        if not ref.name:
            raise BadRequest("The user needs an id, or a name and a domain.")
        domain_id = self._domain_id(s, ref)
        return s.scalar(select(t.User).where(t.User.name == ref.name, t.User.domain_id == domain_id))

    def _password_user(self, s: Session, req: AuthRequest) -> t.User:
        if req.user is None or req.password is None:
            raise BadRequest("auth.identity.password.user with a password is required.")
        user = self._find_user(s, req.user)
        ok = self._hasher.verify(user.password_hash if user else None, req.password)
        if user is None or not ok or not user.enabled:
            raise AuthenticationFailed()
        return user

    def _find_project(self, s: Session, ref: NamedRef) -> t.Project | None:
        if ref.id:
            return s.get(t.Project, ref.id)
        if not ref.name:
            raise BadRequest("The scope's project needs an id, or a name and a domain.")
        domain_id = self._domain_id(s, ref)
        return s.scalar(select(t.Project).where(t.Project.name == ref.name,
                                                t.Project.domain_id == domain_id))

    def _roles_on(self, s: Session, user_id: str, project_id: str) -> list[t.Role]:
        q = (select(t.Role).join(t.RoleAssignment, t.RoleAssignment.role_id == t.Role.id)
             .where(t.RoleAssignment.user_id == user_id, t.RoleAssignment.project_id == project_id)
             .order_by(t.Role.name))
        return list(s.scalars(q))

    def _issue(self, s: Session, user: t.User, methods: tuple[str, ...], req: AuthRequest, *,
               audit_chain: tuple[str, ...], expires_at: datetime | None = None) -> AuthContext:
        project: t.Project | None = None
        if req.project is not None:
            project = self._find_project(s, req.project)
            if project is None or not project.enabled or not self._roles_on(s, user.id, project.id):
                # Same answer whether the project is missing or the user has no role on it.
                raise Unauthorized("User {user} has no access to the requested project.", user=user.id)
        elif not req.unscoped and user.default_project_id:
            candidate = s.get(t.Project, user.default_project_id)
            if candidate is not None and candidate.enabled and self._roles_on(s, user.id, candidate.id):
                project = candidate
        now = datetime.now(UTC)
        payload = TokenPayload(
            user_id=user.id,
            methods=methods,
            project_id=project.id if project else None,
            expires_at=self._expiry(now, expires_at),
            audit_ids=(_audit_id(), *audit_chain),
            issued_at=now,
        )
        return self._context(s, payload, self._codec.encode(payload))

    def _expiry(self, now: datetime, cap: datetime | None) -> datetime:
        """When a token issued ``now`` expires: whole seconds, as the token stores it, so that the
        issue response and every later validation show the same ``expires_at``."""
        limit = now + timedelta(seconds=self._config.token_expiration)
        return (min(limit, cap) if cap is not None else limit).replace(microsecond=0)

    def _app_cred_login(self, s: Session, req: AuthRequest) -> AuthContext:
        ref = req.app_cred
        if ref is None or not req.app_cred_secret:
            raise BadRequest("auth.identity.application_credential needs an id (or name and user) "
                             "and a secret.")
        cred: t.ApplicationCredential | None
        if ref.id:
            cred = s.get(t.ApplicationCredential, ref.id)
        else:
            owner = self._find_user(s, req.app_cred_user) if req.app_cred_user else None
            if req.app_cred_user is None:
                raise BadRequest("An application credential named by name needs its user.")
            cred = None if owner is None else s.scalar(
                select(t.ApplicationCredential).where(t.ApplicationCredential.user_id == owner.id,
                                                      t.ApplicationCredential.name == ref.name))
        ok = self._hasher.verify(cred.secret_hash if cred else None, req.app_cred_secret)
        now = datetime.now(UTC)
        if cred is None or not ok or (cred.expires_at is not None and cred.expires_at <= now):
            raise AuthenticationFailed()
        user = s.get(t.User, cred.user_id)
        if user is None or not user.enabled:
            raise AuthenticationFailed()
        payload = TokenPayload(
            user_id=user.id, methods=("application_credential",), project_id=cred.project_id,
            expires_at=self._expiry(now, cred.expires_at), audit_ids=(_audit_id(),),
            app_cred_id=cred.id, issued_at=now,
        )
        return self._context(s, payload, self._codec.encode(payload))

    # -- validating ------------------------------------------------------------------------------

    def cached(self, token: str) -> AuthContext | None:
        """A recently validated token's context, without any I/O; None when it must be validated."""
        hit = self._cache.get(token)
        if hit is None or time.monotonic() - hit[0] >= self._config.auth_cache_seconds:
            return None
        return hit[1] if hit[1].expires_at > datetime.now(UTC) else None

    def validate(self, token: str) -> AuthContext:
        """The context of a valid token; 401 for anything else (bad, expired, revoked, disabled)."""
        now = time.monotonic()
        hit = self.cached(token)
        if hit is not None:
            return hit
        payload = self._codec.decode(token)
        with self._db() as s:
            if self._is_revoked(s, payload):
                raise Unauthorized("The token has been revoked.")
            ctx = self._context(s, payload, token)
        with self._lock:
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[token] = (now, ctx)
        return ctx

    def subject(self, ctx: AuthContext, token: str | None, action: str) -> AuthContext:
        """The X-Subject-Token of ``GET``/``HEAD``/``DELETE /v3/auth/tokens`` as ``ctx`` may see it.

        Keystone's order: a subject that is not a valid token is 404; a valid one that belongs to
        someone else is 403 unless the caller is admin (or, for ``identity:validate_token``, holds
        the service role, as a service validating its users' tokens does).
        """
        if not token:
            raise NotFound("X-Subject-Token header is required.")
        try:
            subject = self.validate(token)
        except Unauthorized as exc:
            raise NotFound("Could not find token: {why}", why=exc.text) from exc
        service = action == "identity:validate_token" and SERVICE in ctx.role_names
        if not (ctx.is_admin or service or subject.user.id == ctx.user.id):
            raise Forbidden(action=action)
        return subject

    def _context(self, s: Session, payload: TokenPayload, token: str) -> AuthContext:
        user = s.get(t.User, payload.user_id)
        if user is None or not user.enabled:
            raise Unauthorized("The token is invalid.")
        user_domain = s.get(t.Domain, user.domain_id)
        if user_domain is not None and not user_domain.enabled:
            raise Unauthorized("The token is invalid.")
        cred: t.ApplicationCredential | None = None
        if payload.app_cred_id is not None:
            cred = s.get(t.ApplicationCredential, payload.app_cred_id)
            if cred is None:
                raise Unauthorized("The token is invalid.")
        project_ref: Ref | None = None
        roles: list[t.Role] = []
        if payload.project_id is not None:
            project = s.get(t.Project, payload.project_id)
            if project is None or not project.enabled:
                raise Unauthorized("The token is invalid.")
            pdom = s.get(t.Domain, project.domain_id)
            if pdom is not None and not pdom.enabled:
                raise Unauthorized("The token is invalid.")
            project_ref = Ref(id=project.id, name=project.name, domain_id=project.domain_id,
                              domain_name=pdom.name if pdom else None)
            roles = self._roles_on(s, user.id, project.id)
            if cred is not None:
                allowed = {r["id"] for r in cred.roles}
                roles = [r for r in roles if r.id in allowed]
            if not roles:
                raise Unauthorized("The token is invalid.")
        return AuthContext(
            user=Ref(id=user.id, name=user.name, domain_id=user.domain_id,
                     domain_name=user_domain.name if user_domain else None),
            project=project_ref,
            roles=tuple(Ref(id=r.id, name=r.name) for r in roles),
            methods=payload.methods,
            audit_ids=payload.audit_ids,
            issued_at=payload.issued_at or datetime.now(UTC),
            expires_at=payload.expires_at,
            app_cred_id=payload.app_cred_id,
            app_cred_name=cred.name if cred is not None else None,
            app_cred_unrestricted=cred.unrestricted if cred is not None else False,
            token=token,
        )

    def _is_revoked(self, s: Session, payload: TokenPayload) -> bool:
        now = time.monotonic()
        # Other processes (another API server on PostgreSQL) revoke too: re-read at most every second.
        if now - self._revocations_loaded > 1.0:
            rows = s.scalars(select(t.RevocationEvent).where(
                t.RevocationEvent.expires_at > datetime.now(UTC))).all()
            self._revocations = list(rows)
            self._revocations_loaded = now
        issued = payload.issued_at or datetime.now(UTC)
        for ev in self._revocations:
            if ev.issued_before < issued:
                continue
            if ev.audit_id is not None and ev.audit_id not in payload.audit_ids:
                continue
            if ev.user_id is not None and ev.user_id != payload.user_id:
                continue
            if ev.project_id is not None and ev.project_id != payload.project_id:
                continue
            if ev.app_cred_id is not None and ev.app_cred_id != payload.app_cred_id:
                continue
            return True
        return False

    # -- revoking --------------------------------------------------------------------------------

    def revoke(self, *, audit_id: str | None = None, user_id: str | None = None,
               project_id: str | None = None, app_cred_id: str | None = None,
               session: Session | None = None) -> None:
        """Record a revocation event; tokens matching every given field and issued before now die."""
        now = datetime.now(UTC)
        event = t.RevocationEvent(
            audit_id=audit_id, user_id=user_id, project_id=project_id, app_cred_id=app_cred_id,
            # Tokens carry their issue time to the microsecond, so a token issued right after this
            # event (a new login after a password or role change) is not caught by it.
            issued_before=now,
            expires_at=now + timedelta(seconds=self._config.token_expiration + 60),
        )
        if session is not None:
            session.add(event)
        else:
            with self._db.begin() as s:
                s.add(event)
                s.execute(delete(t.RevocationEvent).where(t.RevocationEvent.expires_at < now))
        self.forget()

    def revoke_token(self, token: str) -> None:
        ctx = self.validate(token)
        # The first audit id is this token's own; the others name the tokens it was rescoped from.
        self.revoke(audit_id=ctx.audit_ids[0])

    def forget(self) -> None:
        """Drop cached validations and revocations (after any change that could invalidate tokens)."""
        with self._lock:
            self._cache.clear()
            self._revocations_loaded = 0.0
            self._catalog = None

    # -- catalog ---------------------------------------------------------------------------------

    def catalog(self) -> list[CatalogService]:
        now = time.monotonic()
        if self._catalog is not None and now - self._catalog[0] < 5.0:
            return self._catalog[1]
        with self._db() as s:
            services = s.scalars(select(t.Service).where(t.Service.enabled.is_(True))
                                 .order_by(t.Service.type)).all()
            eps = s.scalars(select(t.Endpoint).where(t.Endpoint.enabled.is_(True))
                            .order_by(t.Endpoint.interface)).all()
            result = [
                CatalogService(
                    id=svc.id, type=svc.type, name=svc.name,
                    endpoints=tuple(Endpoint(id=e.id, interface=e.interface, region=e.region, url=e.url)
                                    for e in eps if e.service_id == svc.id),
                )
                for svc in services
            ]
        self._catalog = (now, result)
        return result
