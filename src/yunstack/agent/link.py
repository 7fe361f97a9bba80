"""The agent's one narrow interface to the control plane.

The embedded agent of `yun up` uses ``compute.agentlink.LocalControlPlane`` (direct service calls);
a remote agent per host will use an HTTP implementation of the same protocol.  Every method is
synchronous and short; the agent calls them from a worker thread.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from yunstack.compute.driver import ConfigDrive, HostInfo, InstanceInfo
from yunstack.network.desired import HostNetworkState


@dataclass(frozen=True, kw_only=True)
class Work:
    """One queued operation for one instance on this host."""

    instance_id: str
    op: str
    args: Mapping[str, Any]
    request_id: str


@dataclass(frozen=True, kw_only=True)
class SpecData:
    """An instance's spec without host paths; the agent adds the cached image's path."""

    id: str
    name: str
    hostname: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    image_id: str
    config_drive: ConfigDrive | None
    extra: Mapping[str, str] = field(default_factory=dict)
    port_ids: tuple[str, ...] = ()  # the guest's NICs, in order; the dataplane knows their taps


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What an operation ended in; the control plane applies it and finishes the action record."""

    instance_id: str
    op: str
    request_id: str
    vm_state: str
    power_state: int
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


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
        """Show the next task state of the running operation (Nova's steps, e.g. rebuild_spawning)."""

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
