"""The dataplane protocol: make this host's networking match a ``HostNetworkState``.

Implementations: ``linux.LinuxDataplane`` (bridges, taps, namespaces, dnsmasq, iptables-nft,
nft) and ``fake.FakeDataplane`` (records what it was asked; functional tests only).  The agent's
``NetworkReconciler`` calls ``apply`` on start, periodically, and before a VM with NICs starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from yunstack.compute.driver import Nic
from yunstack.errors import NotFound
from yunstack.network.dataplane.dhcp import port_ipv4
from yunstack.network.dataplane.naming import Names
from yunstack.network.desired import HostNetworkState


def nic_for_port(names: Names, state: HostNetworkState | None, port_id: str, dns_domain: str) -> Nic:
    """The NIC of port ``port_id`` in ``state``: its tap, MAC, bridge and what its DHCP lease
    carries.  ``NotFound`` for a port that ``state`` does not contain."""
    port = next((p for p in state.ports if p.id == port_id), None) if state is not None else None
    if state is not None and port is not None:
        return Nic(tap=names.tap(port.id), mac=port.mac_address.lower(), bridge=names.bridge(port.network_id),
                   ipv4=port_ipv4(state, port, dns_domain))
    raise NotFound(kind="port", id=port_id)


@dataclass(frozen=True, kw_only=True)
class ApplyReport:
    """What one ``apply`` did.  Names are host object names, e.g. ``link:ys3fb0f1e2d3c4b``."""

    created: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()  # "<kind> <id>: <reason>" of each object that was not applied
    seconds: float = 0.0

    @property
    def noop(self) -> bool:
        return not (self.created or self.changed or self.removed)


@runtime_checkable
class Dataplane(Protocol):
    """The networking of one host, owned by one yunstack installation (one state directory)."""

    async def apply(self, state: HostNetworkState) -> ApplyReport:
        """Make the host match ``state``; idempotent.

        Creates what is missing, updates what changed, and removes every object of *this*
        installation that ``state`` no longer mentions.  Objects of other installations (other
        state directories) and of anything else on the host are never touched.  Raises
        ``DriverError`` when the host refused a change; a later ``apply`` retries.
        """

    async def teardown(self) -> None:
        """Remove every host object of this installation and restore what it changed globally.

        Final: an ``apply`` still under way (or a late one, from a state fetched before) does
        nothing afterwards, so a stopping agent leaves nothing behind.  A new agent uses a new
        dataplane object.
        """

    def nic_for_port(self, port_id: str) -> Nic:
        """The NIC QEMU should use for a port of the last applied state (tap, MAC, bridge).

        The tap exists and is plugged into its bridge once ``apply`` returned.  Raises
        ``NotFound`` for a port that the last applied state did not contain.
        """
