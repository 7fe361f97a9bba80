"""The server creates still running in this process.

A create commits its rows, then makes the ports and queues the spawns in transactions of their
own; a build with no queued spawn after a while is one whose process stopped in between, and the
host's repair pass errors it (``agentlink.INTERRUPTED_CREATE``).  A create that is merely slow (a
loaded machine, a lock wait) must not look the same: the repair pass skips what is listed here.
Another process's creates are judged by the time alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class CreatesInFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scopes: dict[object, set[str]] = {}

    @contextlib.contextmanager
    def scope(self) -> Iterator[set[str]]:
        """One create: the ids added to the yielded set are in flight until it ends, however it ends."""
        token, mine = object(), set[str]()
        with self._lock:
            self._scopes[token] = mine
        try:
            yield mine
        finally:
            with self._lock:
                del self._scopes[token]

    def __contains__(self, instance_id: object) -> bool:
        with self._lock:
            scopes = list(self._scopes.values())
        return any(instance_id in ids for ids in scopes)
