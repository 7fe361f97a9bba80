"""Server-side sessions: the browser holds only a random id; the Keystone token stays here.

A session ends when its token expires, at sign-out, or when it is the least recently used one and
the store is full (``limit``), or its user's (``per_user``: one user signing in again and again
ends only their own oldest sessions, never everybody else's).  A session ended by the store has its
sign-in token revoked, as at sign-out.  Sessions live in this process's memory: ``yun up`` runs one API
process, and a restart signs everyone out (their tokens stay valid until they expire, as after a
closed browser tab).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from yunstack.client import YunClient
from yunstack.client.keystone import Project, Scope

COOKIE = "yun_session"


@dataclass(kw_only=True)
class Session:
    """One signed-in browser: its client (holding the token), the token's scope, its CSRF token."""

    id: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    client: YunClient
    root_token: str  # the unscoped token of the sign-in; the client's tokens are rescoped from it
    scope: Scope
    projects: list[Project] = field(default_factory=list)  # the switcher's choices, read at sign-in
    flash: tuple[str, str] | None = None  # ("note" or "error", text) for the next page: an action's outcome

    @property
    def expires_at(self) -> float:
        return self.scope.expires_at.timestamp()

    def pop_flash(self) -> tuple[str, str] | None:
        message, self.flash = self.flash, None
        return message


class Sessions:
    """The store: at most ``limit`` sessions and ``per_user`` of one user, each dropped when its token expires."""

    def __init__(self, limit: int = 1000, clock: Callable[[], float] = time.time, per_user: int = 10) -> None:
        self.limit = limit
        self.per_user = per_user
        self._clock = clock
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, session: Session) -> None:
        dropped = []
        with self._lock:
            now = self._clock()
            dropped = [s for s in self._by_id.values() if s.expires_at <= now]
            for s in dropped:
                del self._by_id[s.id]
            mine = [s for s in self._by_id.values() if s.scope.user_id == session.scope.user_id]
            for s in mine[:max(0, len(mine) - self.per_user + 1)]:  # least recently used first
                dropped.append(self._by_id.pop(s.id))
            while len(self._by_id) >= self.limit:
                dropped.append(self._by_id.popitem(last=False)[1])
            self._by_id[session.id] = session
        for s in dropped:
            end(s)

    def get(self, session_id: str | None) -> Session | None:
        """The live session with this id (now the most recently used), or None."""
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is None:
                return None
            if session.expires_at <= self._clock():
                del self._by_id[session_id]
            else:
                self._by_id.move_to_end(session_id)
                return session
        session.client.close()
        return None

    def pop(self, session_id: str) -> Session | None:
        with self._lock:
            return self._by_id.pop(session_id, None)


def end(session: Session) -> None:
    """Revoke a session's sign-in token (Keystone revokes the project tokens made from it) and
    close its client; a failure leaves the token to expire on its own."""
    with contextlib.suppress(Exception):
        session.client.revoke(session.root_token)
    session.client.close()
