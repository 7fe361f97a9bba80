"""Flavors: the sizes a server may be booted with, their extra specs and private-flavor access.

Visibility follows Nova: admins see every flavor; everyone else sees public flavors and the
private flavors their project was given access to.  A flavor that is not visible is absent (404).
Only admins create, delete or change flavors.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute.models import Flavor
from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest, Conflict, NotFound
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.types import new_uuid, utcnow

# (id, name, ram MiB, vcpus, disk GB).  Nova's classic ids 1-3 for the m1 sizes, and the ids
# DevStack gives its extra test flavors (42 m1.nano, 84 m1.micro), so Tempest configs carry over.
DEFAULT_FLAVORS: tuple[tuple[str, str, int, int, int], ...] = (
    ("1", "m1.tiny", 512, 1, 1),
    ("2", "m1.small", 2048, 1, 20),
    ("3", "m1.medium", 4096, 2, 40),
    ("42", "m1.nano", 128, 1, 1),
    ("84", "m1.micro", 192, 1, 1),
)

# Nova's sort keys (names of its columns) -> ours.
SORT_KEYS: dict[str, Any] = {
    "flavorid": t.Flavor.id, "id": t.Flavor.created_at, "name": t.Flavor.name,
    "memory_mb": t.Flavor.ram, "vcpus": t.Flavor.vcpus, "root_gb": t.Flavor.disk,
    "ephemeral_gb": t.Flavor.ephemeral, "swap": t.Flavor.swap, "rxtx_factor": t.Flavor.rxtx_factor,
    "is_public": t.Flavor.is_public, "disabled": t.Flavor.disabled, "created_at": t.Flavor.created_at,
    "description": t.Flavor.description,
}
FLAVOR_ID = re.compile(r"^(?! )[a-zA-Z0-9. _-]+(?<! )$")
SPEC_KEY = re.compile(r"^[a-zA-Z0-9-_:. ]{1,255}$")
MAX_INT = 0x7FFFFFFF


def to_flavor(row: t.Flavor) -> Flavor:
    return Flavor(id=row.id, name=row.name, ram=row.ram, vcpus=row.vcpus, disk=row.disk,
                  ephemeral=row.ephemeral, swap=row.swap, rxtx_factor=row.rxtx_factor,
                  is_public=row.is_public, disabled=row.disabled, description=row.description,
                  extra_specs={str(k): str(v) for k, v in (row.extra_specs or {}).items()})


def _visible_to(ctx: AuthContext) -> ColumnElement[bool]:
    """Public flavors or private ones shared with the caller's project (Nova's non-admin filter)."""
    shared = exists().where(t.FlavorAccess.flavor_id == t.Flavor.id,
                            t.FlavorAccess.project_id == (ctx.project_id or ""))
    return or_(t.Flavor.is_public.is_(True), shared)


def validate_extra_specs(specs: Mapping[str, object]) -> dict[str, str]:
    """Keys as Nova allows them; values strings (numbers and booleans are stored as text) of 255 max."""
    clean: dict[str, str] = {}
    for key, value in specs.items():
        if not isinstance(key, str) or not SPEC_KEY.match(key):
            raise BadRequest("Invalid extra_specs key {key!r}: 1-255 characters of letters, digits "
                             "and '-_:. '.", key=key)
        if isinstance(value, (bool, int, float, str)):
            text = str(value)
        else:
            raise BadRequest("Invalid extra_specs value for {key}: a string is required.", key=key)
        if len(text) > 255:
            raise BadRequest("extra_specs value for {key} is longer than 255 characters.", key=key)
        clean[key] = text
    return clean


class FlavorService:
    def __init__(self, db: sessionmaker[Session]) -> None:
        self._db = db

    # -- reading -------------------------------------------------------------------------------

    def _row(self, s: Session, ctx: AuthContext, flavor_id: str) -> t.Flavor:
        q = select(t.Flavor).where(t.Flavor.id == flavor_id)
        if not ctx.is_admin:
            q = q.where(_visible_to(ctx))
        row = s.scalar(q)
        if row is None:
            raise NotFound("Flavor {flavor_id} could not be found.", flavor_id=flavor_id)
        return row

    def list(self, ctx: AuthContext, *, is_public: bool | None = True, min_ram: int | None = None,
             min_disk: int | None = None, sort_key: str = "flavorid", sort_dir: str = "asc",
             limit: int | None = None, marker: str | None = None) -> list[Flavor]:
        """Flavors the caller may see, Nova's way.

        ``is_public`` True means public ones plus the private ones shared with the caller's project,
        False only private ones, None all; only admins may ask for anything but True.  Non-admins
        never see disabled flavors.
        """
        if sort_key not in SORT_KEYS:
            raise BadRequest("Invalid sort key {key}.", key=sort_key)
        if sort_dir not in ("asc", "desc"):
            raise BadRequest("Invalid sort direction {dir}.", dir=sort_dir)
        column = SORT_KEYS[sort_key]
        q = select(t.Flavor)
        if not ctx.is_admin:
            q = q.where(_visible_to(ctx), t.Flavor.disabled.is_(False))
        elif is_public is True:
            q = q.where(_visible_to(ctx))
        elif is_public is False:
            q = q.where(t.Flavor.is_public.is_(False))
        if min_ram is not None:
            q = q.where(t.Flavor.ram >= min_ram)
        if min_disk is not None:
            q = q.where(t.Flavor.disk >= min_disk)
        order = column.asc() if sort_dir == "asc" else column.desc()
        q = q.order_by(order, t.Flavor.id.asc() if sort_dir == "asc" else t.Flavor.id.desc())
        with self._db() as s:
            flavors = [to_flavor(r) for r in s.scalars(q)]
        if marker is not None:
            ids = [f.id for f in flavors]
            if marker not in ids:
                raise BadRequest("marker [{marker}] not found", marker=marker)
            flavors = flavors[ids.index(marker) + 1:]
        return flavors if limit is None else flavors[:limit]

    def get(self, ctx: AuthContext, flavor_id: str) -> Flavor:
        with self._db() as s:
            return to_flavor(self._row(s, ctx, flavor_id))

    def get_for_boot(self, ctx: AuthContext, flavor_ref: str) -> Flavor:
        """The flavor ``flavor_ref`` (an id or a flavor URL) names, if the caller may boot it.

        Raises BadRequest, as Nova does for a bad ``flavorRef`` on server create, when the flavor
        does not exist, is not visible to the caller's project, or is disabled.
        """
        flavor_id = flavor_ref.rstrip("/").rsplit("/", 1)[-1] if "/" in flavor_ref else flavor_ref
        with self._db() as s:
            q = select(t.Flavor).where(t.Flavor.id == flavor_id, t.Flavor.disabled.is_(False))
            if not ctx.is_admin:
                q = q.where(_visible_to(ctx))
            row = s.scalar(q)
            if row is None:
                raise BadRequest("Invalid flavorRef provided.")
            return to_flavor(row)

    # -- managing ------------------------------------------------------------------------------

    def create(self, ctx: AuthContext, *, name: str, ram: int, vcpus: int, disk: int,
               flavor_id: str | None = None, ephemeral: int = 0, swap: int = 0,
               rxtx_factor: float = 1.0, is_public: bool = True,
               description: str | None = None) -> Flavor:
        """Admin only.  ``flavor_id`` None means a new UUID; a taken name or id is 409."""
        policy.require_admin(ctx, "os_compute_api:os-flavor-manage:create")
        name = name.strip()
        if not name or len(name) > 255:
            raise BadRequest("Flavor name must be 1-255 characters and not only spaces.")
        if flavor_id is None:
            flavor_id = new_uuid()
        elif not FLAVOR_ID.match(flavor_id) or len(flavor_id) > 255:
            raise BadRequest("Invalid flavor id {id!r}: letters, digits and '. _-' only, no leading "
                             "or trailing space.", id=flavor_id)
        for label, value, low in (("ram", ram, 1), ("vcpus", vcpus, 1), ("disk", disk, 0),
                                  ("ephemeral", ephemeral, 0), ("swap", swap, 0)):
            if not low <= value <= MAX_INT:
                raise BadRequest("Invalid {label}: must be an integer between {low} and {high}.",
                                 label=label, low=low, high=MAX_INT)
        if not 0 < rxtx_factor <= 3.40282e38:
            raise BadRequest("Invalid rxtx_factor: must be a number greater than 0.")
        try:
            with self._db.begin() as s:
                if s.scalar(select(t.Flavor.id).where(t.Flavor.name == name)) is not None:
                    raise Conflict("Flavor with name {name} already exists.", name=name)
                if s.get(t.Flavor, flavor_id) is not None:
                    raise Conflict("Flavor with ID {id} already exists.", id=flavor_id)
                row = t.Flavor(id=flavor_id, name=name, ram=ram, vcpus=vcpus, disk=disk,
                               ephemeral=ephemeral, swap=swap, rxtx_factor=rxtx_factor,
                               is_public=is_public, disabled=False, description=description,
                               extra_specs={}, created_at=utcnow())
                s.add(row)
                s.flush()
                return to_flavor(row)
        except IntegrityError as e:  # a concurrent create won the race
            raise Conflict("Flavor with name {name} or ID {id} already exists.", name=name,
                           id=flavor_id) from e

    def delete(self, ctx: AuthContext, flavor_id: str) -> None:
        """Admin only.  Servers keep their snapshot of the flavor."""
        policy.require_admin(ctx, "os_compute_api:os-flavor-manage:delete")
        with self._db.begin() as s:
            row = self._row(s, ctx, flavor_id)
            s.execute(delete(t.FlavorAccess).where(t.FlavorAccess.flavor_id == row.id))
            s.delete(row)

    def ensure_defaults(self) -> builtins.list[str]:
        """Create the bootstrap flavors whose id and name are both free; returns the names made."""
        made: builtins.list[str] = []
        with self._db.begin() as s:
            for flavor_id, name, ram, vcpus, disk in DEFAULT_FLAVORS:
                taken = s.scalar(select(t.Flavor.id).where(or_(t.Flavor.id == flavor_id,
                                                               t.Flavor.name == name)))
                if taken is not None:
                    continue
                s.add(t.Flavor(id=flavor_id, name=name, ram=ram, vcpus=vcpus, disk=disk, ephemeral=0,
                               swap=0, rxtx_factor=1.0, is_public=True, disabled=False,
                               extra_specs={}, created_at=utcnow()))
                made.append(name)
        return made

    # -- extra specs ---------------------------------------------------------------------------

    def extra_specs(self, ctx: AuthContext, flavor_id: str) -> dict[str, str]:
        return dict(self.get(ctx, flavor_id).extra_specs)

    def extra_spec(self, ctx: AuthContext, flavor_id: str, key: str) -> str:
        specs = self.extra_specs(ctx, flavor_id)
        if key not in specs:
            raise NotFound("Flavor {flavor_id} has no extra specs with key {key}.", flavor_id=flavor_id,
                           key=key)
        return specs[key]

    def set_extra_specs(self, ctx: AuthContext, flavor_id: str, specs: Mapping[str, object]) -> dict[str, str]:
        """Admin only: merge ``specs`` into the flavor's; returns what was set."""
        policy.require_admin(ctx, "os_compute_api:os-flavor-extra-specs:create")
        clean = validate_extra_specs(specs)
        with self._db.begin() as s:
            row = self._row(s, ctx, flavor_id)
            row.extra_specs = {**(row.extra_specs or {}), **clean}
        return clean

    def delete_extra_spec(self, ctx: AuthContext, flavor_id: str, key: str) -> None:
        policy.require_admin(ctx, "os_compute_api:os-flavor-extra-specs:delete")
        with self._db.begin() as s:
            row = self._row(s, ctx, flavor_id)
            specs = dict(row.extra_specs or {})
            if key not in specs:
                raise NotFound("Flavor {flavor_id} has no extra specs with key {key}.",
                               flavor_id=flavor_id, key=key)
            del specs[key]
            row.extra_specs = specs

    # -- access to private flavors -------------------------------------------------------------

    def _access(self, s: Session, flavor_id: str) -> builtins.list[str]:
        q = select(t.FlavorAccess.project_id).where(t.FlavorAccess.flavor_id == flavor_id)
        return sorted(s.scalars(q))

    def list_access(self, ctx: AuthContext, flavor_id: str) -> builtins.list[str]:
        """Admin only: the projects a private flavor is shared with (404 for a public flavor)."""
        policy.require_admin(ctx, "os_compute_api:os-flavor-access")
        with self._db() as s:
            row = self._row(s, ctx, flavor_id)
            if row.is_public:
                raise NotFound("Access list not available for public flavors.")
            return self._access(s, row.id)

    def add_access(self, ctx: AuthContext, flavor_id: str, project_id: str) -> builtins.list[str]:
        policy.require_admin(ctx, "os_compute_api:os-flavor-access:add_tenant_access")
        with self._db.begin() as s:
            row = self._row(s, ctx, flavor_id)
            if row.is_public:
                raise Conflict("Can not add access to a public flavor.")
            if s.get(t.FlavorAccess, (row.id, project_id)) is not None:
                raise Conflict("Flavor access already exists for flavor {flavor_id} and project "
                               "{project_id} combination.", flavor_id=row.id, project_id=project_id)
            s.add(t.FlavorAccess(flavor_id=row.id, project_id=project_id))
            s.flush()
            return self._access(s, row.id)

    def remove_access(self, ctx: AuthContext, flavor_id: str, project_id: str) -> builtins.list[str]:
        policy.require_admin(ctx, "os_compute_api:os-flavor-access:remove_tenant_access")
        with self._db.begin() as s:
            row = self._row(s, ctx, flavor_id)
            if row.is_public:
                raise Conflict("Can not remove access from a public flavor.")
            access = s.get(t.FlavorAccess, (row.id, project_id))
            if access is None:
                raise NotFound("Flavor access not found for {flavor_id} / {project_id} combination.",
                               flavor_id=row.id, project_id=project_id)
            s.delete(access)
            s.flush()
            return self._access(s, row.id)
