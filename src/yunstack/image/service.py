"""Image use cases: create, list, show, patch, delete, upload, download, tags, members.

Visibility follows Glance.  ``private``: the owner only.  ``public``: everyone; only admins make an
image public.  ``community``: everyone may show and boot it, but it is listed only for its owner
or when asked for (``visibility=community`` or ``all``).  ``shared``: the owner plus member
projects; a member sees it in lists once it has accepted.  Admins see everything.  An image the
caller may not see is reported as absent (404); an action the caller may not take on an image it
can see is 403.

Data never sits whole in memory: uploads arrive as an iterable of chunks that are hashed and
written to a staged file, inspected (``inspect.py``), then published by an atomic rename.  A failed
upload removes the staged file and puts the image back to ``queued``.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from yunstack.config import ImageConfig
from yunstack.db.tables import image as t
from yunstack.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, QuotaExceeded
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.image.inspect import SUPPORTED_FORMATS, inspect, unsupported
from yunstack.image.models import (
    CONTAINER_FORMATS,
    MEMBER_STATUSES,
    VISIBILITIES,
    Image,
    ImageFilters,
    Member,
    Page,
    PatchOp,
)
from yunstack.image.store import ImageStore, read_chunks
from yunstack.types import new_uuid, utcnow

log = logging.getLogger(__name__)

SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at",
             "updated_at", "visibility", "owner", "virtual_size", "min_disk", "min_ram")
# Attributes a client can never set: they describe the data or the record itself.
READ_ONLY = frozenset({"id", "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value",
                       "created_at", "updated_at", "self", "file", "schema", "locations", "direct_url",
                       "stores", "deleted", "deleted_at"})
CORE = frozenset({"name", "visibility", "protected", "os_hidden", "min_ram", "min_disk", "disk_format",
                  "container_format", "tags", "owner"})
RESERVED_PREFIX = "os_glance"
MAX_TAGS = 128
MAX_PROPERTIES = 128
MAX_MEMBERS = 128
MAX_INT32 = 0x7FFFFFFF  # min_ram and min_disk are 32-bit columns (as in Glance)
QUOTA_NAME = "image_size_total"


def _image(row: t.Image) -> Image:
    return Image(id=row.id, name=row.name, owner=row.owner, status=row.status, disk_format=row.disk_format,
                 container_format=row.container_format, visibility=row.visibility, protected=row.protected,
                 os_hidden=row.os_hidden, size=row.size, virtual_size=row.virtual_size, checksum=row.checksum,
                 os_hash_algo=row.os_hash_algo, os_hash_value=row.os_hash_value, min_disk=row.min_disk,
                 min_ram=row.min_ram, tags=tuple(row.tags or ()), properties=dict(row.properties or {}),
                 created_at=row.created_at, updated_at=row.updated_at)


def _member(row: t.ImageMember) -> Member:
    return Member(image_id=row.image_id, member_id=row.member, status=row.status,
                  created_at=row.created_at, updated_at=row.updated_at)


def canonical_id(image_id: str) -> str | None:
    """The dashed lower-case form of a UUID, or None when ``image_id`` is not one."""
    try:
        return str(uuid.UUID(image_id))
    except ValueError:
        return None


def _check_property(key: str, value: object) -> None:
    if key in READ_ONLY:
        raise Forbidden("Attribute '{key}' is read-only.", key=key)
    if key.startswith(RESERVED_PREFIX):
        raise Forbidden("Attribute '{key}' is reserved.", key=key)
    if not key or len(key) > 255:
        raise BadRequest("Property names must be 1 to 255 characters.")
    if not isinstance(value, str):
        raise BadRequest("Property {key} must be a string.", key=key)


def _check_tag(tag: object) -> str:
    if not isinstance(tag, str) or not tag or len(tag) > 255:
        raise BadRequest("Tags must be strings of 1 to 255 characters.")
    return tag


def _sort(images: list[Image], sort: Sequence[tuple[str, str]]) -> list[Image]:
    for key, direction in reversed(sort):
        images.sort(key=lambda i, k=key: (1, "") if getattr(i, k) is None else (0, getattr(i, k)),  # type: ignore[misc]
                    reverse=direction == "desc")
    return images


class ImageService:
    """Glance v2 use cases; every method takes the caller's context and applies policy first."""

    def __init__(self, db: sessionmaker[Session], config: ImageConfig, store: ImageStore, *,
                 qemu_img: str = "qemu-img") -> None:
        self._db = db
        self._config = config
        self._store = store
        self._qemu_img = qemu_img

    # -- policy ----------------------------------------------------------------------------------

    def _membership(self, s: Session, image_id: str, project: str | None) -> t.ImageMember | None:
        if project is None:
            return None
        return s.get(t.ImageMember, (image_id, project))

    def _row(self, s: Session, ctx: AuthContext, image_id: str, *, lock: bool = False) -> t.Image:
        """The image row if the caller may see it, else NotFound (also for non-UUID ids)."""
        key = canonical_id(image_id)
        row = None if key is None else s.get(t.Image, key, with_for_update=lock or None)
        if row is None:
            raise NotFound("No image found with ID {id}.", id=image_id)
        if (ctx.is_admin or row.owner == ctx.project_id or row.visibility in ("public", "community")
                or (row.visibility == "shared" and self._membership(s, row.id, ctx.project_id))):
            return row
        raise NotFound("No image found with ID {id}.", id=image_id)

    def _require_owner(self, ctx: AuthContext, row: t.Image, action: str) -> None:
        policy.require_write(ctx, action)
        if not ctx.is_admin and row.owner != ctx.project_id:
            raise Forbidden("You are not permitted to {action} image {id}: only its owner may.",
                            action=action.replace("_", " "), id=row.id)

    def _visible_clause(self, ctx: AuthContext, visibility: str | None, member_status: str) -> ColumnElement[bool]:
        img = t.Image
        project = ctx.project_id or ""
        members = select(t.ImageMember.image_id).where(t.ImageMember.member == project)
        if member_status != "all":
            members = members.where(t.ImageMember.status == member_status)
        shared_with_me = and_(img.visibility == "shared", img.id.in_(members))
        mine = img.owner == project
        if visibility is None:
            if ctx.is_admin:
                return img.id.is_not(None)
            return or_(mine, img.visibility == "public", shared_with_me)
        if visibility == "all":
            if ctx.is_admin:
                return img.id.is_not(None)
            return or_(mine, img.visibility.in_(("public", "community")), shared_with_me)
        if visibility in ("public", "community"):
            return img.visibility == visibility
        if visibility == "private":
            return and_(img.visibility == "private", img.id.is_not(None) if ctx.is_admin else mine)
        if visibility == "shared":
            if ctx.is_admin:
                return img.visibility == "shared"
            return or_(and_(img.visibility == "shared", mine), shared_with_me)
        return false()

    # -- images ----------------------------------------------------------------------------------

    def create(self, ctx: AuthContext, *, name: str | None = None, image_id: str | None = None,
               disk_format: str | None = None, container_format: str | None = None,
               visibility: str = "shared", protected: bool = False, os_hidden: bool = False,
               min_disk: int = 0, min_ram: int = 0, tags: Sequence[str] = (),
               properties: Mapping[str, str] | None = None, owner: str | None = None) -> Image:
        """Register a queued image owned by the caller's project (admins may name another owner)."""
        project = policy.require_scoped(ctx, "add_image")
        policy.require_write(ctx, "add_image")
        if owner is not None and owner != project:
            policy.require_admin(ctx, "set the owner of an image")
        self._check_visibility(ctx, visibility)
        self._check_formats(disk_format, container_format)
        props = dict(properties or {})
        for prop, value in props.items():
            _check_property(prop, value)
        if len(props) > MAX_PROPERTIES:
            raise Forbidden("An image may have at most {n} properties.", n=MAX_PROPERTIES)
        clean_tags = list(dict.fromkeys(_check_tag(tag) for tag in tags))
        if len(clean_tags) > MAX_TAGS:
            raise Forbidden("An image may have at most {n} tags.", n=MAX_TAGS)
        if not (0 <= min_disk <= MAX_INT32 and 0 <= min_ram <= MAX_INT32):
            raise BadRequest("min_disk and min_ram must be integers from 0 to {high}.", high=MAX_INT32)
        key = new_uuid() if image_id is None else canonical_id(image_id)
        if key is None:
            raise BadRequest("Image id {id} is not a UUID.", id=image_id)
        now = utcnow()
        with self._db.begin() as s:
            if s.get(t.Image, key) is not None:
                raise Conflict(detail=f"Image with identifier {key} already exists.")
            row = t.Image(id=key, name=name, owner=owner or project, status="queued", disk_format=disk_format,
                          container_format=container_format, visibility=visibility, protected=protected,
                          os_hidden=os_hidden, min_disk=min_disk, min_ram=min_ram, tags=clean_tags,
                          properties=props, created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            return _image(row)

    def get(self, ctx: AuthContext, image_id: str) -> Image:
        """One image the caller may see."""
        with self._db() as s:
            return _image(self._row(s, ctx, image_id))

    def list_images(self, ctx: AuthContext, filters: ImageFilters | None = None, *,
             sort: Sequence[tuple[str, str]] = (("created_at", "desc"),), limit: int = 25,
             marker: str | None = None) -> Page:
        """A page of images the caller may see, filtered and sorted; ``id`` always breaks ties."""
        f = filters or ImageFilters()
        if f.visibility not in (None, "all", *VISIBILITIES):
            raise BadRequest("Invalid visibility value: {v}.", v=f.visibility)
        if f.member_status not in ("all", *MEMBER_STATUSES):
            raise BadRequest("Invalid member_status value: {v}.", v=f.member_status)
        for key, direction in sort:
            if key not in SORT_KEYS or direction not in ("asc", "desc"):
                raise BadRequest("Invalid sort {key}:{dir}; keys: {keys}; directions: asc, desc.",
                                 key=key, dir=direction, keys=", ".join(SORT_KEYS))
        img = t.Image
        q = select(img).where(self._visible_clause(ctx, f.visibility, f.member_status))
        for column, values in ((img.name, f.name), (img.status, f.status), (img.disk_format, f.disk_format),
                               (img.container_format, f.container_format)):
            if values is not None:
                q = q.where(column.in_(values))
        if f.ids is not None:
            q = q.where(img.id.in_([k for k in map(canonical_id, f.ids) if k]))
        if f.owner is not None:
            q = q.where(img.owner == f.owner)
        if f.protected is not None:
            q = q.where(img.protected.is_(f.protected))
        q = q.where(img.os_hidden.is_(f.os_hidden))
        if f.size_min is not None:
            q = q.where(img.size >= f.size_min)
        if f.size_max is not None:
            q = q.where(img.size <= f.size_max)
        with self._db() as s:
            rows = list(s.scalars(q))
        # Tags and extra properties live in JSON columns; matching them here keeps one query for both DBs.
        wanted = set(f.tags)
        images = [_image(r) for r in rows if wanted <= set(r.tags or ())
                  and all((r.properties or {}).get(k) == v for k, v in f.properties.items())]
        keys = [k for k, _ in sort]
        order = [*sort, *([("id", sort[-1][1] if sort else "desc")] if "id" not in keys else [])]
        images = _sort(images, order)
        if marker is not None:
            index = next((i for i, im in enumerate(images) if im.id == marker), None)
            if index is None:
                raise BadRequest("Marker {marker} could not be found.", marker=marker)
            images = images[index + 1:]
        return Page(images=images[:limit], more=len(images) > limit)

    def update(self, ctx: AuthContext, image_id: str, ops: Sequence[PatchOp]) -> Image:
        """Apply a Glance JSON patch (add/replace/remove on core attributes, tags and properties)."""
        with self._db.begin() as s:
            row = self._row(s, ctx, image_id, lock=True)
            self._require_owner(ctx, row, "modify_image")
            for op in ops:
                self._apply(ctx, row, op)
            row.updated_at = utcnow()
            s.flush()
            return _image(row)

    def delete(self, ctx: AuthContext, image_id: str) -> None:
        """Delete the record and its data; protected images are refused (403)."""
        with self._db.begin() as s:
            row = self._row(s, ctx, image_id, lock=True)
            self._require_owner(ctx, row, "delete_image")
            if row.protected:
                raise Forbidden("Image {id} is protected and cannot be deleted.", id=row.id)
            key = row.location
            s.delete(row)
        if key:
            self._store.delete(key)

    def add_tag(self, ctx: AuthContext, image_id: str, tag: str) -> None:
        """Add a tag (adding an existing tag is a no-op)."""
        self.update(ctx, image_id, [PatchOp(op="add", path="/tags/-", value=tag)])

    def remove_tag(self, ctx: AuthContext, image_id: str, tag: str) -> None:
        """Remove a tag; NotFound if the image does not have it."""
        with self._db.begin() as s:
            row = self._row(s, ctx, image_id, lock=True)
            self._require_owner(ctx, row, "modify_image")
            if tag not in (row.tags or ()):
                raise NotFound("Tag {tag} not found on image {id}.", tag=tag, id=row.id)
            row.tags = [x for x in row.tags if x != tag]
            row.updated_at = utcnow()

    # -- data ------------------------------------------------------------------------------------

    def upload(self, ctx: AuthContext, image_id: str, chunks: Iterable[bytes], *, size: int | None = None) -> Image:
        """Stream data into a queued image; on success it is active with checksums and sizes.

        ``size`` (from Content-Length or X-OpenStack-Image-Size) only lets an oversized upload fail
        before any byte is read; limits are enforced on the bytes actually received.  Any failure
        leaves the image queued and no file behind.
        """
        row, used = self._begin_upload(ctx, image_id, size)
        staged = self._store.stage(row.id)
        try:
            md5 = hashlib.md5(usedforsecurity=False)
            sha = hashlib.sha512()
            received = 0
            for chunk in chunks:
                received += len(chunk)
                self._check_limits(received, used)
                md5.update(chunk)
                sha.update(chunk)
                staged.write(chunk)
            staged.flush()
            found = inspect(staged.path, row.disk_format or "", qemu_img=self._qemu_img)
            key = self._store.commit(staged, row.id)
        except BaseException:
            self._store.discard(staged)
            self._requeue(row.id)
            raise
        try:
            with self._db.begin() as s:
                current = s.get(t.Image, row.id, with_for_update=True)
                if current is None:
                    raise NotFound("Image {id} was deleted during the upload.", id=row.id)
                current.status = "active"
                current.size = received
                current.virtual_size = found.virtual_size
                current.checksum = md5.hexdigest()
                current.os_hash_algo = "sha512"
                current.os_hash_value = sha.hexdigest()
                current.location = key
                current.updated_at = utcnow()
                s.flush()
                return _image(current)
        except BaseException:
            self._store.delete(key)
            self._requeue(row.id)
            raise

    def upload_local(self, ctx: AuthContext, image_id: str, path: Path) -> Image:
        """Upload a local file into a queued image without HTTP (bootstrap uses it for the tiny image)."""
        fh = open(path, "rb")  # noqa: SIM115 - read_chunks closes it
        return self.upload(ctx, image_id, read_chunks(fh), size=path.stat().st_size)

    def download(self, ctx: AuthContext, image_id: str) -> tuple[Image, Iterator[bytes] | None]:
        """The image and its data as chunks; None when it has no data yet (the API answers 204)."""
        with self._db() as s:
            row = self._row(s, ctx, image_id)
            image = _image(row)
            key = row.location
        if key is None:
            return image, None
        if image.status != "active":
            raise Forbidden("The data of image {id} is not available in status {status}.",
                            id=image.id, status=image.status)
        return image, read_chunks(self._store.open(key))

    def get_for_boot(self, ctx: AuthContext, image_id: str) -> tuple[Image, Path]:
        """An active image the caller may boot and the local path of its data, for compute.

        Usable images: the caller's own, public, community, and shared ones whose membership
        the caller's project accepted (admins may use any).  Others are NotFound; an image that
        is not active (or has no data) is BadRequest, as Nova reports it.  The path must be
        treated as read-only: copy-on-write overlays go elsewhere.
        """
        with self._db() as s:
            row = self._row(s, ctx, image_id)
            member = self._membership(s, row.id, ctx.project_id)
            usable = (ctx.is_admin or row.owner == ctx.project_id or row.visibility in ("public", "community")
                      or (row.visibility == "shared" and member is not None and member.status == "accepted"))
            if not usable:
                raise NotFound("No image found with ID {id}.", id=image_id)
            if row.status != "active" or row.location is None:
                raise BadRequest("Image {id} is not active.", id=row.id)
            return _image(row), self._store.local_path(row.location)

    def create_snapshot(self, ctx: AuthContext, name: str, source: Path, *,
                        properties: Mapping[str, str] | None = None) -> Image:
        """Register a finished, self-contained qcow2 (no backing file) as an active private image.

        Used by server createImage: the bytes are copied into the store with the same hashing,
        inspection and quota as an upload; ``source`` is left for the caller to remove.  On any
        failure no image record remains.
        """
        image = self.create(ctx, name=name, disk_format="qcow2", container_format="bare",
                            visibility="private", properties=properties)
        try:
            return self.upload_local(ctx, image.id, source)
        except BaseException:
            with self._db.begin() as s:
                row = s.get(t.Image, image.id)
                if row is not None:
                    s.delete(row)
            raise

    # -- members ---------------------------------------------------------------------------------

    def _shared_row(self, s: Session, ctx: AuthContext, image_id: str) -> t.Image:
        row = self._row(s, ctx, image_id)
        if row.visibility != "shared":
            raise Forbidden("Only shared images have members; image {id} is {v}.", id=row.id, v=row.visibility)
        return row

    def list_members(self, ctx: AuthContext, image_id: str) -> list[Member]:
        """All members for the owner (and admins); a member sees only its own entry."""
        with self._db() as s:
            row = self._shared_row(s, ctx, image_id)
            q = select(t.ImageMember).where(t.ImageMember.image_id == row.id).order_by(t.ImageMember.created_at)
            if not ctx.is_admin and row.owner != ctx.project_id:
                q = q.where(t.ImageMember.member == (ctx.project_id or ""))
            return [_member(m) for m in s.scalars(q)]

    def add_member(self, ctx: AuthContext, image_id: str, member_id: str) -> Member:
        """Share the image with a project (pending until that project accepts); owner only."""
        if not member_id or len(member_id) > 64:
            raise BadRequest("member must be a project id of 1 to 64 characters.")
        now = utcnow()
        with self._db.begin() as s:
            row = self._shared_row(s, ctx, image_id)
            self._require_owner(ctx, row, "add_member")
            if s.get(t.ImageMember, (row.id, member_id)) is not None:
                raise Conflict(detail=f"Member {member_id} already exists for image {row.id}.")
            count = s.scalar(select(func.count()).select_from(t.ImageMember)
                             .where(t.ImageMember.image_id == row.id)) or 0
            if count >= MAX_MEMBERS:
                raise Forbidden("An image may have at most {n} members.", n=MAX_MEMBERS)
            m = t.ImageMember(image_id=row.id, member=member_id, status="pending", created_at=now, updated_at=now)
            s.add(m)
            s.flush()
            return _member(m)

    def get_member(self, ctx: AuthContext, image_id: str, member_id: str) -> Member:
        """One membership; visible to the owner, admins and the member itself."""
        with self._db() as s:
            row = self._shared_row(s, ctx, image_id)
            m = s.get(t.ImageMember, (row.id, member_id))
            if m is None or not (ctx.is_admin or row.owner == ctx.project_id or member_id == ctx.project_id):
                raise NotFound("Member {member} not found for image {id}.", member=member_id, id=row.id)
            return _member(m)

    def update_member(self, ctx: AuthContext, image_id: str, member_id: str, status: str) -> Member:
        """Accept, reject or reset (pending) a share; only the member project (or an admin) may."""
        if status not in MEMBER_STATUSES:
            raise BadRequest("Invalid member status {s}; one of: {all}.", s=status, all=", ".join(MEMBER_STATUSES))
        with self._db.begin() as s:
            row = self._shared_row(s, ctx, image_id)
            m = s.get(t.ImageMember, (row.id, member_id))
            if m is None or not (ctx.is_admin or row.owner == ctx.project_id or member_id == ctx.project_id):
                raise NotFound("Member {member} not found for image {id}.", member=member_id, id=row.id)
            policy.require_write(ctx, "modify_member")
            if not ctx.is_admin and member_id != ctx.project_id:
                raise Forbidden("Only the member project may change its membership status.")
            m.status = status
            m.updated_at = utcnow()
            s.flush()
            return _member(m)

    def remove_member(self, ctx: AuthContext, image_id: str, member_id: str) -> None:
        """Stop sharing with a project; owner only."""
        with self._db.begin() as s:
            row = self._shared_row(s, ctx, image_id)
            m = s.get(t.ImageMember, (row.id, member_id))
            if m is None or not (ctx.is_admin or row.owner == ctx.project_id or member_id == ctx.project_id):
                raise NotFound("Member {member} not found for image {id}.", member=member_id, id=row.id)
            self._require_owner(ctx, row, "delete_member")
            s.delete(m)

    # -- helpers ---------------------------------------------------------------------------------

    def _check_visibility(self, ctx: AuthContext, visibility: str) -> None:
        if visibility not in VISIBILITIES:
            raise BadRequest("Invalid visibility {v}; one of: {all}.", v=visibility, all=", ".join(VISIBILITIES))
        if visibility == "public":
            policy.require_admin(ctx, "publicize_image")

    @staticmethod
    def _check_formats(disk_format: str | None, container_format: str | None) -> None:
        if disk_format is not None and disk_format not in SUPPORTED_FORMATS:
            raise unsupported(disk_format)
        if container_format is not None and container_format not in CONTAINER_FORMATS:
            raise BadRequest("container_format {c} is not supported; supported: {all}.",
                             c=container_format, all=", ".join(CONTAINER_FORMATS))

    def _apply(self, ctx: AuthContext, row: t.Image, op: PatchOp) -> None:
        if op.op not in ("add", "replace", "remove"):
            raise BadRequest("Unsupported JSON-patch operation {op}; use add, replace or remove.", op=op.op)
        if not op.path.startswith("/"):
            raise BadRequest("JSON-patch path {p} must start with '/'.", p=op.path)
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op.path[1:].split("/")]
        name = parts[0]
        if name in READ_ONLY or name.startswith(RESERVED_PREFIX):
            _check_property(name, "")
        if op.op == "add" and op.add_must_be_new and (
                name in CORE or name == "tags" or name in (row.properties or {})):
            # Glance with the v2.0 patch type: core attributes and tags always exist.
            raise Conflict("Property {name} already present.", name=name)
        if name == "tags":
            self._patch_tags(row, op, parts[1:])
        elif len(parts) != 1:
            raise BadRequest("JSON-patch path {p} is not supported.", p=op.path)
        elif name in CORE:
            if op.op == "remove":
                raise Forbidden("Attribute '{key}' cannot be removed.", key=name)
            self._set_core(ctx, row, name, op.value)
        else:
            self._patch_property(row, op, name)

    def _patch_tags(self, row: t.Image, op: PatchOp, rest: list[str]) -> None:
        tags = list(row.tags or ())
        if not rest:
            if op.op == "remove":
                tags = []
            elif isinstance(op.value, list):
                tags = list(dict.fromkeys(_check_tag(x) for x in op.value))
            else:
                raise BadRequest("/tags must be a list of strings.")
        elif len(rest) == 1:
            where = rest[0]
            if where == "-" and op.op == "add":
                tag = _check_tag(op.value)
                if tag not in tags:
                    tags.append(tag)
            elif where.isdigit() and int(where) < len(tags) + (op.op == "add"):
                index = int(where)
                if op.op == "remove":
                    tags.pop(index)
                elif op.op == "add":
                    tags.insert(index, _check_tag(op.value))
                else:
                    tags[index] = _check_tag(op.value)
            else:
                raise Conflict(detail=f"Tag index {where} is out of range.")
        else:
            raise BadRequest("JSON-patch path /tags/{p} is not supported.", p="/".join(rest))
        tags = list(dict.fromkeys(tags))
        if len(tags) > MAX_TAGS:
            raise Forbidden("An image may have at most {n} tags.", n=MAX_TAGS)
        row.tags = tags

    def _set_core(self, ctx: AuthContext, row: t.Image, name: str, value: Any) -> None:
        if name == "name":
            if value is not None and (not isinstance(value, str) or len(value) > 255):
                raise BadRequest("name must be a string of at most 255 characters or null.")
            row.name = value
        elif name == "visibility":
            if not isinstance(value, str):
                raise BadRequest("visibility must be a string.")
            self._check_visibility(ctx, value)
            row.visibility = value
        elif name in ("protected", "os_hidden"):
            if not isinstance(value, bool):
                raise BadRequest("{name} must be a boolean.", name=name)
            setattr(row, name, value)
        elif name in ("min_ram", "min_disk"):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT32:
                raise BadRequest("{name} must be an integer from 0 to {high}.", name=name, high=MAX_INT32)
            setattr(row, name, value)
        elif name == "owner":
            policy.require_admin(ctx, "change the owner of an image")
            if not isinstance(value, str) or not value:
                raise BadRequest("owner must be a project id.")
            row.owner = value
        else:  # disk_format, container_format
            if row.status != "queued":
                raise Forbidden("Attribute {name} can be only replaced for a queued image.", name=name)
            if value is not None and not isinstance(value, str):
                raise BadRequest("{name} must be a string.", name=name)
            if name == "disk_format":
                self._check_formats(value, None)
            else:
                self._check_formats(None, value)
            setattr(row, name, value)

    def _patch_property(self, row: t.Image, op: PatchOp, name: str) -> None:
        props = dict(row.properties or {})
        if op.op == "remove":
            if name not in props:
                raise Conflict(detail=f"Property {name} does not exist.")
            del props[name]
        else:
            _check_property(name, op.value)
            if op.op == "replace" and name not in props:
                raise Conflict(detail=f"Property {name} does not exist.")
            if op.op == "add" and name not in props and len(props) >= MAX_PROPERTIES:
                raise Forbidden("An image may have at most {n} properties.", n=MAX_PROPERTIES)
            props[name] = op.value
        row.properties = props

    def _begin_upload(self, ctx: AuthContext, image_id: str, size: int | None) -> tuple[Image, int]:
        with self._db.begin() as s:
            row = self._row(s, ctx, image_id, lock=True)
            self._require_owner(ctx, row, "upload_image")
            if row.disk_format is None or row.container_format is None:
                raise BadRequest("Properties disk_format and container_format must be set prior to "
                                 "uploading image data.")
            self._check_formats(row.disk_format, row.container_format)
            if row.status != "queued":
                raise Conflict(detail=f"Image status transition from {row.status} to saving is not allowed.")
            used = s.scalar(select(func.coalesce(func.sum(t.Image.size), 0))
                            .where(t.Image.owner == row.owner, t.Image.id != row.id)) or 0
            if size is not None:
                self._check_limits(size, int(used))
            done = s.execute(update(t.Image).where(t.Image.id == row.id, t.Image.status == "queued")
                             .values(status="saving", updated_at=utcnow()))
            if getattr(done, "rowcount", 1) != 1:
                raise Conflict(detail="Another upload to this image is in progress.")
            s.refresh(row)
            return _image(row), int(used)

    def _check_limits(self, size: int, used: int) -> None:
        limit = self._config.max_image_bytes
        if limit and size > limit:
            raise PayloadTooLarge("Image exceeds the maximum image size of {limit} bytes.", limit=limit)
        quota = self._config.quota_bytes
        if quota and used + size > quota:
            raise QuotaExceeded(resource=QUOTA_NAME, requested=size, used=used, limit=quota)

    def _requeue(self, image_id: str) -> None:
        # Called while another error propagates: never let a second failure hide the first.
        try:
            with self._db.begin() as s:
                s.execute(update(t.Image).where(t.Image.id == image_id, t.Image.status == "saving")
                          .values(status="queued", updated_at=utcnow()))
        except Exception:
            log.exception("could not put image %s back to queued after a failed upload", image_id)
