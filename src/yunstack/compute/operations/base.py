"""What an operation declares, and the control plane's rules that every operation shares.

An ``Operation`` is the control plane's half of one host operation: its API verb and body model,
the states it may start from, the task state it shows, how its arguments are prepared, how the
server's ``vm_state`` follows from the host's ``Outcome``, and what else finishing it changes.
The host's half (the steps it runs through the driver) is ``agent.steps`` under the same name;
both speak the typed models of ``yunstack.protocol``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.orm import Session

from yunstack.compute import states
from yunstack.compute.driver import PowerState
from yunstack.compute.states import Allowed as Allowed
from yunstack.compute.states import allowed as allowed
from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest
from yunstack.identity.context import AuthContext
from yunstack.protocol import Outcome, StepArgs, Wire


class Body(BaseModel):
    """An ``/action`` body's arguments, checked as Nova's JSON schemas check them (unknown keys: 400)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class NoBody(Body):
    """The body of an action that takes no arguments (``{"pause": null}``)."""


def parse_body(decl: Operation, raw: object) -> Body:
    """The action's body as its model; a 400 in Nova's words when it does not fit."""
    model = decl.body or NoBody
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as exc:
        for error in exc.errors():
            if error["type"] == "value_error":  # the model's own words (see its validators)
                raise BadRequest(str(error["ctx"]["error"])) from None
        raise BadRequest(decl.body_error, name=decl.verb, value=raw) from None


@dataclass(frozen=True)
class Later:
    """What finishing an operation must do once its own transaction has committed.

    Other services write in their own transactions; on SQLite a second writer inside an open write
    transaction would wait for the lock the finish holds, so these run after it.
    """

    deleted: tuple[str, str] | None = None  # (instance id, project id): free its ports for good
    released_port: tuple[str, str, str] | None = None  # (instance id, project id, port id)
    abandoned_image: tuple[str, str] | None = None  # (image id, project id)
    doomed_volumes: tuple[str, ...] = ()  # volumes deleted with the server (delete_on_termination)
    unbound: tuple[str, str] | None = None  # (instance id, project id) whose ports left their host
    rebound: tuple[str, str, str] | None = None  # (instance id, project id, host): its ports moved there
    then: StepArgs | None = None  # the next step to queue (in the same transaction), if nothing else is
    wake: str | None = None  # the host to wake once committed (the agent link sets it when it queued ``then``)


class ActionContext(Protocol):
    """What preparing an action may use of the compute service (``ComputeService`` provides it)."""

    flavors: Any
    quotas: Any
    images: Any

    def scheduler_hosts(self, s: Session) -> list[Any]:
        """Every host as the scheduler sees it (``scheduler.HostState``), for an operation that moves a server."""

    def _check_fits(self, s: Session, row: t.Instance, flavor: Any) -> None: ...

    def _base_min_ram(self, ctx: AuthContext, image_id: str | None) -> int: ...


Prepared = tuple[StepArgs, Mapping[str, str]]  # the step's arguments, and what the API reports
Prepare = Callable[[ActionContext, Session, AuthContext, t.Instance, Any], Prepared]
Success = Callable[[Outcome, Any], str]
Apply = Callable[[t.Instance, Outcome, Any, datetime], Later]


def observed_state(power_state: int) -> str:
    """The ``vm_state`` a guest in ``power_state`` is in, when the operation did not decide one."""
    return {int(PowerState.RUNNING): states.ACTIVE, int(PowerState.PAUSED): states.PAUSED,
            int(PowerState.SUSPENDED): states.SUSPENDED}.get(power_state, states.STOPPED)


def becomes(vm_state: str) -> Success:
    """A successful operation puts the server in ``vm_state``, whatever else happened."""
    return lambda outcome, args: vm_state


def as_observed(outcome: Outcome, args: Any) -> str:
    """A successful operation leaves the server as its guest is (a snapshot, a NIC hot-plug)."""
    return observed_state(outcome.power_state)


def _nothing(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    return Later()


@dataclass(frozen=True, kw_only=True)
class Operation:
    """The control plane's declaration of one host operation (one entry of ``REGISTRY``)."""

    name: str  # the step's ``op`` (Work, Outcome, its task's step)
    args: type[Wire]  # its ``protocol`` argument model
    task: str  # the task state it shows while queued and running
    event: str  # its instance-action event (nova's compute_* names)
    on_success: Success  # the server's vm_state after the host reports success
    action: str | None = None  # Nova's action name (state check, instance-action record); None: not an action
    allowed: Allowed | None = None  # None: started only by the control plane itself (spawn, delete)
    verb: str | None = None  # the ``/servers/{id}/action`` body key that starts it
    body: type[Body] | None = None  # that body's model (None: the API parses it itself)
    body_error: str = "Invalid input for field/attribute {name}. Value: {value}."  # a bad body's 400
    status: int = 202  # the action's response status
    prepare: Prepare | None = None  # body -> step arguments (in the action's transaction)
    task_for: Callable[[Any], str] | None = None  # a task state that depends on the arguments
    keeps_state_on_failure: bool = False  # a failure leaves the server as its guest is, not in ERROR
    launches: bool = False  # success (re)starts the guest from an image: launched_at, progress 100
    progress: frozenset[str] = frozenset()  # the named steps it reports (each shown as that task state)
    apply: Apply = _nothing  # what else finishing it changes (flavors, ports, images, the next step)
    # The host that runs it, when not the instance's own (a migration's steps name theirs).
    runs_on: Callable[[Any], str | None] | None = None

    def host_for(self, args: Any) -> str | None:
        return self.runs_on(args) if self.runs_on is not None else None

    def task_state(self, args: Any) -> str:
        return self.task_for(args) if self.task_for is not None else self.task

    def vm_state_after(self, outcome: Outcome, args: Any) -> str:
        """The control plane's decision: the server's vm_state once the host reported ``outcome``.

        ``args`` are the step's arguments as queued (None when other work replaced them meanwhile).
        """
        if outcome.error is not None:
            return observed_state(outcome.power_state) if self.keeps_state_on_failure else states.ERROR
        return self.on_success(outcome, args)
