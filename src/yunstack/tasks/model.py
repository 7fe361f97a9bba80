"""What a task is: its states, the resource it acts on, and the typed steps each kind of work has.

A *kind* names a piece of long-running work (``server.reboot``, ``server.migrate``) and declares
its steps, each with a pydantic model for its arguments (and, if it reports one, its result).
The task service refuses arguments that are not the declared model, and reads stored arguments
back as that model, so no free-form dict crosses the service's API in either direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel


class TaskState(StrEnum):
    QUEUED = "queued"  # waiting for its host to claim it (or, for a parent, for its first child to start)
    RUNNING = "running"  # a host holds it under a lease (a parent: some child has started)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (TaskState.QUEUED, TaskState.RUNNING)
FINISHED = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


@dataclass(frozen=True, kw_only=True)
class Resource:
    """What a task acts on: ``Resource(type="server", id=..., project_id=...)``."""

    type: str
    id: str
    project_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class StepSpec:
    """One step's argument model and, if the step reports one, its result model."""

    args: type[BaseModel]
    result: type[BaseModel] | None = None


@dataclass(frozen=True, kw_only=True)
class TaskKind:
    """A kind of work and its steps; ``max_attempts`` is how often a step runs before it fails for good."""

    name: str
    steps: Mapping[str, StepSpec]
    max_attempts: int = 3

    def step(self, name: str) -> StepSpec:
        try:
            return self.steps[name]
        except KeyError:
            raise ValueError(f"task kind {self.name!r} has no step {name!r}") from None


class TaskRegistry:
    """Kinds by name.  Each kind registers once, where its steps are defined (an op's module)."""

    def __init__(self) -> None:
        self._kinds: dict[str, TaskKind] = {}

    def register(self, kind: TaskKind) -> TaskKind:
        known = self._kinds.get(kind.name)
        if known is not None and known != kind:
            raise ValueError(f"task kind {kind.name!r} is already registered with other steps")
        if kind.max_attempts < 1:
            raise ValueError(f"task kind {kind.name!r}: max_attempts must be at least 1")
        self._kinds[kind.name] = kind
        return kind

    def kind(self, name: str) -> TaskKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise ValueError(f"unknown task kind {name!r}: register it first") from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds


# The process-wide registry the composition root hands to the task service.
REGISTRY = TaskRegistry()


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A step a host now holds: run it, renew the lease while it runs, then complete or fail it."""

    id: str
    kind: str
    step: str
    resource: Resource
    host: str
    args: BaseModel  # an instance of the step's registered model
    attempt: int  # 1 on the first run, 2 on the first retry, ...
    max_attempts: int
    lease_owner: str
    lease_expires_at: datetime
    request_id: str | None
    parent_id: str | None


@dataclass(frozen=True, kw_only=True)
class TaskRecord:
    """A task as the operations view shows it (arguments and result as stored, for display)."""

    id: str
    kind: str
    step: str | None
    resource: Resource
    host: str | None
    state: TaskState
    attempt: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    request_id: str | None
    parent_id: str | None
    reason: str | None
    args: Mapping[str, object]
    result: Mapping[str, object] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    children: tuple[str, ...] = field(default=())

    @property
    def may_cancel(self) -> bool:
        """Only work no host has started can be cancelled (Incus's ``may_cancel``)."""
        return self.state is TaskState.QUEUED


@dataclass(frozen=True, kw_only=True)
class Expiry:
    """What the lease sweep did to one task whose lease ran out."""

    id: str
    host: str | None
    state: TaskState  # QUEUED (retried) or FAILED (out of attempts)
    reason: str
