"""The agent's one narrow interface to the control plane.

Two implementations: ``compute.agentlink.LocalControlPlane`` (direct service calls, in the
control-plane process) and ``agent.http.HttpControlPlane`` (the same calls over ``/agent/v1``,
serialized from these annotations by ``agent.wire``).  The messages are the typed models of
``yunstack.protocol``.  Every method is synchronous; the agent calls them from worker threads.  All
are short except ``wait``, the long-poll that hands out new work and the control plane's reads
(console output) as soon as there are any.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from yunstack.compute.driver import HostInfo, InstanceInfo
from yunstack.network.desired import HostNetworkState
from yunstack.protocol import Outcome, SpecData, Work  # the typed messages (re-exported for the link's users)

__all__ = ["Answer", "ConsoleSocket", "ControlPlane", "HostCall", "Outcome", "SpecData", "Wakeup", "Work", "work_key"]


def work_key(work: Work) -> str:
    """What names one piece of work an agent has: its task (``wait`` renews those and hands out the rest)."""
    return work.task_id or f"{work.instance_id} {work.op} {work.request_id}"


@dataclass(frozen=True, kw_only=True)
class HostCall:
    """A read the control plane asks of the host's driver, answered with ``ControlPlane.answer``."""

    id: str
    instance_id: str
    kind: str  # "console_output" | "serial_relay"
    length: int | None = None
    session: str = ""  # serial_relay: the relay the agent connects the guest's serial port to


@dataclass(frozen=True, kw_only=True)
class Wakeup:
    """What ``wait`` returns: work the agent is not running yet, reads to answer, and whether its
    network state changed since its last wait (then it fetches and applies it now, not at its period)."""

    work: tuple[Work, ...] = ()
    calls: tuple[HostCall, ...] = ()
    network: bool = False


@dataclass(frozen=True, kw_only=True)
class Answer:
    """The host's answer to one ``HostCall``: its text, or why it failed."""

    call_id: str
    result: str | None = None
    error: str | None = None


class ConsoleSocket(Protocol):
    """The host's end of a serial console relay (a websocket to the control plane); blocking."""

    def send(self, data: bytes) -> None: ...

    def recv(self) -> bytes | None:
        """The next bytes from the user, or None once the relay has closed."""

    def close(self) -> None: ...


class ControlPlane(Protocol):
    def pending_work(self, host: str) -> Sequence[Work]:
        """Operations queued for instances on ``host``."""

    def spec(self, instance_id: str) -> SpecData:
        """Everything needed to build the instance's guest."""

    def fetch_image(self, image_id: str, dest: Path) -> str:
        """Write the image's bytes to ``dest``; returns its disk format."""

    def finish(self, outcome: Outcome) -> None:
        """Record a step's result and end its task (a report of a run that no longer holds it changes nothing)."""

    def upload_snapshot(self, instance_id: str, image_id: str, path: Path) -> None:
        """Register a finished snapshot file as the image's data."""

    def progress(self, instance_id: str, request_id: str, task_state: str) -> None:
        """Report a named step of the running operation (``protocol.steps``, e.g. rebuild_spawning).

        The control plane shows it as the task state the operation declares for it.
        """

    def sync_power(self, host: str, infos: Sequence[InstanceInfo], busy: Collection[str]) -> Sequence[str]:
        """Reconcile observed power states, skipping ``busy`` guests (an operation owns them).

        Returns the ids of guests the control plane no longer knows (to destroy).
        """

    def heartbeat(self, host: str, info: HostInfo) -> None:
        """Report this host's resources; also says the agent is alive."""

    def network_state(self, host: str, tunnel_ip: str = "") -> HostNetworkState:
        """Everything this host's dataplane must realise (bridges, ports, rules, routers).

        ``tunnel_ip`` is this host's VXLAN endpoint ("" for none): the control plane records it
        and tells the other hosts of a shared network to send its frames there.
        """

    def report_memory(self, host: str, entry: Mapping[str, Any]) -> None:
        """Report the memory manager's latest ledger entry (for admission, the API and history)."""

    def wait(self, host: str, busy: Collection[str], timeout: float, owner: str = "") -> Wakeup:
        """Block until there is work for ``host`` not in ``busy`` (``work_key``s), or a read; at most ``timeout`` s.

        Returns at once when there is some; an empty ``Wakeup`` after ``timeout``.  The work is
        claimed for ``owner`` (this agent's run: host name and boot id) under a lease that each
        wait listing it in ``busy`` extends; a new owner for a host gets the old owner's unfinished
        steps back at once.  Each read is handed out once.
        """

    def answer(self, host: str, answer: Answer) -> None:
        """Answer a read that ``wait`` handed out to ``host``."""

    def open_console(self, session: str) -> ConsoleSocket:
        """Dial the control plane's end of the serial console relay ``session`` (a ``serial_relay`` call)."""
