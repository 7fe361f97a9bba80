"""Password and secret hashing with argon2id (memory-hard, so GPUs gain little)."""

from __future__ import annotations

import os
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from yunstack.config import IdentityConfig


class Hasher:
    """Hashes and verifies secrets; verification never raises on a bad or foreign hash."""

    def __init__(self, config: IdentityConfig) -> None:
        self._ph = PasswordHasher(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
        )
        # Verifying against this when the user does not exist keeps the timing of a wrong name and
        # a wrong password alike, so the response says nothing about which part was wrong.
        self._dummy = self._ph.hash("not-a-real-password")
        # Each hash holds argon2_memory_kib for its duration: bound how many run at once so a burst
        # of logins costs queueing time, not gigabytes.
        self._slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))

    def hash(self, secret: str) -> str:
        with self._slots:
            return self._ph.hash(secret)

    def verify(self, stored: str | None, secret: str) -> bool:
        try:
            with self._slots:
                ok = self._ph.verify(stored or self._dummy, secret)
            return ok and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
