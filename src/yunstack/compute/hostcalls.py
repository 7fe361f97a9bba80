"""Where the control plane meets its hosts' long-polls: wake-ups, and reads that a host answers.

``HostHub`` keeps no state that outlives the process (work itself is in the database).  It does two
things:

- ``wake(host)``: every long-poll of ``host`` looks at its queue again now (the compute service
  calls it after queueing work, through its ``notify`` hook);
- ``network_changed(hosts)``: those hosts' network state changed (the network service's change
  feed says so after a commit); their next long-poll answers ``network=True`` at once, and the
  agent reconciles its dataplane then instead of at its next period (a host's first long-poll
  on a control plane process is told too: what changed while it was down had no one to tell);
- ``call(host, ...)``: queue a read (console output, the serial socket) for the host, wake it, and
  wait for its answer; a host that does not answer in time is a 409 that names it.

Waiters are callbacks so that both a blocking wait (``LocalControlPlane``, a worker thread) and an
async one (the HTTP route, an event loop) can be woken from any thread.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from yunstack.agent.link import Answer, HostCall
from yunstack.errors import Conflict, NotFound

CALL_TIMEOUT = 15.0  # how long a console read waits for the host's answer
# A host that has not long-polled for this long is not connected: reads fail at once instead of waiting.
CONNECTED_GRACE = 40.0


@dataclass
class _Pending:
    call: HostCall
    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None


class HostHub:
    def __init__(self, call_timeout: float = CALL_TIMEOUT) -> None:
        self.call_timeout = call_timeout
        self._lock = threading.Lock()
        self._waiters: dict[str, set[Callable[[], None]]] = {}
        self._queued: dict[str, list[_Pending]] = {}  # not yet handed out
        self._asked: dict[str, dict[str, _Pending]] = {}  # handed out, waiting for the answer
        self._seen: dict[str, float] = {}  # host -> monotonic time of its last poll
        self._network: set[str] = set()  # hosts whose network state changed since their last wait
        self._told: set[str] = set()  # hosts this process has answered a wait of
        self.closing = False  # the control plane is stopping: long-polls end now, empty

    # -- waking ----------------------------------------------------------------------------------

    def subscribe(self, host: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (from any thread) when ``host`` has news; returns the unsubscribe function."""
        with self._lock:
            self._waiters.setdefault(host, set()).add(wake)
            self._seen[host] = time.monotonic()

        def unsubscribe() -> None:
            with self._lock:
                self._waiters.get(host, set()).discard(wake)
                self._seen[host] = time.monotonic()

        return unsubscribe

    def wake(self, host: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(host, ()))
        for wake in waiters:
            wake()

    def network_changed(self, hosts: Iterable[str]) -> None:
        """``hosts``' network state changed: each one's next (or current) long-poll says so."""
        hosts = set(hosts)
        with self._lock:
            self._network |= hosts
        for host in hosts:
            self.wake(host)

    def take_network(self, host: str) -> bool:
        """Whether ``host``'s network state changed since it was last told (telling it now).

        A host's first wait on this process is told too: changes committed while the control
        plane was down, or just before it stopped, had no one to tell them.
        """
        with self._lock:
            first = host not in self._told
            self._told.add(host)
            if host not in self._network and not first:
                return False
            self._network.discard(host)
            return True

    def close(self) -> None:
        """Shutting down: every long-poll returns (empty) at once, so none holds up the stop."""
        self.closing = True
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
        for wake in waiters:
            wake()

    def connected(self, host: str) -> bool:
        with self._lock:
            if self._waiters.get(host):
                return True
            seen = self._seen.get(host)
        return seen is not None and time.monotonic() - seen < CONNECTED_GRACE

    # -- reads -----------------------------------------------------------------------------------

    def take_calls(self, host: str) -> tuple[HostCall, ...]:
        """The reads queued for ``host``, handed out now (each once)."""
        with self._lock:
            queued = self._queued.pop(host, [])
            asked = self._asked.setdefault(host, {})
            for pending in queued:
                asked[pending.call.id] = pending
        return tuple(p.call for p in queued)

    def has_calls(self, host: str) -> bool:
        with self._lock:
            return bool(self._queued.get(host))

    def answer(self, host: str, answer: Answer) -> None:
        """Record ``host``'s answer; a call id that was not handed to this host is not found."""
        with self._lock:
            pending = self._asked.get(host, {}).pop(answer.call_id, None)
        if pending is None:
            raise NotFound("Call {id} could not be found.", id=answer.call_id)
        pending.answer = answer
        pending.done.set()

    def call(self, host: str, instance_id: str, kind: str, length: int | None = None, session: str = "") -> str:
        """Ask ``host`` for a read and wait for its answer (blocking; call from a worker thread)."""
        if not self.connected(host):
            raise Conflict("Host {host} is not connected: no agent of it is polling the control plane.",
                           host=host)
        pending = _Pending(HostCall(id=secrets.token_hex(8), instance_id=instance_id, kind=kind, length=length,
                                    session=session))
        with self._lock:
            self._queued.setdefault(host, []).append(pending)
        self.wake(host)
        if not pending.done.wait(self.call_timeout):
            with self._lock:
                queued = self._queued.get(host, [])
                if pending in queued:
                    queued.remove(pending)
                self._asked.get(host, {}).pop(pending.call.id, None)
            raise Conflict("Host {host} did not answer within {t:.0f} s.", host=host, t=self.call_timeout)
        answer = pending.answer
        assert answer is not None
        if answer.error is not None or answer.result is None:
            raise Conflict("Host {host} could not read {kind} of instance {id}: {why}", host=host, kind=kind,
                           id=instance_id, why=answer.error or "no answer")
        return answer.result
