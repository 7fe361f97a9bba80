"""A lock per key (an image id) that lives only while someone holds or waits for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator


class KeyedLocks:
    """``async with locks.hold(key)``: one holder per key at a time; a key nobody uses is forgotten, so
    the table does not grow with every image a backend ever saw."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, holders and waiters

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __iter__(self) -> Iterator[str]:
        """The keys held or waited for now."""
        return iter(list(self._locks))
