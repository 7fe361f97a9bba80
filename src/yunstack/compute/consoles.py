"""Serial consoles: short-lived one-time tokens, and the guest's serial socket behind a token.

``POST /servers/{id}/remote-consoles`` (or the legacy action) gets a token bound to one server;
the websocket at ``/compute/console/serial?token=...`` redeems it once, within ``TOKEN_TTL``
seconds, for the path of the guest's serial socket, which the API then bridges to the websocket.
The host's agent connects the guest's serial socket (its driver owns it) to a relay websocket it
opens to the control plane (``api/console_relay.py``), so a guest on another machine is reached the
same way as one on this machine.  Tokens live in memory: a restart invalidates them, which only means
asking for a new URL.
"""

from __future__ import annotations

import secrets
import threading
import time

from sqlalchemy.orm import Session, sessionmaker

from yunstack.compute import states
from yunstack.compute.hostcalls import HostHub
from yunstack.db.tables import compute as t
from yunstack.errors import Conflict, NotFound
from yunstack.identity import policy
from yunstack.identity.context import AuthContext

TOKEN_TTL = 600.0  # Nova's [consoleauth] token_ttl


class ConsoleTokens:
    """One-time tokens, each bound to a server, valid for ``ttl`` seconds."""

    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self.ttl = ttl
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def issue(self, instance_id: str) -> str:
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}  # forget expired ones
            self._tokens[token] = (instance_id, now + self.ttl)
        return token

    def redeem(self, token: str) -> str:
        """The server the token was issued for; the token is spent.  NotFound when invalid or expired."""
        with self._lock:
            found = self._tokens.pop(token, None)
        if found is None or found[1] <= time.monotonic():
            raise NotFound("The console token is invalid, used or expired.")
        return found[0]


class ConsoleOps:
    """The serial console use cases of ``ComputeService``."""

    _db: sessionmaker[Session]
    hub: HostHub
    consoles: ConsoleTokens

    def _row(self, s: Session, ctx: AuthContext, server_id: str) -> t.Instance:
        raise NotImplementedError

    def serial_console_token(self, ctx: AuthContext, server_id: str) -> str:
        """A one-time token for the server's serial console; 409 unless the server is running."""
        policy.require_write(ctx, "os_compute_api:os-remote-consoles")
        with self._db() as s:
            row = self._row(s, ctx, server_id)
            _require_ready(row)
        return self.consoles.issue(row.id)

    def serial_console_target(self, token: str) -> tuple[str, str]:
        """Redeem ``token``: (host, instance id) of the running server it names."""
        instance_id = self.consoles.redeem(token)
        with self._db() as s:
            row = s.get(t.Instance, instance_id)
            if row is None or row.vm_state == states.DELETED:
                raise NotFound("Instance {id} could not be found.", id=instance_id)
            _require_ready(row)
            host = row.host
        if not host:
            raise Conflict("Instance {id} is on no host.", id=instance_id)
        return host, instance_id

    def relay_serial_console(self, host: str, instance_id: str, session: str) -> None:
        """Have ``host`` connect the guest's serial port to the relay ``session``.

        Returns once the host's agent has connected its end (``/agent/v1/hosts/{host}/consoles/
        {session}``), or raises with its reason.  The same path serves the all-in-one cloud and a
        host on another machine: the control plane never opens a host's socket itself.
        """
        self.hub.call(host, instance_id, "serial_relay", session=session)


def _require_ready(row: t.Instance) -> None:
    if row.vm_state != states.ACTIVE or row.host is None:
        raise Conflict("Instance {id} is not ready: its serial console is available while it is ACTIVE.",
                       id=row.id)
