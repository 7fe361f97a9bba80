"""Fernet tokens and their key repository."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from yunstack.errors import Unauthorized
from yunstack.identity.tokens import KeyRepository, TokenCodec, TokenPayload


def payload(**kw: object) -> TokenPayload:
    base: dict[str, object] = {"user_id": "u1", "methods": ("password",), "project_id": "p1",
                               "expires_at": datetime.now(UTC) + timedelta(hours=1), "audit_ids": ("a1",)}
    base.update(kw)
    return TokenPayload(**base)  # type: ignore[arg-type]


def test_a_token_round_trips_without_any_database(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path / "keys")
    repo.setup()
    codec = TokenCodec(repo)
    token = codec.encode(payload(app_cred_id="c1"))
    assert "=" not in token and len(token) < 400
    back = codec.decode(token)
    assert (back.user_id, back.project_id, back.audit_ids, back.app_cred_id) == ("u1", "p1", ("a1",), "c1")
    assert back.issued_at is not None


def test_tokens_survive_one_rotation_and_die_after_enough_rotations(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path / "keys", max_active_keys=3)
    repo.setup()
    old = TokenCodec(repo).encode(payload())
    repo.rotate()
    assert TokenCodec(repo).decode(old).user_id == "u1"
    repo.rotate()
    repo.rotate()
    with pytest.raises(Unauthorized):
        TokenCodec(repo).decode(old)
    assert len(repo.load()) == 3


def test_a_rotation_is_seen_by_a_running_codec(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path / "keys")
    repo.setup()
    codec = TokenCodec(repo)
    before = codec.encode(payload())
    repo.rotate()
    after = codec.encode(payload())
    assert codec.decode(before).user_id == codec.decode(after).user_id == "u1"


def test_expired_and_tampered_tokens_are_refused(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path / "keys")
    repo.setup()
    codec = TokenCodec(repo)
    with pytest.raises(Unauthorized, match="expired"):
        codec.decode(codec.encode(payload(expires_at=datetime.now(UTC) - timedelta(seconds=1))))
    token = codec.encode(payload())
    flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    with pytest.raises(Unauthorized):
        codec.decode(flipped)


def test_keys_are_private_files(tmp_path: Path) -> None:
    repo = KeyRepository(tmp_path / "keys")
    repo.setup()
    assert all((p.stat().st_mode & 0o077) == 0 for p in (tmp_path / "keys").iterdir())
