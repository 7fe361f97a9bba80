"""Keypairs: per-user public keys (imported, or generated here with the private key shown once).

Fingerprints are Nova's: MD5 of the key blob in colon hex for ``ssh`` keys, SHA-1 of the DER
certificate for ``x509`` ones.  Admins may act on another user's keypairs (``user_id``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import string

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute.models import KeyPair
from yunstack.compute.quotas import QuotaService
from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest, Conflict, Forbidden, NotFound, QuotaExceeded
from yunstack.identity.context import AuthContext
from yunstack.types import utcnow

SAFE_NAME = set("_- " + string.digits + string.ascii_letters)
KEY_TYPES = ("ssh", "x509")


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def ssh_fingerprint(public_key: str) -> str:
    """Validate an OpenSSH public key line and return its MD5 fingerprint; BadRequest if invalid."""
    try:
        serialization.load_ssh_public_key(public_key.strip().encode())
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (ValueError, IndexError, binascii.Error, TypeError) as e:
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint") from e
    return _colon_hex(hashlib.md5(blob, usedforsecurity=False).digest())


def x509_fingerprint(pem: str) -> str:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as e:
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint") from e
    der = cert.public_bytes(serialization.Encoding.DER)
    return _colon_hex(hashlib.sha1(der, usedforsecurity=False).digest())


def generate_ssh_key() -> tuple[str, str]:
    """A new RSA-2048 pair as Nova makes it: (PEM private key, OpenSSH public key line).

    RSA rather than ed25519 because old guest sshd/dropbear builds only accept RSA.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} Generated-by-Nova"


def _keypair(row: t.KeyPair, private_key: str | None = None) -> KeyPair:
    return KeyPair(id=row.id, name=row.name, user_id=row.user_id, public_key=row.public_key,
                   fingerprint=row.fingerprint, type=row.type, created_at=row.created_at,
                   private_key=private_key)


def _not_found(name: str, user_id: str) -> NotFound:
    return NotFound("Keypair {name} not found for user {user_id}", name=name, user_id=user_id)


class KeyPairService:
    def __init__(self, db: sessionmaker[Session], quotas: QuotaService) -> None:
        self._db = db
        self._quotas = quotas

    def _owner(self, ctx: AuthContext, user_id: str | None, action: str) -> str:
        if user_id is None or user_id == ctx.user.id:
            return ctx.user.id
        if not ctx.is_admin:
            raise Forbidden(action=f"os_compute_api:os-keypairs:{action}")
        return user_id

    def create(self, ctx: AuthContext, *, name: str, public_key: str | None = None, key_type: str = "ssh",
               user_id: str | None = None) -> KeyPair:
        """Import ``public_key``, or generate a pair when it is None (the private key is returned
        once and never stored).  Duplicate name for the user is 409; past the quota 403."""
        owner = self._owner(ctx, user_id, "create")
        if not 1 <= len(name) <= 255:
            raise BadRequest("Keypair name must be string and between 1 and 255 characters long")
        if not set(name) <= SAFE_NAME:
            raise BadRequest("Keypair name contains unsafe characters")
        if key_type not in KEY_TYPES:
            raise BadRequest("Invalid keypair type {type!r}: ssh or x509.", type=key_type)
        private_key = None
        if public_key is None:
            if key_type != "ssh":
                raise BadRequest("Only ssh keypairs can be generated; import an x509 certificate.")
            private_key, public_key = generate_ssh_key()
        public_key = public_key.strip()
        fingerprint = ssh_fingerprint(public_key) if key_type == "ssh" else x509_fingerprint(public_key)
        try:
            with self._db.begin() as s:
                try:
                    self._quotas.check(s, ctx.project_id or "", {"key_pairs": 1}, user_id=owner)
                except QuotaExceeded as e:
                    raise QuotaExceeded("Quota exceeded, too many key pairs.", **e.context) from e
                if s.scalar(select(t.KeyPair.id).where(t.KeyPair.user_id == owner,
                                                       t.KeyPair.name == name)) is not None:
                    raise Conflict("Key pair '{name}' already exists.", name=name)
                row = t.KeyPair(name=name, user_id=owner, public_key=public_key, fingerprint=fingerprint,
                                type=key_type, created_at=utcnow())
                s.add(row)
                s.flush()
                return _keypair(row, private_key)
        except IntegrityError as e:
            raise Conflict("Key pair '{name}' already exists.", name=name) from e

    def list(self, ctx: AuthContext, *, user_id: str | None = None, limit: int | None = None,
             marker: str | None = None) -> list[KeyPair]:
        """The user's keypairs by name; ``marker`` is the last name of the previous page."""
        owner = self._owner(ctx, user_id, "index")
        q = select(t.KeyPair).where(t.KeyPair.user_id == owner).order_by(t.KeyPair.name)
        with self._db() as s:
            if marker is not None:
                if s.scalar(select(t.KeyPair.id).where(t.KeyPair.user_id == owner,
                                                       t.KeyPair.name == marker)) is None:
                    raise BadRequest("marker [{marker}] not found", marker=marker)
                q = q.where(t.KeyPair.name > marker)
            if limit is not None:
                q = q.limit(limit)
            return [_keypair(r) for r in s.scalars(q)]

    def _row(self, s: Session, owner: str, name: str) -> t.KeyPair:
        row = s.scalar(select(t.KeyPair).where(t.KeyPair.user_id == owner, t.KeyPair.name == name))
        if row is None:
            raise _not_found(name, owner)
        return row

    def get(self, ctx: AuthContext, name: str, *, user_id: str | None = None) -> KeyPair:
        owner = self._owner(ctx, user_id, "show")
        with self._db() as s:
            return _keypair(self._row(s, owner, name))

    def delete(self, ctx: AuthContext, name: str, *, user_id: str | None = None) -> None:
        owner = self._owner(ctx, user_id, "delete")
        with self._db.begin() as s:
            s.delete(self._row(s, owner, name))

    def get_for_boot(self, ctx: AuthContext, name: str) -> KeyPair:
        """The caller's keypair ``name`` for a server create; BadRequest as Nova when missing."""
        with self._db() as s:
            row = s.scalar(select(t.KeyPair).where(t.KeyPair.user_id == ctx.user.id, t.KeyPair.name == name))
            if row is None:
                raise BadRequest("Invalid key_name provided.")
            return _keypair(row)
