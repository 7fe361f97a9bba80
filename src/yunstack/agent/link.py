"""The agent's one narrow interface to the control plane.

The embedded agent of `yun up` uses ``compute.agentlink.LocalControlPlane`` (direct service calls);
a remote agent per host will use an HTTP implementation of the same protocol.  Every method is
synchronous and short; the agent calls them from a worker thread.  The messages are the typed
models of ``yunstack.protocol``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from yunstack.compute.driver import HostInfo, InstanceInfo
from yunstack.network.desired import HostNetworkState
from yunstack.protocol import Outcome, SpecData, Work  # the typed messages (re-exported for the link's users)

__all__ = ["ControlPlane", "Outcome", "SpecData", "Work"]


class ControlPlane(Protocol):
    def pending_work(self, host: str) -> Sequence[Work]:
        """Operations queued for instances on ``host``."""

    def spec(self, instance_id: str) -> SpecData:
        """Everything needed to build the instance's guest."""

    def fetch_image(self, image_id: str, dest: Path) -> str:
        """Write the image's bytes to ``dest``; returns its disk format."""

    def finish(self, outcome: Outcome) -> None:
        """Record an operation's result (clears the queued work)."""

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

    def network_state(self, host: str) -> HostNetworkState:
        """Everything this host's dataplane must realise (bridges, ports, rules, routers)."""

    def report_memory(self, host: str, entry: Mapping[str, Any]) -> None:
        """Report the memory manager's latest ledger entry (for admission, the API and history)."""
