"""Identity entities as the service hands them out: plain frozen data, no database session behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Domain:
    id: str
    name: str
    description: str
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class Project:
    id: str
    name: str
    domain_id: str
    description: str
    enabled: bool
    tags: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class User:
    id: str
    name: str
    domain_id: str
    enabled: bool
    default_project_id: str | None
    description: str
    email: str | None


@dataclass(frozen=True, kw_only=True)
class Role:
    id: str
    name: str
    description: str


@dataclass(frozen=True, kw_only=True)
class Assignment:
    user_id: str
    project_id: str
    role_id: str
    role_name: str


@dataclass(frozen=True, kw_only=True)
class AppCredential:
    id: str
    name: str
    user_id: str
    project_id: str
    description: str
    roles: tuple[Role, ...]
    expires_at: datetime | None
    unrestricted: bool
    secret: str | None = None  # only set on the create response, never stored in clear


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    id: str
    interface: str
    region: str
    url: str
    service_id: str = ""
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class Service:
    """A catalog service as ``/v3/services`` shows it (the token catalog uses ``CatalogService``)."""

    id: str
    type: str
    name: str
    description: str
    enabled: bool


@dataclass(frozen=True, kw_only=True)
class CatalogService:
    id: str
    type: str
    name: str
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    """What the first start made; the admin password is only known on the run that generated it."""

    admin_project_id: str
    admin_password: str | None
    demo_password: str | None
