"""The service catalog as Keystone resources: ``/v3/services`` and ``/v3/endpoints``.

Admins manage both; tokens carry the enabled services with their enabled endpoints (``AuthService
.catalog``).  Bootstrap registers the APIs this process serves and, on later starts, only moves their
URLs when the base URL changed (as ``keystone-manage bootstrap`` does), so services and endpoints an
admin added survive restarts.

Policy follows Keystone's defaults: reads are ``admin or system reader``, writes ``admin``.  Tokens
here are project-scoped only, so both come down to the admin role: members and readers get 403.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import identity as t
from yunstack.errors import BadRequest, NotFound
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.identity.models import Endpoint, Service
from yunstack.types import new_id

INTERFACES = ("public", "internal", "admin")
URL = re.compile(r"^[a-zA-Z0-9+.-]+:.+")  # Keystone's url pattern: a scheme, then anything


class Forgets(Protocol):
    """What the catalog needs from the token side: drop the cached token catalog after a change."""

    def forget(self) -> None: ...


def _service(row: t.Service) -> Service:
    return Service(id=row.id, type=row.type, name=row.name, description=row.description or "",
                   enabled=row.enabled)


def _endpoint(row: t.Endpoint) -> Endpoint:
    return Endpoint(id=row.id, interface=row.interface, region=row.region, url=row.url,
                    service_id=row.service_id, enabled=row.enabled)


def _check_interface(interface: str) -> None:
    if interface not in INTERFACES:
        raise BadRequest("Invalid input for field 'interface': {value!r} is not one of "
                         "public, internal, admin.", value=interface)


def _check_url(url: str) -> None:
    if len(url) > 225 or not URL.match(url):
        raise BadRequest("Invalid input for field 'url': {value!r} is not a URL.", value=url[:80])


class CatalogAdmin:
    """Create, read, update and delete catalog services and endpoints."""

    def __init__(self, db: sessionmaker[Session], tokens: Forgets) -> None:
        self._db = db
        self._tokens = tokens

    # -- services --------------------------------------------------------------------------------

    def list_services(self, ctx: AuthContext, *, type: str | None = None,
                      name: str | None = None) -> list[Service]:
        policy.require_admin(ctx, "identity:list_services")
        q = select(t.Service).order_by(t.Service.type, t.Service.name, t.Service.id)
        if type is not None:
            q = q.where(t.Service.type == type)
        if name is not None:
            q = q.where(t.Service.name == name)
        with self._db() as s:
            return [_service(r) for r in s.scalars(q)]

    def _service_row(self, s: Session, service_id: str) -> t.Service:
        row = s.get(t.Service, service_id)
        if row is None:
            raise NotFound(kind="service", id=service_id)
        return row

    def get_service(self, ctx: AuthContext, service_id: str) -> Service:
        policy.require_admin(ctx, "identity:get_service")
        with self._db() as s:
            return _service(self._service_row(s, service_id))

    def create_service(self, ctx: AuthContext, *, type: str, name: str = "", description: str = "",
                       enabled: bool = True) -> Service:
        policy.require_admin(ctx, "identity:create_service")
        with self._db.begin() as s:
            row = t.Service(id=new_id(), type=type, name=name, description=description,
                            enabled=enabled)
            s.add(row)
            s.flush()
            made = _service(row)
        self._tokens.forget()
        return made

    def update_service(self, ctx: AuthContext, service_id: str, *, type: str | None = None,
                       name: str | None = None, description: str | None = None,
                       enabled: bool | None = None) -> Service:
        policy.require_admin(ctx, "identity:update_service")
        with self._db.begin() as s:
            row = self._service_row(s, service_id)
            if type is not None:
                row.type = type
            if name is not None:
                row.name = name
            if description is not None:
                row.description = description
            if enabled is not None:
                row.enabled = enabled
            made = _service(row)
        self._tokens.forget()
        return made

    def delete_service(self, ctx: AuthContext, service_id: str) -> None:
        """Deletes the service's endpoints with it, as Keystone does."""
        policy.require_admin(ctx, "identity:delete_service")
        with self._db.begin() as s:
            row = self._service_row(s, service_id)
            for ep in s.scalars(select(t.Endpoint).where(t.Endpoint.service_id == service_id)):
                s.delete(ep)
            s.delete(row)
        self._tokens.forget()

    # -- endpoints -------------------------------------------------------------------------------

    def list_endpoints(self, ctx: AuthContext, *, interface: str | None = None,
                       service_id: str | None = None, region_id: str | None = None) -> list[Endpoint]:
        policy.require_admin(ctx, "identity:list_endpoints")
        if interface is not None:
            _check_interface(interface)
        q = select(t.Endpoint).order_by(t.Endpoint.service_id, t.Endpoint.interface, t.Endpoint.id)
        if interface is not None:
            q = q.where(t.Endpoint.interface == interface)
        if service_id is not None:
            q = q.where(t.Endpoint.service_id == service_id)
        if region_id is not None:
            q = q.where(t.Endpoint.region == region_id)
        with self._db() as s:
            return [_endpoint(r) for r in s.scalars(q)]

    def _endpoint_row(self, s: Session, endpoint_id: str) -> t.Endpoint:
        row = s.get(t.Endpoint, endpoint_id)
        if row is None:
            raise NotFound(kind="endpoint", id=endpoint_id)
        return row

    def get_endpoint(self, ctx: AuthContext, endpoint_id: str) -> Endpoint:
        policy.require_admin(ctx, "identity:get_endpoint")
        with self._db() as s:
            return _endpoint(self._endpoint_row(s, endpoint_id))

    @staticmethod
    def _require_service(s: Session, service_id: str) -> None:
        # Keystone answers an unknown service_id with 400 (a validation error), not 404.
        if s.get(t.Service, service_id) is None:
            raise BadRequest("Expecting to find endpoint service_id in service table; "
                             "no service {id}.", id=service_id)

    def create_endpoint(self, ctx: AuthContext, *, service_id: str, interface: str, url: str,
                        region: str | None = None, enabled: bool = True) -> Endpoint:
        policy.require_admin(ctx, "identity:create_endpoint")
        _check_interface(interface)
        _check_url(url)
        with self._db.begin() as s:
            self._require_service(s, service_id)
            row = t.Endpoint(id=new_id(), service_id=service_id, interface=interface, url=url,
                             region=region or "", enabled=enabled)
            s.add(row)
            s.flush()
            made = _endpoint(row)
        self._tokens.forget()
        return made

    def update_endpoint(self, ctx: AuthContext, endpoint_id: str, *, service_id: str | None = None,
                        interface: str | None = None, url: str | None = None,
                        region: str | None = None, enabled: bool | None = None) -> Endpoint:
        policy.require_admin(ctx, "identity:update_endpoint")
        if interface is not None:
            _check_interface(interface)
        if url is not None:
            _check_url(url)
        with self._db.begin() as s:
            row = self._endpoint_row(s, endpoint_id)
            if service_id is not None:
                self._require_service(s, service_id)
                row.service_id = service_id
            if interface is not None:
                row.interface = interface
            if url is not None:
                row.url = url
            if region is not None:
                row.region = region
            if enabled is not None:
                row.enabled = enabled
            made = _endpoint(row)
        self._tokens.forget()
        return made

    def delete_endpoint(self, ctx: AuthContext, endpoint_id: str) -> None:
        policy.require_admin(ctx, "identity:delete_endpoint")
        with self._db.begin() as s:
            s.delete(self._endpoint_row(s, endpoint_id))
        self._tokens.forget()

    # -- regions ---------------------------------------------------------------------------------

    def list_regions(self, ctx: AuthContext) -> list[str]:
        """Region ids: the regions endpoints name.  Regions have no table of their own; an endpoint
        created in a new region brings it into being (Keystone's compatibility rule for ``region``).
        Reading them is open to every token, as in Keystone."""
        with self._db() as s:
            q = select(t.Endpoint.region).where(t.Endpoint.region != "").distinct()
            return sorted(s.scalars(q))

    def get_region(self, ctx: AuthContext, region_id: str) -> str:
        if region_id not in self.list_regions(ctx):
            raise NotFound(kind="region", id=region_id)
        return region_id

    # -- bootstrap -------------------------------------------------------------------------------

    @staticmethod
    def register(s: Session, base_url: str, region: str,
                 services: Sequence[tuple[str, str, str]]) -> None:
        """Make sure each (type, name, path) this process serves has a service and a public,
        internal and admin endpoint at ``base_url + path`` in ``region``.

        Like ``keystone-manage bootstrap``: a missing service or endpoint is created, an endpoint
        whose URL differs is moved, and nothing else is touched.
        """
        for kind, name, path in services:
            svc = s.scalar(select(t.Service).where(t.Service.type == kind)
                           .order_by(t.Service.name != name, t.Service.id).limit(1))
            if svc is None:
                svc = t.Service(id=new_id(), type=kind, name=name, description="", enabled=True)
                s.add(svc)
                s.flush()
            url = base_url + path
            found = {e.interface: e for e in s.scalars(
                select(t.Endpoint).where(t.Endpoint.service_id == svc.id, t.Endpoint.region == region))}
            for interface in INTERFACES:
                ep = found.get(interface)
                if ep is None:
                    s.add(t.Endpoint(id=new_id(), service_id=svc.id, interface=interface,
                                     region=region, url=url, enabled=True))
                elif ep.url != url:
                    ep.url = url
