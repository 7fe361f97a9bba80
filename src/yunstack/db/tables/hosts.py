"""Compute hosts' identities: one-time join tokens and the per-host credential a token is exchanged for.

Only hashes are stored (SHA-256: both secrets are 256 random bits, so a slow hash adds nothing).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from yunstack.db.base import Base


class HostJoinToken(Base):
    __tablename__ = "host_join_token"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class HostCredential(Base):
    __tablename__ = "host_credential"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
