"""Keystone v3 request bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from yunstack.api.schemas import Strict

Name = Field(min_length=1, max_length=255)


class DomainRef(Strict):
    id: str | None = None
    name: str | None = None


class UserRef(Strict):
    id: str | None = None
    name: str | None = None
    domain: DomainRef | None = None


class PasswordUser(UserRef):
    password: str = Field(max_length=4096)


class PasswordMethod(Strict):
    user: PasswordUser


class TokenMethod(Strict):
    id: str = Field(max_length=4096)


class AppCredMethod(Strict):
    id: str | None = None
    name: str | None = None
    secret: str = Field(max_length=4096)
    user: UserRef | None = None


class Identity(Strict):
    methods: list[str] = Field(min_length=1)
    password: PasswordMethod | None = None
    token: TokenMethod | None = None
    application_credential: AppCredMethod | None = None


class ProjectRef(Strict):
    id: str | None = None
    name: str | None = None
    domain: DomainRef | None = None


class Scope(Strict):
    project: ProjectRef | None = None
    domain: DomainRef | None = None
    system: dict[str, bool] | None = None
    OS_TRUST_trust: dict[str, str] | None = Field(default=None, alias="OS-TRUST:trust")


class Auth(Strict):
    identity: Identity
    scope: Scope | Literal["unscoped"] | None = None


class AuthBody(Strict):
    auth: Auth


class ProjectCreate(Strict):
    name: str = Name
    domain_id: str | None = None
    description: str | None = None
    enabled: bool = True
    is_domain: bool = False
    parent_id: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=80)
    options: dict[str, object] | None = None


class ProjectCreateBody(Strict):
    project: ProjectCreate


class ProjectUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = None
    enabled: bool | None = None
    tags: list[str] | None = None
    options: dict[str, object] | None = None
    # yunstack extension, settable with `openstack project set --property yunstack_page_sharing=false`:
    # opt the project's servers out of cross-VM page sharing (KSM is a side channel).
    yunstack_page_sharing: bool | None = None


class ProjectUpdateBody(Strict):
    project: ProjectUpdate


class UserCreate(Strict):
    name: str = Name
    password: str | None = Field(default=None, max_length=4096)
    domain_id: str | None = None
    default_project_id: str | None = None
    enabled: bool = True
    description: str | None = None
    email: str | None = None
    options: dict[str, object] | None = None


class UserCreateBody(Strict):
    user: UserCreate


class UserUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    password: str | None = Field(default=None, max_length=4096)
    enabled: bool | None = None
    default_project_id: str | None = None
    description: str | None = None
    email: str | None = None
    options: dict[str, object] | None = None


class UserUpdateBody(Strict):
    user: UserUpdate


class PasswordChange(Strict):
    original_password: str = Field(max_length=4096)
    password: str = Field(min_length=1, max_length=4096)


class PasswordChangeBody(Strict):
    user: PasswordChange


class RoleCreate(Strict):
    name: str = Name
    description: str | None = None
    domain_id: str | None = None
    options: dict[str, object] | None = None


class RoleCreateBody(Strict):
    role: RoleCreate


class RoleRef(Strict):
    id: str | None = None
    name: str | None = None


class AppCredCreate(Strict):
    name: str = Name
    secret: str | None = Field(default=None, max_length=4096)
    description: str | None = None
    expires_at: datetime | None = None
    roles: list[RoleRef] = Field(default_factory=list)
    unrestricted: bool = False
    access_rules: list[dict[str, object]] | None = None


class AppCredCreateBody(Strict):
    application_credential: AppCredCreate


class ServiceCreate(Strict):
    type: str = Field(min_length=1, max_length=255)
    name: str | None = Field(default=None, max_length=255)
    description: str | None = None
    enabled: bool = True


class ServiceCreateBody(Strict):
    service: ServiceCreate


class ServiceUpdate(Strict):
    type: str | None = Field(default=None, min_length=1, max_length=255)
    name: str | None = Field(default=None, max_length=255)
    description: str | None = None
    enabled: bool | None = None


class ServiceUpdateBody(Strict):
    service: ServiceUpdate


class EndpointCreate(Strict):
    service_id: str = Field(min_length=1, max_length=64)
    interface: str
    url: str
    # Keystone takes the region as region_id, or as region (the older name) for compatibility.
    region_id: str | None = Field(default=None, min_length=1, max_length=255)
    region: str | None = Field(default=None, min_length=1, max_length=255)
    enabled: bool = True


class EndpointCreateBody(Strict):
    endpoint: EndpointCreate


class EndpointUpdate(Strict):
    service_id: str | None = Field(default=None, min_length=1, max_length=64)
    interface: str | None = None
    url: str | None = None
    region_id: str | None = Field(default=None, min_length=1, max_length=255)
    region: str | None = Field(default=None, min_length=1, max_length=255)
    enabled: bool | None = None


class EndpointUpdateBody(Strict):
    endpoint: EndpointUpdate


class DomainCreate(Strict):
    name: str = Name
    description: str | None = None
    enabled: bool = True
    tags: list[str] | None = None
    options: dict[str, object] | None = None


class DomainCreateBody(Strict):
    domain: DomainCreate


class DomainUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = None
    enabled: bool | None = None
    tags: list[str] | None = None
    options: dict[str, object] | None = None


class DomainUpdateBody(Strict):
    domain: DomainUpdate
