"""The task state machine and its leases, on a throwaway SQLite file with a clock the tests move."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.taskkit import (
    REGISTRY,
    Clock,
    FinishArgs,
    PrepareArgs,
    RebootArgs,
    SendArgs,
    SpawnArgs,
    SpawnResult,
    engine_service,
    server,
    spawn,
)
from yunstack.db.base import Base
from yunstack.db.engine import make_engine
from yunstack.db.tables import tasks as _tables
from yunstack.tasks.errors import LeaseLost, TaskNotCancellable, TaskNotFound
from yunstack.tasks.model import StepSpec, TaskKind, TaskRegistry, TaskState
from yunstack.tasks.service import TaskService

_ = _tables


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(tmp_path: Path, clock: Clock) -> Iterator[tuple[TaskService, sessionmaker[Session]]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'tasks.db'}")
    Base.metadata.create_all(engine, tables=[_tables.Task.__table__])  # type: ignore[list-item]
    try:
        yield engine_service(engine, clock)
    finally:
        engine.dispose()


# -- the registry -------------------------------------------------------------------------------

def test_a_kind_registers_once_and_a_different_kind_under_its_name_is_refused() -> None:
    reg = TaskRegistry()
    kind = TaskKind(name="x", steps={"a": StepSpec(args=RebootArgs)})
    reg.register(kind)
    reg.register(kind)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(TaskKind(name="x", steps={"b": StepSpec(args=RebootArgs)}))
    with pytest.raises(ValueError, match="unknown task kind"):
        reg.kind("y")
    with pytest.raises(ValueError, match="has no step"):
        reg.kind("x").step("b")


def test_enqueue_refuses_arguments_that_are_not_the_steps_model(world: tuple[TaskService, sessionmaker[Session]]
                                                                ) -> None:
    tasks, db = world
    with db.begin() as s, pytest.raises(TypeError, match="takes SpawnArgs, not RebootArgs"):
        tasks.enqueue(s, kind="server.spawn", resource=server(), host="h1", step="spawn", args=RebootArgs())
    with db.begin() as s, pytest.raises(ValueError, match="unknown task kind"):
        tasks.enqueue(s, kind="server.nope", resource=server(), host="h1", step="spawn", args=RebootArgs())
    with db.begin() as s, pytest.raises(ValueError, match="has no step"):
        tasks.enqueue(s, kind="server.spawn", resource=server(), host="h1", step="boot",
                      args=SpawnArgs(image_id="i"))
    assert tasks.for_resource(server()) == []


# -- one step: claim, complete, fail, lease ----------------------------------------------------

def test_a_claimed_step_carries_its_typed_arguments_and_a_lease(world: tuple[TaskService, sessionmaker[Session]],
                                                                clock: Clock) -> None:
    tasks, db = world
    task_id = spawn(tasks, db)
    assert tasks.get(task_id).state is TaskState.QUEUED
    [claim] = tasks.claim("h1", lease_seconds=30)
    assert claim.id == task_id and claim.args == SpawnArgs(image_id="img") and claim.step == "spawn"
    assert (claim.attempt, claim.max_attempts, claim.lease_owner, claim.request_id) == (1, 2, "h1", "req-1")
    assert claim.lease_expires_at == clock.now + timedelta(seconds=30)
    assert tasks.claim("h1") == []  # it is running: nobody else gets it
    tasks.complete(task_id, SpawnResult(adopted=True), owner="h1")
    done = tasks.get(task_id)
    assert (done.state, done.result, done.lease_expires_at, done.finished_at) == (
        TaskState.SUCCEEDED, {"adopted": True}, None, clock.now)


def test_a_host_only_claims_its_own_steps(world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    spawn(tasks, db, host="h2")
    assert tasks.claim("h1") == []
    assert len(tasks.claim("h2")) == 1


def test_a_result_must_be_the_steps_result_model(world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    task_id = spawn(tasks, db)
    tasks.claim("h1")
    with pytest.raises(TypeError, match="reports SpawnResult, not SpawnArgs"):
        tasks.complete(task_id, SpawnArgs(image_id="x"))
    assert tasks.get(task_id).state is TaskState.RUNNING


def test_an_expired_lease_is_retried_then_failed_with_the_reason(world: tuple[TaskService, sessionmaker[Session]],
                                                                 clock: Clock) -> None:
    tasks, db = world
    task_id = spawn(tasks, db)
    tasks.claim("h1", lease_seconds=10)
    clock.advance(9)
    assert tasks.expire() == []
    clock.advance(2)
    [retried] = tasks.expire()
    assert (retried.state, retried.reason) == (TaskState.QUEUED,
                                               "lease expired on host h1 (attempt 1 of 2); queued again")
    assert tasks.get(task_id).lease_owner is None
    [again] = tasks.claim("h1", lease_seconds=10)
    assert again.attempt == 2
    clock.advance(11)
    [failed] = tasks.expire()
    assert (failed.state, failed.reason) == (TaskState.FAILED, "lease expired on host h1 after 2 attempts")
    record = tasks.get(task_id)
    assert (record.state, record.reason, record.attempt) == (TaskState.FAILED, failed.reason, 2)
    assert tasks.claim("h1") == []


def test_a_renewed_lease_does_not_expire(world: tuple[TaskService, sessionmaker[Session]], clock: Clock) -> None:
    tasks, db = world
    task_id = spawn(tasks, db)
    tasks.claim("h1", lease_seconds=10)
    clock.advance(8)
    assert tasks.renew(task_id, owner="h1", lease_seconds=10) == clock.now + timedelta(seconds=10)
    clock.advance(8)
    assert tasks.expire() == []
    assert tasks.get(task_id).state is TaskState.RUNNING


def test_a_host_that_lost_its_lease_can_neither_renew_nor_complete(
        world: tuple[TaskService, sessionmaker[Session]], clock: Clock) -> None:
    tasks, db = world
    task_id = spawn(tasks, db)
    tasks.claim("h1", lease_seconds=10, owner="h1/agent-1")
    clock.advance(11)
    tasks.expire()
    tasks.claim("h1", owner="h1/agent-2")
    with pytest.raises(LeaseLost, match="not running under a lease of h1/agent-1"):
        tasks.renew(task_id, owner="h1/agent-1")
    with pytest.raises(LeaseLost):
        tasks.complete(task_id, owner="h1/agent-1")
    tasks.complete(task_id, owner="h1/agent-2")
    assert tasks.get(task_id).state is TaskState.SUCCEEDED
    with pytest.raises(LeaseLost, match="it is succeeded"):
        tasks.fail(task_id, "late", owner="h1/agent-2")


def test_a_transient_failure_is_retried_while_attempts_remain(world: tuple[TaskService, sessionmaker[Session]]
                                                              ) -> None:
    tasks, db = world
    task_id = spawn(tasks, db)
    tasks.claim("h1")
    assert tasks.fail(task_id, "qemu busy", retry=True) is TaskState.QUEUED
    assert tasks.get(task_id).reason == "qemu busy (attempt 1 of 2); queued again"
    tasks.claim("h1")
    assert tasks.fail(task_id, "qemu busy", retry=True) is TaskState.FAILED
    assert (tasks.get(task_id).state, tasks.get(task_id).reason) == (TaskState.FAILED, "qemu busy")


def test_only_queued_work_can_be_cancelled(world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    first, second = spawn(tasks, db, n=1), spawn(tasks, db, n=2)
    assert tasks.get(first).may_cancel
    tasks.cancel(first, "the server was deleted")
    assert (tasks.get(first).state, tasks.get(first).reason) == (TaskState.CANCELLED, "the server was deleted")
    tasks.claim("h1")
    with pytest.raises(TaskNotCancellable, match="it is running"):
        tasks.cancel(second)
    with pytest.raises(TaskNotFound):
        tasks.cancel("nope")


def test_claim_refuses_a_zero_limit_or_an_unbounded_lease(world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, _ = world
    with pytest.raises(ValueError):
        tasks.claim("h1", limit=0)
    with pytest.raises(ValueError):
        tasks.claim("h1", lease_seconds=0)


def test_a_step_whose_stored_arguments_no_longer_parse_fails_instead_of_running(
        world: tuple[TaskService, sessionmaker[Session]], clock: Clock) -> None:
    tasks, db = world
    task_id = spawn(tasks, db)
    newer = TaskRegistry()
    newer.register(TaskKind(name="server.spawn", steps={"spawn": StepSpec(args=SendArgs)}))
    assert TaskService(db, newer, clock=clock).claim("h1") == []
    record = tasks.get(task_id)
    assert record.state is TaskState.FAILED and record.reason is not None
    assert record.reason.startswith("arguments cannot be read")


# -- order and groups -----------------------------------------------------------------------------

def test_a_resources_later_step_waits_for_its_earlier_one(world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    first = spawn(tasks, db, n=1)
    with db.begin() as s:
        second = tasks.enqueue(s, kind="server.reboot", resource=server(1), host="h1", step="reboot",
                               args=RebootArgs(hard=True))
    other = spawn(tasks, db, n=2)
    claimed = tasks.claim("h1", limit=10)
    assert [c.id for c in claimed] == [first, other]  # the reboot waits behind server 1's spawn
    assert tasks.claim("h1", limit=10) == []
    tasks.complete(first)
    [reboot] = tasks.claim("h1", limit=10)
    assert reboot.id == second and reboot.args == RebootArgs(hard=True)


def migration(tasks: TaskService, db: sessionmaker[Session]) -> tuple[str, list[str]]:
    with db.begin() as s:
        group = tasks.enqueue_group(s, kind="server.migrate", resource=server(), request_id="req-m")
        steps = [
            tasks.enqueue(s, kind="server.migrate", resource=server(), host="dst", step="prepare",
                          args=PrepareArgs(source="src"), parent_id=group, request_id="req-m"),
            tasks.enqueue(s, kind="server.migrate", resource=server(), host="src", step="send",
                          args=SendArgs(target="dst"), parent_id=group, request_id="req-m"),
            tasks.enqueue(s, kind="server.migrate", resource=server(), host="dst", step="finish",
                          args=FinishArgs(), parent_id=group, request_id="req-m"),
        ]
    return group, steps


def test_a_group_runs_its_steps_in_order_across_hosts_and_succeeds_with_the_last(
        world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    group, (prepare, send, finish) = migration(tasks, db)
    assert tasks.get(group).children == (prepare, send, finish)
    assert tasks.claim("src") == []  # send waits for prepare
    [c] = tasks.claim("dst", limit=5)
    assert c.id == prepare and c.parent_id == group
    assert tasks.get(group).state is TaskState.RUNNING
    tasks.complete(prepare)
    assert tasks.claim("dst") == []  # finish waits for send
    [c] = tasks.claim("src")
    tasks.complete(c.id)
    [c] = tasks.claim("dst")
    assert c.id == finish
    assert tasks.get(group).state is TaskState.RUNNING
    tasks.complete(finish)
    assert tasks.get(group).state is TaskState.SUCCEEDED


def test_a_failed_step_fails_its_group_with_the_reason_and_cancels_the_rest(
        world: tuple[TaskService, sessionmaker[Session]], clock: Clock) -> None:
    tasks, db = world
    group, (_prepare, _send, finish) = migration(tasks, db)
    tasks.complete(tasks.claim("dst")[0].id)
    tasks.claim("src", lease_seconds=5)
    for _ in range(3):  # the send's host never answers: three leases run out
        clock.advance(6)
        tasks.expire()
        tasks.claim("src", lease_seconds=5)
    record = tasks.get(group)
    assert record.state is TaskState.FAILED
    assert record.reason == "step send on host src failed: lease expired on host src after 3 attempts"
    assert tasks.get(finish).state is TaskState.CANCELLED
    assert tasks.claim("dst") == []


def test_work_queued_after_a_group_waits_until_the_group_ends(
        world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    migration(tasks, db)
    with db.begin() as s:
        reboot = tasks.enqueue(s, kind="server.reboot", resource=server(), host="dst", step="reboot",
                               args=RebootArgs())
    for host in ("dst", "src", "dst"):
        [c] = tasks.claim(host)
        assert c.id != reboot
        tasks.complete(c.id)
    assert [c.id for c in tasks.claim("dst")] == [reboot]


def test_cancelling_a_group_before_it_starts_cancels_its_steps(
        world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    group, steps = migration(tasks, db)
    tasks.cancel(group, "operator")
    assert {tasks.get(x).state for x in [group, *steps]} == {TaskState.CANCELLED}
    group2, _ = migration(tasks, db)
    tasks.claim("dst")
    with pytest.raises(TaskNotCancellable):
        tasks.cancel(group2)


def test_a_delete_cancels_the_resources_queued_work_in_the_callers_transaction(
        world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    first = spawn(tasks, db)
    group, steps = migration(tasks, db)
    with db.begin() as s:
        cancelled = tasks.cancel_queued(s, server(), "the server is being deleted")
    assert cancelled == [first, group, *steps]
    assert tasks.get(group).state is TaskState.CANCELLED


def test_a_step_joins_only_an_open_group_of_its_own_kind(world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    group, _ = migration(tasks, db)
    with db.begin() as s, pytest.raises(ValueError, match=r"cannot belong to a server\.migrate group"):
        tasks.enqueue(s, kind="server.reboot", resource=server(), host="h1", step="reboot", args=RebootArgs(),
                      parent_id=group)
    plain = spawn(tasks, db, n=5)
    with db.begin() as s, pytest.raises(ValueError, match="not a group"):
        tasks.enqueue(s, kind="server.spawn", resource=server(5), host="h1", step="spawn",
                      args=SpawnArgs(image_id="i"), parent_id=plain)
    with db.begin() as s, pytest.raises(TaskNotFound):
        tasks.enqueue(s, kind="server.migrate", resource=server(), host="h1", step="finish", args=FinishArgs(),
                      parent_id="missing")
    assert REGISTRY.kind("server.migrate").max_attempts == 3


def test_a_resources_outstanding_work_reads_back_with_typed_arguments_in_the_callers_transaction(
        world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    done, waiting = spawn(tasks, db), spawn(tasks, db)
    tasks.claim("h1")
    tasks.complete(done)
    group, steps = migration(tasks, db)
    with db.begin() as s:
        active = tasks.active(s, server())
        assert [r.id for r in active] == [waiting, group, *steps]
        assert tasks.args_of(active[0]) == SpawnArgs(image_id="img")
        assert tasks.args_of(active[2]) == PrepareArgs(source="src")
        with pytest.raises(ValueError, match="is a group"):
            tasks.args_of(active[1])


def test_purge_deletes_old_finished_work_with_its_steps_but_nothing_that_runs(
        world: tuple[TaskService, sessionmaker[Session]], clock: Clock) -> None:
    tasks, db = world
    old = spawn(tasks, db, n=1)
    tasks.claim("h1")
    tasks.complete(old)
    group, (prepare, send, finish) = migration(tasks, db)
    tasks.cancel(group)
    running = spawn(tasks, db, n=3)
    tasks.claim("h1")
    clock.advance(3600)
    recent = spawn(tasks, db, n=4)
    tasks.claim("h1")
    tasks.complete(recent)
    assert tasks.purge(clock.now - timedelta(minutes=30)) == 2  # the spawn and the group (with its 3 steps)
    for gone in (old, group, prepare, send, finish):
        with pytest.raises(TaskNotFound):
            tasks.get(gone)
    assert tasks.get(running).state is TaskState.RUNNING
    assert tasks.get(recent).state is TaskState.SUCCEEDED


def test_a_restarted_agent_releases_its_predecessors_leases_at_once(
        world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    first, second, elsewhere = spawn(tasks, db, n=1), spawn(tasks, db, n=2), spawn(tasks, db, host="h2", n=3)
    tasks.claim("h1", owner="h1/boot-1")
    tasks.claim("h2")
    [mine] = tasks.claim("h1", owner="h1/boot-2")
    assert mine.id == second
    [released] = tasks.release("h1", keep_owner="h1/boot-2")
    assert (released.id, released.state, released.reason) == (
        first, TaskState.QUEUED, "lease released on host h1 (attempt 1 of 2); queued again")
    assert [c.id for c in tasks.claim("h1", owner="h1/boot-2")] == [first]
    assert tasks.get(second).state is TaskState.RUNNING
    assert tasks.get(elsewhere).lease_owner == "h2"


def test_completing_in_the_callers_transaction_rolls_back_with_it(
        world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    group, (prepare, _send, _finish) = migration(tasks, db)
    tasks.claim("dst")

    class ApplyFailed(Exception):
        pass

    with pytest.raises(ApplyFailed), db.begin() as s:
        tasks.complete(prepare, owner="dst", s=s)
        assert tasks.active(s, server())[0].id == group
        raise ApplyFailed  # what the control plane applies from the outcome failed: nothing changes
    assert tasks.get(prepare).state is TaskState.RUNNING
    with db.begin() as s:
        tasks.fail(prepare, "no room on dst", owner="dst", s=s)
    assert tasks.get(group).reason == "step prepare on host dst failed: no room on dst"


def test_a_run_whose_lease_ran_out_cannot_finish_the_retry_under_the_same_owner(
        world: tuple[TaskService, sessionmaker[Session]], clock: Clock) -> None:
    tasks, db = world
    task_id = spawn(tasks, db)
    [slow] = tasks.claim("h1", lease_seconds=10)
    clock.advance(11)
    tasks.expire()
    [retry] = tasks.claim("h1", lease_seconds=10)
    assert (slow.lease_owner, retry.lease_owner, slow.attempt, retry.attempt) == ("h1", "h1", 1, 2)
    with pytest.raises(LeaseLost):
        tasks.renew(task_id, owner="h1", attempt=slow.attempt)
    with pytest.raises(LeaseLost):
        tasks.complete(task_id, owner="h1", attempt=slow.attempt)
    with pytest.raises(LeaseLost):
        tasks.fail(task_id, "late", owner="h1", attempt=slow.attempt)
    tasks.complete(task_id, owner="h1", attempt=retry.attempt)
    assert tasks.get(task_id).state is TaskState.SUCCEEDED
