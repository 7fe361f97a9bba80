"""A server's host work is durable task rows: leases that run out, retries, late reports, the operator's view.

Time is moved by writing a lease's expiry into the past and running the sweep (what the control
plane's timer does every few seconds), never by sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select, update

from tests.functional.compute.test_servers import action, boot, host, qcow2, until, wait_for, world
from yunstack.agent import agent as agent_mod
from yunstack.agent.link import Wakeup
from yunstack.compute import operations
from yunstack.db.engine import alembic_config, make_engine, upgrade
from yunstack.db.tables import compute as t
from yunstack.db.tables import tasks as tt
from yunstack.protocol import Outcome

__all__ = ["host", "qcow2", "world"]  # the fixtures these tests share with test_servers


def _tasks(world: dict[str, Any], sid: str) -> list[dict[str, Any]]:
    r = world["admin"].get("/os-tasks", params={"resource_id": sid})
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["tasks"]))  # oldest first


def _held_by(world: dict[str, Any], sid: str, owner: str, *, attempt: int, expired: bool = False) -> str:
    """The server's step is claimed by agent run ``owner`` (whoever claimed it before); its task id.

    (A stopped agent's last long-poll may already have claimed it: its answer was dropped.)
    """
    until = datetime.now(UTC) + (timedelta(seconds=-1) if expired else timedelta(minutes=5))
    with world["api"].services.db.begin() as s:
        task = s.scalars(select(tt.Task).where(tt.Task.resource_id == sid, tt.Task.state.in_(("queued", "running")))
                         ).one()
        task.state, task.attempt, task.lease_owner, task.lease_expires_at = "running", attempt, owner, until
        return task.id


def _reboot_queued_while_its_agent_is_away(world: dict[str, Any]) -> str:
    """An active server whose host's agent then stops, and a HARD reboot queued for it; its id."""
    nova = world["alice"]
    sid = boot(world)["id"]
    wait_for(nova, sid, "ACTIVE")
    world["host"].stop()
    assert action(nova, sid, {"reboot": {"type": "HARD"}}).status_code == 202
    return sid


def _lease_ran_out(world: dict[str, Any], sid: str, *, attempt: int) -> None:
    """A dead agent run held the server's step in ``attempt``; its lease is over and the sweep ran."""
    _held_by(world, sid, "gone/agent", attempt=attempt, expired=True)
    world["api"].services.host_link.sweep()


def test_every_operation_is_a_task_the_operator_sees_run_and_end(world: dict[str, Any]) -> None:
    nova, host = world["alice"], world["host"]
    sid = boot(world)["id"]
    wait_for(nova, sid, "ACTIVE")
    assert action(nova, sid, {"reboot": {"type": "HARD"}}).status_code == 202
    wait_for(nova, sid, "ACTIVE")
    tasks = _tasks(world, sid)
    assert [(x["kind"], x["step"], x["state"], x["attempt"]) for x in tasks] == [
        ("server.spawn", "spawn", "succeeded", 1), ("server.reboot", "reboot", "succeeded", 1)]
    assert {x["host"] for x in tasks} == {host.driver.hostname}
    assert tasks[1]["args"] == {"op": "reboot", "type": "HARD"}
    # users keep Nova's view; the task table is the operator's
    assert nova.get("/os-tasks").status_code == 403


def test_a_step_whose_lease_ran_out_is_queued_again_and_its_host_runs_it(world: dict[str, Any]) -> None:
    nova, host = world["alice"], world["host"]
    sid = _reboot_queued_while_its_agent_is_away(world)
    _lease_ran_out(world, sid, attempt=1)
    [reboot] = [x for x in _tasks(world, sid) if x["kind"] == "server.reboot"]
    # queued again (the stopped agent's last long-poll may have claimed it once more meanwhile)
    assert reboot["state"] == "queued" or reboot["lease_owner"] != "gone/agent"
    assert reboot["reason"] == f"lease expired on host {host.driver.hostname} (attempt 1 of 3); queued again"
    host.start()
    wait_for(nova, sid, "ACTIVE")
    [reboot] = [x for x in _tasks(world, sid) if x["kind"] == "server.reboot"]
    # 2, or 3 when the stopped agent's last long-poll claimed it once more before the new run released it
    assert reboot["state"] == "succeeded" and reboot["attempt"] in (2, 3)


def test_a_step_out_of_attempts_ends_its_operation_with_the_reason(world: dict[str, Any]) -> None:
    nova, host = world["alice"], world["host"]
    sid = _reboot_queued_while_its_agent_is_away(world)
    _lease_ran_out(world, sid, attempt=3)
    why = f"lease expired on host {host.driver.hostname} after 3 attempts"
    server = nova.get(f"/servers/{sid}").json()["server"]
    # a failed reboot leaves the server as its guest was last seen (the operation's rule), not stuck
    assert server["OS-EXT-STS:task_state"] is None and server["status"] == "ACTIVE"
    [reboot] = [x for x in _tasks(world, sid) if x["kind"] == "server.reboot"]
    assert (reboot["state"], reboot["reason"]) == ("failed", why)
    actions = nova.get(f"/servers/{sid}/os-instance-actions").json()["instanceActions"]
    assert actions[0]["action"] == "reboot" and actions[0]["message"] == "Error"
    shown = world["admin"].get(f"/servers/{sid}/os-instance-actions/{actions[0]['request_id']}").json()
    assert [e["traceback"] for e in shown["instanceAction"]["events"]] == [why]
    # the server is not stuck: the user's next action runs once its host is back
    host.start()
    assert action(nova, sid, {"reboot": {"type": "HARD"}}).status_code == 202
    wait_for(nova, sid, "ACTIVE")


def test_a_report_from_a_run_that_no_longer_holds_its_step_changes_nothing(world: dict[str, Any]) -> None:
    nova, host = world["alice"], world["host"]
    services = world["api"].services
    name = host.driver.hostname
    sid = _reboot_queued_while_its_agent_is_away(world)
    # The old run held it and died; a new run of the agent got it back and runs it as attempt 2.
    # (Claims are the engine's tests'; a stopped agent's last long-poll may claim here at any time.)
    _held_by(world, sid, f"{name}/old", attempt=1)
    task_id = _held_by(world, sid, f"{name}/new", attempt=2)
    request_id = services.tasks.get(task_id).request_id or ""

    def report(attempt: int, error: str | None) -> None:
        services.host_link.finish(Outcome(instance_id=sid, op="reboot", request_id=request_id,
                                          power_state=1, error=error, task_id=task_id, attempt=attempt))

    report(1, "the old run's late failure")
    server = nova.get(f"/servers/{sid}").json()["server"]
    assert server["OS-EXT-STS:task_state"] == "rebooting_hard" and "fault" not in server
    assert services.tasks.get(task_id).state == "running"
    report(2, None)
    server = wait_for(nova, sid, "ACTIVE")
    assert services.tasks.get(task_id).state == "succeeded"


def test_the_upgrade_moves_work_queued_on_the_instance_row_to_the_task_table(tmp_path: Path) -> None:
    from alembic import command

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        command.upgrade(alembic_config(engine), "0015_migrations")
        now = datetime.now(UTC).replace(tzinfo=None)
        with engine.begin() as c:
            c.execute(sa.text(
                "INSERT INTO instance (id, name, hostname, project_id, user_id, host, availability_zone, flavor, "
                "image_id, meta, tags, config_drive, security_groups, vm_state, task_state, power_state, progress,"
                " locked, access_ipv4, access_ipv6, reservation_id, launch_index, pending, created_at, updated_at)"
                " VALUES ('i-1', 'vm', 'vm', 'p', 'u', 'h1', 'nova', '{}', 'img', '{}', '[]', 1, '[]', 'active',"
                " 'rebooting_hard', 1, 0, 0, '', '', '', 0, :pending, :now, :now)"),
                {"pending": '{"op": "reboot", "args": {"type": "HARD"}, "request_id": "req-1"}', "now": now})
        upgrade(engine)
        with engine.connect() as c:
            columns = {col["name"] for col in sa.inspect(c).get_columns("instance")}
            [task] = c.execute(select(tt.Task)).mappings().all()
        assert "pending" not in columns
        assert (task["kind"], task["step"], task["host"], task["state"], task["request_id"]) == (
            "server.reboot", "reboot", "h1", "queued", "req-1")
        assert task["args"] == {"type": "HARD", "op": "reboot"}
        assert task["resource_id"] == "i-1" and task["project_id"] == "p"
    finally:
        engine.dispose()


def test_work_taken_from_a_host_fails_its_running_step_and_the_hosts_late_report_is_refused(
        world: dict[str, Any]) -> None:
    # What an evacuation does to the fenced host's step (the fence itself is test_evacuate's).
    nova, host = world["alice"], world["host"]
    services = world["api"].services
    name = host.driver.hostname
    sid = _reboot_queued_while_its_agent_is_away(world)
    task_id = _held_by(world, sid, f"{name}/doomed", attempt=1)
    with services.db.begin() as s:
        row = s.get(t.Instance, sid)
        assert row is not None
        operations.end_work(s, row, f"the server was evacuated from {name} (its host is down)")
    record = services.tasks.get(task_id)
    assert (record.state, record.reason) == ("failed", f"the server was evacuated from {name} (its host is down)")
    services.host_link.finish(Outcome(instance_id=sid, op="reboot", request_id=record.request_id or "",
                                      power_state=4, error="late", task_id=task_id, attempt=1))
    server = nova.get(f"/servers/{sid}").json()["server"]
    assert "fault" not in server and server["OS-EXT-STS:power_state"] == 1


def test_a_dead_agent_runs_long_poll_claims_nothing_once_its_successor_has_polled(world: dict[str, Any]) -> None:
    # A killed agent's long-poll runs on in the API until its timeout; if it claimed, the dead run
    # would hold the new run's work for a whole lease.
    nova, host = world["alice"], world["host"]
    link = world["api"].services.host_link
    name = host.driver.hostname
    sid = boot(world)["id"]
    wait_for(nova, sid, "ACTIVE")
    host.stop()
    link.hold(name, (), f"{name}/old")
    assert action(nova, sid, {"reboot": {"type": "HARD"}}).status_code == 202
    link.hold(name, (), f"{name}/new")  # the new run's first wait
    assert link.poll(name, (), f"{name}/old").work == ()
    [work] = link.poll(name, (), f"{name}/new").work
    assert work.op == "reboot" and work.attempt == 1


def test_a_step_handed_out_again_after_this_agent_ran_it_is_not_run_twice(world: dict[str, Any]) -> None:
    # A long-poll that saw the step running answers after it ended: the copy is recognised.
    nova, host = world["alice"], world["host"]
    agent = host.agent
    assert agent is not None and agent._loop is not None
    link = agent.link
    real = link.wait
    handed: list[Any] = []

    def wait(*args: Any) -> Any:
        wakeup = real(*args)
        handed.extend(w for w in wakeup.work if w.op == "reboot")
        return wakeup

    link.wait = wait  # type: ignore[method-assign]
    sid = boot(world)["id"]
    wait_for(nova, sid, "ACTIVE")
    assert action(nova, sid, {"reboot": {"type": "HARD"}}).status_code == 202
    wait_for(nova, sid, "ACTIVE")
    boots = len(host.driver._guests[sid].console)
    [reboot] = handed
    agent._loop.call_soon_threadsafe(agent._start, Wakeup(work=(reboot,)))
    # Anything that copy started would run before the next step of the server (one at a time each).
    assert action(nova, sid, {"pause": None}).status_code == 202
    wait_for(nova, sid, "PAUSED")
    assert len(host.driver._guests[sid].console) == boots


def test_a_report_the_control_plane_keeps_failing_is_let_go_and_the_step_runs_again(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    nova, host = world["alice"], world["host"]
    services = world["api"].services
    monkeypatch.setattr(agent_mod, "REPORT_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(agent_mod, "REPORT_GIVE_UP_SECONDS", 0.5)
    agent = host.agent
    assert agent is not None
    sid = boot(world)["id"]
    wait_for(nova, sid, "ACTIVE")
    real = agent.link.finish
    refused: list[int] = []

    def finish(outcome: Outcome) -> None:
        if outcome.op == "reboot" and outcome.attempt == 1:
            refused.append(outcome.attempt)
            raise ConnectionError("the control plane fails on it")
        real(outcome)

    agent.link.finish = finish  # type: ignore[method-assign]
    assert action(nova, sid, {"reboot": {"type": "HARD"}}).status_code == 202
    until(lambda: len(refused) > 1 and not agent._inflight)  # tried again, then let go
    [reboot] = [x for x in _tasks(world, sid) if x["kind"] == "server.reboot"]
    assert (reboot["state"], reboot["attempt"]) == ("running", 1)  # nobody renews it now
    with services.db.begin() as s:
        s.execute(update(tt.Task).where(tt.Task.id == reboot["id"]).values(
            lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    services.host_link.sweep()  # its lease is over: queued again, and its host runs it again
    wait_for(nova, sid, "ACTIVE")
    [reboot] = [x for x in _tasks(world, sid) if x["kind"] == "server.reboot"]
    assert (reboot["state"], reboot["attempt"]) == ("succeeded", 2)
