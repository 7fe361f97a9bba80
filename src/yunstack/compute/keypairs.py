"""Keypairs: per-user public keys (imported, or generated here with the private key shown once).

Fingerprints are Nova's: MD5 of the key blob in colon hex for ``ssh`` keys, SHA-1 of the DER
certificate for ``x509`` ones.  Admins may act on another user's keypairs (``user_id``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import string
from datetime import timedelta

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier
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
    except (ValueError, IndexError, binascii.Error, TypeError, UnsupportedAlgorithm) as e:  # "not a key": unknown type
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


def generate_x509_key(user_id: str) -> tuple[str, str]:
    """A new RSA-2048 key and a self-signed client certificate for it, as Nova generates ``x509``
    keypairs (used for WinRM certificate logins): (PEM private key, PEM certificate).

    The certificate names the user (a UPN in the subject alternative name, as WinRM maps it) and is
    valid for ten years, like Nova's.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id)])
    upn = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")  # Microsoft's userPrincipalName
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.OtherName(upn, _der_utf8(f"{user_id}@localhost"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    return private, cert.public_bytes(serialization.Encoding.PEM).decode()


def _der_utf8(text: str) -> bytes:
    """DER encoding of a UTF8String (the value type of a UPN other-name)."""
    raw = text.encode()
    if len(raw) < 0x80:
        return bytes([0x0C, len(raw)]) + raw
    size = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return bytes([0x0C, 0x80 | len(size)]) + size + raw


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
            private_key, public_key = generate_ssh_key() if key_type == "ssh" else generate_x509_key(owner)
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
