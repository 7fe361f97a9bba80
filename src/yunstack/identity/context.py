"""Who is calling: the outcome of validating a token, handed to every service call."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

ADMIN, MANAGER, MEMBER, READER, SERVICE = "admin", "manager", "member", "reader", "service"
DEFAULT_ROLES = (ADMIN, MANAGER, MEMBER, READER, SERVICE)
DELEGABLE_ROLES = frozenset({MANAGER, MEMBER, READER})  # what a manager may see and hand out


@dataclass(frozen=True, kw_only=True)
class Ref:
    """An id with its name (and domain for users and projects), as tokens show them."""

    id: str
    name: str
    domain_id: str | None = None
    domain_name: str | None = None


@dataclass(frozen=True, kw_only=True)
class AuthContext:
    """A validated token: the user, its scope, its roles and the token's own facts."""

    user: Ref
    project: Ref | None
    roles: tuple[Ref, ...]
    methods: tuple[str, ...]
    audit_ids: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    app_cred_id: str | None = None
    app_cred_name: str | None = None
    # A restricted credential's tokens may not manage application credentials (Keystone's rule).
    app_cred_unrestricted: bool = False
    token: str = field(default="", repr=False)

    @property
    def role_names(self) -> frozenset[str]:
        return frozenset(r.name for r in self.roles)

    @property
    def is_admin(self) -> bool:
        """Admin is cloud-wide: any project-scoped token carrying the admin role."""
        return ADMIN in self.role_names

    @property
    def can_write(self) -> bool:
        return bool(self.role_names & {ADMIN, "manager", MEMBER})

    @property
    def project_id(self) -> str | None:
        return self.project.id if self.project else None


def system_context(project_id: str) -> AuthContext:
    """The identity the control plane's own calls run with (an agent's report, a step's follow-up):
    admin, acting for ``project_id``."""
    now = datetime.now(UTC)
    return AuthContext(user=Ref(id="yunstack-agent", name="yunstack-agent"),
                       project=Ref(id=project_id, name=project_id), roles=(Ref(id="admin", name="admin"),),
                       methods=("internal",), audit_ids=("internal",), issued_at=now, expires_at=now)
