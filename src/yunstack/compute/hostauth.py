"""Who a compute host is, and what it may touch: join tokens, per-host credentials, ownership.

An admin adds a host by name and gets a one-time join token (it expires); the host's agent
exchanges it once for its own credential, a random secret it keeps and presents on every call.
Only SHA-256 hashes of both are stored.  A host sees only its own work: the agent routes ask
``owns_instance``/``may_read_image``/``may_upload`` before any call that names an instance or image.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import operations, states
from yunstack.db.tables import compute as t
from yunstack.db.tables import hosts as h
from yunstack.errors import BadRequest, Unauthorized
from yunstack.identity import policy
from yunstack.identity.context import AuthContext
from yunstack.volume.service import VolumeService

JOIN_TOKEN_TTL = timedelta(hours=1)
CREDENTIAL_CACHE_SECONDS = 60.0  # how long one API process trusts a credential it has checked
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")  # a host name: DNS label(s)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class JoinToken:
    host: str
    token: str
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class Joined:
    host: str
    credential: str


class KnownCredentials:
    """Credentials (their hashes) this API process checked lately, and whose host they are.

    Every agent call carries its credential; looking it up each time was one query per call, a
    large part of what a thousand idle hosts cost.  A credential that is replaced (a host joins
    again) or revoked (its service is deleted) is forgotten at once in the process that did it;
    another API process trusts it for at most ``CREDENTIAL_CACHE_SECONDS`` more.
    """

    def __init__(self, seconds: float = CREDENTIAL_CACHE_SECONDS) -> None:
        self._seconds = seconds
        self._known: dict[str, tuple[str, float]] = {}  # hash -> (host, time.monotonic() checked)
        self._lock = threading.Lock()

    def host(self, digest: str) -> str | None:
        with self._lock:
            known = self._known.get(digest)
            if known is None or time.monotonic() - known[1] >= self._seconds:
                self._known.pop(digest, None)
                return None
            return known[0]

    def remember(self, digest: str, host: str) -> None:
        with self._lock:
            if len(self._known) >= 100_000:  # (a flood of distinct valid credentials cannot be)
                self._known.clear()
            self._known[digest] = (host, time.monotonic())

    def forget(self, host: str) -> None:
        with self._lock:
            self._known = {d: known for d, known in self._known.items() if known[0] != host}


class HostAuthService:
    def __init__(self, db: sessionmaker[Session], ttl: timedelta = JOIN_TOKEN_TTL,
                 known: KnownCredentials | None = None, volumes: VolumeService | None = None) -> None:
        self._db = db
        self._volumes = volumes
        self.ttl = ttl
        self.known = known or KnownCredentials()

    def add_host(self, ctx: AuthContext, name: str) -> JoinToken:
        """A one-time join token for host ``name`` (admin only).  Joining again replaces its credential."""
        policy.require_admin(ctx, "yunstack:hosts:add")
        if not HOST_NAME.match(name):
            raise BadRequest("Invalid host name {name!r}: letters, digits, dots and dashes, at most 63.",
                             name=name)
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._db.begin() as s:
            s.add(h.HostJoinToken(token_hash=_hash(token), host=name, created_at=now, expires_at=now + self.ttl))
        return JoinToken(host=name, token=token, expires_at=now + self.ttl)

    def join(self, token: str) -> Joined:
        """Spend a join token for a new credential of its host; a used or expired token is 401."""
        now = datetime.now(UTC)
        credential = secrets.token_urlsafe(32)
        with self._db.begin() as s:
            row = s.get(h.HostJoinToken, _hash(token))
            if row is None or row.used_at is not None or row.expires_at <= now:
                raise Unauthorized("The join token is invalid, used or expired.")
            # Spend it with a guarded update: of two concurrent joins with one token, one wins.
            spent = s.execute(update(h.HostJoinToken).where(h.HostJoinToken.token_hash == row.token_hash,
                                                            h.HostJoinToken.used_at.is_(None))
                              .values(used_at=now).execution_options(synchronize_session=False))
            if getattr(spent, "rowcount", 1) != 1:
                raise Unauthorized("The join token is invalid, used or expired.")
            existing = s.get(h.HostCredential, row.host)
            if existing is None:
                s.add(h.HostCredential(host=row.host, secret_hash=_hash(credential), created_at=now))
            else:
                existing.secret_hash, existing.created_at = _hash(credential), now
            joined = Joined(host=row.host, credential=credential)
        self.known.forget(joined.host)  # the old credential stops working here at once
        return joined

    def issue(self, host: str) -> str:
        """A fresh credential for ``host`` without a token: the all-in-one cloud's own agent."""
        credential = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._db.begin() as s:
            existing = s.get(h.HostCredential, host)
            if existing is None:
                s.add(h.HostCredential(host=host, secret_hash=_hash(credential), created_at=now))
            else:
                existing.secret_hash, existing.created_at = _hash(credential), now
        self.known.forget(host)
        return credential

    def remembered(self, credential: str) -> str | None:
        """The host of a credential checked lately (``KnownCredentials``); None: ask ``authenticate``."""
        return self.known.host(_hash(credential))

    def authenticate(self, credential: str) -> str:
        """The host a credential belongs to; 401 when it belongs to none."""
        digest = _hash(credential)
        host = self.known.host(digest)
        if host is not None:
            return host
        with self._db() as s:
            host = s.scalar(select(h.HostCredential.host).where(h.HostCredential.secret_hash == digest))
        if host is None:
            raise Unauthorized("The host credential is not valid.")
        self.known.remember(digest, host)
        return host

    # -- what a host may touch -------------------------------------------------------------------

    def owns_instance(self, host: str, instance_id: str) -> bool:
        """Its instance, or one whose queued step is this host's (the other side of a migration)."""
        with self._db() as s:
            row = s.get(t.Instance, instance_id)
            if row is None or row.vm_state == states.DELETED:
                return False
            return row.host == host or host in operations.hosts_of(s, row.id)

    def owns_volume(self, host: str, volume_id: str) -> bool:
        """A volume that ``host`` keeps (its storage host): the only ones whose steps it may report."""
        return self._volumes is not None and self._volumes.owned_by(host, volume_id)

    def may_read_image(self, host: str, image_id: str) -> bool:
        """An image that an instance on ``host`` boots from, or that its queued work names (rescue, unshelve).

        A migration's destination reads the image of the guest it receives (its disks are overlays);
        a storage host reads the image a volume it is making starts from.
        """
        if self._volumes is not None and self._volumes.image_of_step(host, image_id):
            return True
        with self._db() as s:
            rows = s.scalars(select(t.Instance).where(t.Instance.host == host)).all()
            if any(r.image_id == image_id for r in rows):
                return True
            # Its steps' images (rescue, unshelve), and the images of guests whose step it runs (a
            # migration's destination receives overlays of the guest's image).
            for step in operations.steps_on(s, host):
                row = s.get(t.Instance, step.instance_id)
                if _work_image(step.args) == image_id or (row is not None and row.image_id == image_id):
                    return True
            return False

    def may_upload(self, host: str, instance_id: str, image_id: str) -> bool:
        """Only the image that the instance's queued snapshot or shelve is writing, or that an upload
        step of a volume this host keeps is writing (``instance_id`` is then the volume's id)."""
        if self._volumes is not None and self._volumes.uploads_into(host, instance_id, image_id):
            return True
        with self._db() as s:
            row = s.get(t.Instance, instance_id)
            if row is None or row.host != host:
                return False
            step = operations.queued(row)
            return step is not None and step.host == host and _work_image(step.args) == image_id


def _work_image(args: object) -> str | None:
    image = getattr(args, "image_id", None)
    return str(image) if image else None
