"""A live migration survives a control plane that goes away in the middle (two fake hosts over HTTP).

Two ways a crash shows: a host's answer is lost (the step stays queued, and the host runs it again:
every step is safe to repeat), or the queued step itself is gone (the start-up reconcile ends the
migration from what the rows say).  Either way: one running guest, on one host, nothing left over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.functional.compute import test_live_migration as lm
from tests.functional.compute.test_servers import Host, until
from tests.functional.compute.work import drop_work
from yunstack.agent.agent import Agent
from yunstack.compute.driver import PowerState
from yunstack.db.tables import migrations as mig

host = lm.host
world = lm.world
qcow2 = lm.qcow2
two = lm.two


def _lose_first_answer(agent: Agent, op: str) -> list[str]:
    """The agent's first report of ``op`` never arrives, as when the control plane died meanwhile."""
    link = agent.link
    real = link.finish
    lost: list[str] = []

    def finish(outcome: Any) -> None:
        if outcome.op == op and not lost:
            lost.append(outcome.op)
            raise ConnectionError("the control plane is gone")
        real(outcome)

    link.finish = finish  # type: ignore[method-assign]
    return lost


@pytest.mark.parametrize("op,side", [("live_migration_prepare", "b"), ("live_migration_send", "a"),
                                     ("live_migration_finish_incoming", "b"),
                                     ("live_migration_finish_outgoing", "a")])
def test_a_lost_answer_is_repeated_and_the_migration_still_ends_with_one_guest(
        two: dict[str, Any], op: str, side: str) -> None:
    a: Host = two["host"]
    b: lm.OtherHost = two["b"]
    sid = two["server"]
    agent = a.agent if side == "a" else b.agent
    assert agent is not None
    lost = _lose_first_answer(agent, op)
    assert lm.live(two["admin"], sid).status_code == 202
    server = lm._done(two)
    assert lost == [op]
    [m] = lm.migrations(two)
    guests = [d for d in (a.driver, b.driver) if sid in d._guests]
    assert len(guests) == 1  # exactly one copy of the guest, and it runs
    assert guests[0]._guests[sid].state == PowerState.RUNNING and guests[0]._guests[sid].migration is None
    expected_host = lm.B if m["status"] == "completed" else a.services.config.host_name
    assert server["OS-EXT-SRV-ATTR:host"] == expected_host
    assert guests[0] is (b.driver if expected_host == lm.B else a.driver)
    # A repeated prepare finds its own waiting guest and starts over; later steps see they were done.
    assert m["status"] == "completed"


def _hand_out_twice(agent: Agent, op: str) -> list[Any]:
    """The first hand-out of ``op`` comes twice, as from a long-poll that began before the step ran.

    Returns what was handed out (the step, then None once its second copy went out).
    """
    link = agent.link
    real = link.wait
    seen: list[Any] = []

    def wait(host: str, busy: Any, timeout: float, *rest: Any) -> Any:
        wakeup = real(host, busy, timeout, *rest)
        if len(seen) == 1:
            seen.append(None)
            return replace(wakeup, work=(*wakeup.work, seen[0]))
        mine = [w for w in wakeup.work if w.op == op]
        if mine and not seen:
            seen.append(mine[0])
        return wakeup

    link.wait = wait  # type: ignore[method-assign,assignment]
    return seen


def test_a_lost_answer_of_a_step_also_handed_out_twice_is_still_repeated(two: dict[str, Any]) -> None:
    # A second copy of a step that is running is not run again, nor kept waiting behind it (once a
    # copy kept waiting stayed counted as the agent's after the running one's report was lost); the
    # lost report is sent again and the migration completes.
    a: Host = two["host"]
    agent = a.agent
    assert agent is not None
    seen = _hand_out_twice(agent, "live_migration_finish_outgoing")
    lost = _lose_first_answer(agent, "live_migration_finish_outgoing")
    real = a.driver.finish_outgoing
    runs: list[str] = []

    async def until_second_copy(instance_id: str, *args: Any, **kwargs: Any) -> Any:
        # The step is still running when its second copy arrives (the race, made certain).
        runs.append(instance_id)
        for _ in range(500):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        return await real(instance_id, *args, **kwargs)

    a.driver.finish_outgoing = until_second_copy  # type: ignore[method-assign]
    assert lm.live(two["admin"], two["server"]).status_code == 202
    server = lm._done(two)
    assert lost == ["live_migration_finish_outgoing"] and len(seen) == 2
    assert server["OS-EXT-SRV-ATTR:host"] == lm.B and lm.migrations(two)[0]["status"] == "completed"
    assert runs == [two["server"]]  # ran once: the copy was the same task, the lost report was sent again
    assert agent._deferred == {} and agent._running == {}


@pytest.fixture
def gated(two: dict[str, Any]) -> Iterator[tuple[dict[str, Any], asyncio.Event]]:
    """``two`` with host B's prepare held until the test lets it go."""
    b: lm.OtherHost = two["b"]
    gate = asyncio.Event()
    real = b.driver.prepare_incoming

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await real(*args, **kwargs)

    b.driver.prepare_incoming = held  # type: ignore[method-assign]
    yield two, gate


def test_a_migration_whose_step_was_lost_is_rolled_back_by_the_reconcile(
        gated: tuple[dict[str, Any], asyncio.Event], tmp_path: Path) -> None:
    w, gate = gated
    a: Host = w["host"]
    b: lm.OtherHost = w["b"]
    sid = w["server"]
    services = w["api"].services
    assert lm.live(w["admin"], sid).status_code == 202
    until(lambda: bool(b.agent and b.agent._inflight))
    # The crash: the queued step is gone (as if written by a control plane that died before it).
    with services.db.begin() as s:
        drop_work(s, sid)
    assert services.migrations.reconcile() != []
    assert b.agent is not None and b.agent._loop is not None
    b.agent._loop.call_soon_threadsafe(gate.set)
    lm._done(w)  # while the destination, which may, read the spec and reported its steps
    assert lm.migrations(w)[0]["status"] == "error"  # rolled back by the reconcile
    with services.db() as s:
        record = s.scalars(select(mig.Migration)).one()
        assert record.status == "error" and record.error is not None and "control plane stopped" in record.error
    assert a.driver._guests[sid].state == PowerState.RUNNING
    until(lambda: sid not in b.driver._guests)  # the destination's waiting guest was dropped
    assert services.migrations.reconcile() == []  # nothing left to do


def test_a_migration_past_the_destinations_start_is_finished_by_the_reconcile(two: dict[str, Any]) -> None:
    a: Host = two["host"]
    b: lm.OtherHost = two["b"]
    sid = two["server"]
    services = two["api"].services
    gate = asyncio.Event()
    real = a.driver.finish_outgoing

    async def held(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await real(*args, **kwargs)

    a.driver.finish_outgoing = held  # type: ignore[method-assign]
    assert lm.live(two["admin"], sid).status_code == 202
    until(lambda: bool(a.agent and sid in a.agent._inflight) and sid in b.driver._guests
          and b.driver._guests[sid].migration is None)
    with services.db.begin() as s:
        drop_work(s, sid)
    assert services.migrations.reconcile() != []
    assert a.agent is not None and a.agent._loop is not None
    a.agent._loop.call_soon_threadsafe(gate.set)
    server = lm._done(two)
    assert server["OS-EXT-SRV-ATTR:host"] == lm.B
    until(lambda: sid not in a.driver._guests)
    assert lm.migrations(two)[0]["status"] == "completed"


def test_only_the_destination_of_a_migration_may_read_or_report_its_guest(
        gated: tuple[dict[str, Any], asyncio.Event]) -> None:
    """The attack: a third host asks for a migrating guest's spec, or reports on it; 404 both times."""
    from tests.functional.agent.test_host_identity import add_host, call, join
    from yunstack.agent.link import Outcome

    w, gate = gated
    api = w["api"]
    b: lm.OtherHost = w["b"]
    sid = w["server"]
    assert lm.live(w["admin"], sid).status_code == 202
    until(lambda: bool(b.agent and b.agent._inflight))  # B's prepare is queued and running
    status, c = join(api, add_host(api, api.admin(), "host-c"))
    assert status == 200
    assert call(api, c["credential"], "host-c", "spec", instance_id=sid)[0] == 404
    lie = Outcome(instance_id=sid, op="live_migration_prepare", request_id="r", power_state=1)
    assert call(api, c["credential"], "host-c", "finish", outcome=lie)[0] == 404
    assert b.agent is not None and b.agent._loop is not None
    b.agent._loop.call_soon_threadsafe(gate.set)
    lm._done(w)  # while the destination, which may, read the spec and reported its steps
    assert lm.migrations(w)[0]["status"] == "completed"


def test_a_server_on_its_way_holds_its_size_on_the_destination(gated: tuple[dict[str, Any], asyncio.Event]) -> None:
    # Without it, the scheduler saw a destination as empty while a move into it was under way,
    # and a second move or a create could overbook it.
    w, gate = gated
    b: lm.OtherHost = w["b"]
    sid = w["server"]

    def used() -> dict[str, tuple[int, int]]:
        hyps = w["admin"].get("/os-hypervisors/detail").json()["hypervisors"]
        return {h["hypervisor_hostname"]: (h["vcpus_used"], h["memory_mb_used"]) for h in hyps}

    before = used()
    assert lm.live(w["admin"], sid).status_code == 202
    until(lambda: bool(b.agent and b.agent._inflight))  # the destination is preparing, held
    during = used()
    a_name = w["host"].services.config.host_name
    assert during[a_name] == before[a_name]  # the source still runs it
    assert during[lm.B] == (before[lm.B][0] + 1, before[lm.B][1] + 128), (before, during)  # m1.nano
    assert b.agent is not None and b.agent._loop is not None
    b.agent._loop.call_soon_threadsafe(gate.set)
    lm._done(w)
    after = used()
    assert after[lm.B] == during[lm.B] and after[a_name][0] == before[a_name][0] - 1, (before, after)
