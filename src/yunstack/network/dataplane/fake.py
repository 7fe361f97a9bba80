"""A dataplane that only records what it is asked (functional tests and demos only)."""

from __future__ import annotations

from yunstack.compute.driver import Nic
from yunstack.network.dataplane.base import ApplyReport, nic_for_port
from yunstack.network.dataplane.naming import Names
from yunstack.network.desired import FdbEntry, HostNetworkState


class FakeDataplane:
    """Keeps every applied state in ``applied``; ``nic_for_port`` answers from the last one."""

    def __init__(self, tag: str = "fk") -> None:
        self.names = Names(tag)
        self.applied: list[HostNetworkState] = []
        self.torn_down = False

    @property
    def state(self) -> HostNetworkState | None:
        return self.applied[-1] if self.applied else None

    def fdb(self, network_id: str) -> tuple[FdbEntry, ...]:
        """The forwarding entries the last state gave the VXLAN device of ``network_id`` (() for none)."""
        for net in self.state.networks if self.state else ():
            if net.id == network_id and net.tunnel is not None and self.state and self.state.tunnel_ip:
                return net.tunnel.fdb
        return ()

    async def apply(self, state: HostNetworkState) -> ApplyReport:
        if self.torn_down:
            return ApplyReport()  # as the Linux dataplane: a teardown is final
        before = self.state
        self.applied.append(state)
        old = {p.id for p in before.ports} if before else set()
        new = {p.id for p in state.ports}
        return ApplyReport(created=tuple(f"port:{p}" for p in sorted(new - old)),
                           removed=tuple(f"port:{p}" for p in sorted(old - new)))

    async def teardown(self) -> None:
        self.applied.append(HostNetworkState(host=self.state.host if self.state else ""))
        self.torn_down = True

    def nic_for_port(self, port_id: str) -> Nic:
        return nic_for_port(self.names, self.state, port_id, "openstacklocal")
