"""The task engine on a migrated database, SQLite and PostgreSQL: claims, leases, order, groups, races."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from tests.taskkit import Clock, PrepareArgs, RebootArgs, SendArgs, SpawnResult, engine_service, server, spawn
from yunstack.db.base import Base
from yunstack.db.engine import make_engine, upgrade
from yunstack.db.tables import tasks as t
from yunstack.tasks.errors import LeaseLost
from yunstack.tasks.model import TaskState
from yunstack.tasks.service import TaskService


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def world(engine: Engine, clock: Clock) -> tuple[TaskService, sessionmaker[Session]]:
    return engine_service(engine, clock)


def test_the_migration_builds_exactly_the_tasks_table_the_code_declares(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert [d for d in diff if "tasks" in repr(d)] == []


def test_enqueue_claim_complete_round_trip(world: tuple[TaskService, sessionmaker[Session]], clock: Clock) -> None:
    tasks, db = world
    queued_at = clock.now
    task_id = spawn(tasks, db, request_id="req-42")
    [claim] = tasks.claim("h1", lease_seconds=60)
    assert (claim.id, claim.attempt, claim.request_id, claim.resource) == (task_id, 1, "req-42", server())
    clock.advance(5)
    tasks.complete(task_id, SpawnResult(adopted=False), owner="h1")
    record = tasks.get(task_id)
    assert (record.state, record.result, record.finished_at, record.created_at) == (
        TaskState.SUCCEEDED, {"adopted": False}, clock.now, queued_at)


def test_an_enqueue_rolls_back_with_the_callers_transaction(world: tuple[TaskService, sessionmaker[Session]]
                                                           ) -> None:
    tasks, db = world

    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.begin() as s:
        tasks.enqueue(s, kind="server.reboot", resource=server(), host="h1", step="reboot",
                      args=RebootArgs())
        raise Boom
    assert tasks.for_resource(server()) == []
    assert tasks.claim("h1") == []


def test_concurrent_claimers_never_get_the_same_task(world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    ids = {spawn(tasks, db, n=n) for n in range(40)}
    got: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def claimer(i: int) -> None:
        try:
            start.wait()
            while True:
                claims = tasks.claim("h1", limit=3, owner=f"h1/worker-{i}")
                if not claims:
                    return
                got[i].extend(c.id for c in claims)
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert errors == []
    everything = [x for mine in got for x in mine]
    assert len(everything) == len(set(everything)) == 40
    assert set(everything) == ids
    owners = {r.id: r.lease_owner for r in (tasks.get(x) for x in ids)}
    for i, mine in enumerate(got):
        assert all(owners[x] == f"h1/worker-{i}" for x in mine)


def test_an_expired_lease_is_retried_then_failed_with_a_reason(world: tuple[TaskService, sessionmaker[Session]],
                                                              clock: Clock) -> None:
    tasks, db = world
    task_id = spawn(tasks, db)
    tasks.claim("h1", lease_seconds=30)
    clock.advance(31)
    [retry] = tasks.expire()
    assert retry.state is TaskState.QUEUED
    [claim] = tasks.claim("h1", lease_seconds=30, owner="h1/restarted")
    assert claim.attempt == 2
    clock.advance(31)
    [final] = tasks.expire()
    assert (final.state, final.reason) == (TaskState.FAILED, "lease expired on host h1 after 2 attempts")
    with pytest.raises(LeaseLost):
        tasks.complete(task_id, owner="h1/restarted")
    assert tasks.get(task_id).state is TaskState.FAILED


def test_a_resources_steps_run_in_order_and_other_resources_do_not_wait(
        world: tuple[TaskService, sessionmaker[Session]]) -> None:
    tasks, db = world
    a1, b1, a2 = spawn(tasks, db, n=1), spawn(tasks, db, n=2), spawn(tasks, db, n=1)
    assert [c.id for c in tasks.claim("h1", limit=10)] == [a1, b1]
    tasks.fail(a1, "no room")
    assert [c.id for c in tasks.claim("h1", limit=10)] == [a2]


def test_a_group_of_steps_on_two_hosts_ends_with_its_children(world: tuple[TaskService, sessionmaker[Session]]
                                                              ) -> None:
    tasks, db = world
    with db.begin() as s:
        group = tasks.enqueue_group(s, kind="server.migrate", resource=server(), request_id="req-m")
        prepare = tasks.enqueue(s, kind="server.migrate", resource=server(), host="dst", step="prepare",
                                args=PrepareArgs(source="src"), parent_id=group)
        send = tasks.enqueue(s, kind="server.migrate", resource=server(), host="src", step="send",
                             args=SendArgs(target="dst"), parent_id=group)
    assert tasks.claim("src") == []
    [c] = tasks.claim("dst")
    assert (c.id, c.args) == (prepare, PrepareArgs(source="src"))
    tasks.complete(prepare)
    [c] = tasks.claim("src")
    assert c.args == SendArgs(target="dst")
    assert tasks.get(group).state is TaskState.RUNNING
    tasks.fail(send, "connection refused by dst")
    record = tasks.get(group)
    assert (record.state, record.reason) == (
        TaskState.FAILED, "step send on host src failed: connection refused by dst")
    assert record.children == (prepare, send)


def test_two_sweepers_retry_an_expired_lease_once(world: tuple[TaskService, sessionmaker[Session]],
                                                 clock: Clock) -> None:
    tasks, db = world
    ids = [spawn(tasks, db, n=n) for n in range(10)]
    tasks.claim("h1", limit=10, lease_seconds=1)
    clock.advance(2)
    results: list[int] = []
    start = threading.Barrier(2)

    def sweep() -> None:
        start.wait()
        results.append(len(tasks.expire()))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert sum(results) == 10
    assert {tasks.get(x).attempt for x in ids} == {1}
    assert {tasks.get(x).state for x in ids} == {TaskState.QUEUED}


def test_on_postgresql_a_claim_skips_a_row_another_transaction_holds_instead_of_waiting(
        world: tuple[TaskService, sessionmaker[Session]], db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL's; SQLite has one writer")
    tasks, db = world
    held, free = spawn(tasks, db, n=1), spawn(tasks, db, n=2)
    claimed: list[str] = []
    with db.begin() as holder:
        holder.execute(select(t.Task).where(t.Task.id == held).with_for_update())
        claimer = threading.Thread(target=lambda: claimed.extend(c.id for c in tasks.claim("h1", limit=5)))
        claimer.start()
        claimer.join(timeout=30)
        assert not claimer.is_alive(), "the claim waited for the locked row instead of skipping it"
    assert claimed == [free]
    assert [c.id for c in tasks.claim("h1", limit=5)] == [held]


def test_a_restart_releases_old_leases_and_purge_removes_ended_groups_with_their_steps(
        world: tuple[TaskService, sessionmaker[Session]], clock: Clock) -> None:
    tasks, db = world
    with db.begin() as s:
        group = tasks.enqueue_group(s, kind="server.migrate", resource=server())
        prepare = tasks.enqueue(s, kind="server.migrate", resource=server(), host="dst", step="prepare",
                                args=PrepareArgs(source="src"), parent_id=group)
        send = tasks.enqueue(s, kind="server.migrate", resource=server(), host="src", step="send",
                             args=SendArgs(target="dst"), parent_id=group)
    tasks.claim("dst", owner="dst/boot-1")
    [released] = tasks.release("dst", keep_owner="dst/boot-2")
    assert (released.id, released.state) == (prepare, TaskState.QUEUED)
    [again] = tasks.claim("dst", owner="dst/boot-2")
    assert (again.id, again.attempt) == (prepare, 2)
    tasks.fail(prepare, "no room", owner="dst/boot-2", attempt=2)
    assert tasks.get(send).state is TaskState.CANCELLED
    clock.advance(60)
    assert tasks.purge(clock.now) == 1
    assert tasks.for_resource(server()) == []
