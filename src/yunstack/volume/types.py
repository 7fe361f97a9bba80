"""Volume types: names for kinds of storage, with extra specs, and the default type.

Cinder's policy: everyone reads the public types (admins read every type); only admins create,
change or delete them.  A type that a volume still uses cannot be deleted, nor can the default.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from yunstack.db.tables import volume as t
from yunstack.errors import BadRequest, Conflict, NotFound
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.types import new_uuid, utcnow
from yunstack.volume.models import VolumeType

MAX_SPEC_LENGTH = 255


class VolumeTypeNotFound(NotFound):
    message = "Volume type {id} could not be found."


def as_type(row: t.VolumeType) -> VolumeType:
    return VolumeType(id=row.id, name=row.name, description=row.description, is_public=row.is_public,
                      extra_specs={str(k): str(v) for k, v in (row.extra_specs or {}).items()})


def check_specs(specs: Mapping[str, object]) -> dict[str, str]:
    out = {}
    for key, value in specs.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_SPEC_LENGTH:
            raise BadRequest("Invalid input received: extra spec keys must be 1 to 255 characters.")
        if not isinstance(value, str) or len(value) > MAX_SPEC_LENGTH:
            raise BadRequest(f"Invalid input received: the value of extra spec {key} must be a string of at "
                             f"most 255 characters.")
        out[key] = value
    return out


class VolumeTypes:
    def __init__(self, db: sessionmaker[Session], default_name: str) -> None:
        self._db = db
        self.default_name = default_name

    # -- inside a caller's transaction ---------------------------------------------------------

    def find(self, s: Session, ctx: AuthContext | None, ref: str) -> t.VolumeType:
        """The type ``ref`` names (its id, else its name), as ``ctx`` may see it (None: the system)."""
        row = s.get(t.VolumeType, ref) or s.scalar(select(t.VolumeType).where(t.VolumeType.name == ref))
        if row is None or (ctx is not None and not row.is_public and not ctx.is_admin):
            raise VolumeTypeNotFound(id=ref)
        return row

    def default(self, s: Session) -> t.VolumeType:
        row = s.scalar(select(t.VolumeType).where(t.VolumeType.name == self.default_name))
        if row is None:  # made at start (ensure_default); a deleted one is made again
            row = self._make(s, self.default_name, "Default Volume Type", True, {})
        return row

    def _make(self, s: Session, name: str, description: str | None, is_public: bool,
              specs: Mapping[str, str]) -> t.VolumeType:
        now = utcnow()
        row = t.VolumeType(id=new_uuid(), name=name, description=description, is_public=is_public,
                           extra_specs=dict(specs), created_at=now, updated_at=now)
        s.add(row)
        s.flush()
        return row

    # -- use cases -----------------------------------------------------------------------------

    def ensure_default(self) -> None:
        try:
            with self._db.begin() as s:
                self.default(s)
        except IntegrityError:
            pass  # another process made it at the same moment

    def list_types(self, ctx: AuthContext, *, is_public: bool | None = None) -> list[VolumeType]:
        with self._db() as s:
            q = select(t.VolumeType).order_by(t.VolumeType.name)
            if not ctx.is_admin:
                q = q.where(t.VolumeType.is_public.is_(True))
            elif is_public is not None:
                q = q.where(t.VolumeType.is_public.is_(is_public))
            return [as_type(r) for r in s.scalars(q)]

    def get(self, ctx: AuthContext, ref: str) -> VolumeType:
        with self._db() as s:
            if ref == "default":
                return as_type(self.default(s))
            return as_type(self.find(s, ctx, ref))

    def create(self, ctx: AuthContext, name: str, *, description: str | None = None, is_public: bool = True,
               extra_specs: Mapping[str, object] | None = None) -> VolumeType:
        policy.require_admin(ctx, "volume_extension:types_manage")
        name = name.strip()
        if not 0 < len(name) <= 255:
            raise BadRequest("Invalid input received: the volume type name must be 1 to 255 characters.")
        specs = check_specs(extra_specs or {})
        try:
            with self._db.begin() as s:
                return as_type(self._make(s, name, description, is_public, specs))
        except IntegrityError:
            raise Conflict(f"Volume Type {name} already exists.") from None

    def update(self, ctx: AuthContext, ref: str, *, name: str | None = None, description: str | None = None,
               is_public: bool | None = None) -> VolumeType:
        policy.require_admin(ctx, "volume_extension:types_manage")
        try:
            with self._db.begin() as s:
                row = self.find(s, ctx, ref)
                if name is not None:
                    if not 0 < len(name.strip()) <= 255:
                        raise BadRequest("Invalid input received: the volume type name must be 1 to 255 characters.")
                    if row.name == self.default_name and name.strip() != row.name:
                        raise BadRequest("The default volume type cannot be renamed.")
                    row.name = name.strip()
                if description is not None:
                    row.description = description
                if is_public is not None:
                    row.is_public = is_public
                row.updated_at = utcnow()
                s.flush()
                return as_type(row)
        except IntegrityError:
            raise Conflict(f"Volume Type {name} already exists.") from None

    def delete(self, ctx: AuthContext, ref: str) -> None:
        policy.require_admin(ctx, "volume_extension:types_manage")
        with self._db.begin() as s:
            row = self.find(s, ctx, ref)
            if row.name == self.default_name:
                raise BadRequest("The default volume type cannot be deleted.")
            used = s.scalar(select(func.count()).select_from(t.Volume).where(t.Volume.volume_type_id == row.id))
            if used:
                raise BadRequest(f"Target volume type is still in use: {used} volume(s) of type {row.name}.")
            s.delete(row)

    def specs(self, ctx: AuthContext, ref: str) -> dict[str, str]:
        return dict(self.get(ctx, ref).extra_specs)

    def set_specs(self, ctx: AuthContext, ref: str, specs: Mapping[str, object]) -> dict[str, str]:
        policy.require_admin(ctx, "volume_extension:types_extra_specs:create")
        checked = check_specs(specs)
        with self._db.begin() as s:
            row = self.find(s, ctx, ref)
            row.extra_specs = {**(row.extra_specs or {}), **checked}
            row.updated_at = utcnow()
        return checked

    def delete_spec(self, ctx: AuthContext, ref: str, key: str) -> None:
        policy.require_admin(ctx, "volume_extension:types_extra_specs:delete")
        with self._db.begin() as s:
            row = self.find(s, ctx, ref)
            specs = dict(row.extra_specs or {})
            if key not in specs:
                raise NotFound(f"Volume Type {row.id} has no extra specs with key {key}.")
            del specs[key]
            row.extra_specs = specs
            row.updated_at = utcnow()
