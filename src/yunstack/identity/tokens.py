"""Fernet tokens: encrypted, authenticated, no database row per token, keys rotated on disk.

Key repository layout follows Keystone: files named 0..N in one directory; ``0`` is the staged key
(next primary), the highest number is the primary that encrypts, the rest only decrypt.  Rotation
promotes the staged key, stages a new one and drops the oldest beyond ``max_active_keys``, so tokens
issued before a rotation stay valid until they expire.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from yunstack.errors import Unauthorized

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, kw_only=True)
class TokenPayload:
    user_id: str
    methods: tuple[str, ...]
    project_id: str | None
    expires_at: datetime
    audit_ids: tuple[str, ...]
    app_cred_id: str | None = None
    issued_at: datetime | None = None


class KeyRepository:
    """The on-disk Fernet keys."""

    def __init__(self, path: Path, max_active_keys: int = 3) -> None:
        self.path = path
        self.max_active_keys = max(2, max_active_keys)

    def _indexes(self) -> list[int]:
        if not self.path.is_dir():
            return []
        return sorted(int(p.name) for p in self.path.iterdir() if p.name.isdigit())

    def _write(self, index: int, key: bytes) -> None:
        tmp = self.path / f".{index}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        tmp.replace(self.path / str(index))

    def setup(self) -> None:
        """Create the repository with a staged and a primary key if it is empty."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._indexes():
            self._write(0, Fernet.generate_key())
            self._write(1, Fernet.generate_key())

    def rotate(self) -> int:
        """Promote the staged key to primary, stage a new key, prune; returns the new primary index."""
        self.setup()
        indexes = self._indexes()
        new_primary = max(indexes) + 1
        (self.path / "0").replace(self.path / str(new_primary))
        self._write(0, Fernet.generate_key())
        # Keep the staged key, the primary and the newest secondaries up to max_active_keys.
        keep = {0} | set(sorted(i for i in self._indexes() if i)[-(self.max_active_keys - 1):])
        for index in self._indexes():
            if index not in keep:
                (self.path / str(index)).unlink()
        return new_primary

    def load(self) -> list[bytes]:
        """Keys ordered primary first (what MultiFernet encrypts with), then the others."""
        indexes = self._indexes()
        ordered = [*sorted((i for i in indexes if i), reverse=True), 0]
        return [(self.path / str(i)).read_bytes().strip() for i in ordered if i in indexes]


class TokenCodec:
    """Turns payloads into Fernet tokens and back."""

    def __init__(self, keys: KeyRepository) -> None:
        self._keys = keys
        self._mtime = -1.0
        self._fernet: MultiFernet | None = None

    def _multi(self) -> MultiFernet:
        # Re-read keys when the repository changes, so `yun token rotate` takes effect without a restart.
        try:
            mtime = self._keys.path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if self._fernet is None or mtime != self._mtime:
            self._fernet = MultiFernet([Fernet(k) for k in self._keys.load()])
            self._mtime = mtime
        return self._fernet

    def encode(self, payload: TokenPayload) -> str:
        """The token; ``expires_at`` is kept to whole seconds (callers pass it floored)."""
        body: dict[str, object] = {
            "u": payload.user_id,
            "m": list(payload.methods),
            "p": payload.project_id,
            "e": int(payload.expires_at.timestamp()),
            "a": list(payload.audit_ids),
        }
        if payload.app_cred_id:
            body["c"] = payload.app_cred_id
        if payload.issued_at is not None:
            # Microseconds: the Fernet timestamp has whole seconds only, and a revocation event in
            # the same second as the issue must be told apart from it (before revokes, after not).
            body["i"] = (payload.issued_at - EPOCH) // MICROSECOND
        raw = json.dumps(body, separators=(",", ":")).encode()
        token = self._multi().encrypt(raw)
        # Fernet output is url-safe base64 with '=' padding; Keystone strips it, and so do we.
        return token.decode().rstrip("=")

    def decode(self, token: str) -> TokenPayload:
        """Decrypt and check expiry; any failure is the same 401, revealing nothing."""
        try:
            padded = token + "=" * (-len(token) % 4)
            raw = self._multi().decrypt(padded.encode())
            body = json.loads(raw)
            if "i" in body:
                issued = EPOCH + int(body["i"]) * MICROSECOND
            else:  # tokens issued before sub-second issue times: the Fernet timestamp
                issued = datetime.fromtimestamp(_timestamp(padded), UTC)
            payload = TokenPayload(
                user_id=str(body["u"]),
                methods=tuple(body["m"]),
                project_id=body.get("p"),
                expires_at=datetime.fromtimestamp(int(body["e"]), UTC),
                audit_ids=tuple(body["a"]),
                app_cred_id=body.get("c"),
                issued_at=issued,
            )
        except (InvalidToken, ValueError, KeyError, TypeError, UnicodeError) as exc:
            raise Unauthorized("The token is invalid.") from exc
        if payload.expires_at <= datetime.now(UTC):
            raise Unauthorized("The token has expired.")
        return payload


def _timestamp(token: str) -> int:
    # Fernet layout: version (1 byte) | timestamp (8 bytes, big-endian) | iv | ciphertext | hmac.
    data = base64.urlsafe_b64decode(token)
    return int.from_bytes(data[1:9], "big")
