"""A network notice is never dropped by the agent, whichever of its long-polls takes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yunstack.agent.agent import Agent
from yunstack.agent.link import Wakeup
from yunstack.compute.fake import FakeDriver
from yunstack.network.dataplane.fake import FakeDataplane


class Link:
    """The control plane as the follow-up look sees it: no work, but a network notice."""

    def wait(self, host: str, busy: Any, timeout: float, owner: str = "") -> Wakeup:
        return Wakeup(network=True)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected call {name}")


async def test_the_look_after_an_operation_passes_a_notice_it_took_to_the_reconciler(tmp_path: Path) -> None:
    agent = Agent("h1", FakeDriver(hostname="h1"), Link(), image_cache=tmp_path, dataplane=FakeDataplane())  # type: ignore[arg-type]
    assert agent.network is not None and not agent.network._kicked.is_set()
    await agent._follow_up("some-instance")  # an operation of that instance just ended
    assert agent.network._kicked.is_set()
