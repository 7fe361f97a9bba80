"""What the task engine's tests share: a clock they move by hand and a few registered kinds of work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from yunstack.tasks.model import Resource, StepSpec, TaskKind, TaskRegistry
from yunstack.tasks.service import TaskService


class Clock:
    """Time that moves only when a test says so: lease expiry without sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Args(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SpawnArgs(Args):
    image_id: str


class SpawnResult(Args):
    adopted: bool


class RebootArgs(Args):
    hard: bool = False


class PrepareArgs(Args):
    source: str


class SendArgs(Args):
    target: str


class FinishArgs(Args):
    pass


REGISTRY = TaskRegistry()
REGISTRY.register(TaskKind(name="server.spawn", steps={"spawn": StepSpec(args=SpawnArgs, result=SpawnResult)},
                           max_attempts=2))
REGISTRY.register(TaskKind(name="server.reboot", steps={"reboot": StepSpec(args=RebootArgs)}))
REGISTRY.register(TaskKind(name="server.migrate", steps={
    "prepare": StepSpec(args=PrepareArgs), "send": StepSpec(args=SendArgs), "finish": StepSpec(args=FinishArgs)}))


def server(n: int = 1) -> Resource:
    return Resource(type="server", id=f"00000000-0000-0000-0000-{n:012d}", project_id="p1")


def engine_service(engine: Engine, clock: Clock) -> tuple[TaskService, sessionmaker[Session]]:
    db = sessionmaker(engine, expire_on_commit=False)
    return TaskService(db, REGISTRY, clock=clock), db


def spawn(tasks: TaskService, db: sessionmaker[Session], host: str = "h1", n: int = 1,
          request_id: str | None = "req-1") -> str:
    """One queued spawn of server ``n`` on ``host``, committed."""
    with db.begin() as s:
        return tasks.enqueue(s, kind="server.spawn", resource=server(n), host=host, step="spawn",
                             args=SpawnArgs(image_id="img"), request_id=request_id)
