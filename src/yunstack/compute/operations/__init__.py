"""The control plane's half of every host operation, one module per verb family, and their registry.

``REGISTRY`` maps an operation's name (the ``op`` of ``Work``/``Outcome``) to its declaration.  The
API's action dispatch (``by_verb``), ``ComputeService``'s state checks (``by_action``), the agent
link's finish and progress all read it; the host's half is ``agent.steps`` under the same names.
Adding an operation: its argument model in ``protocol.steps``, one module here, one in
``agent/steps/``, and a line in each registry (``tests/unit/compute/test_operations.py`` checks
they agree).  See ``docs/explanation/operations.md``.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from yunstack.compute.operations import (
    coldmigrate,
    delete,
    interfaces,
    migrate,
    power,
    rebuild,
    rescue,
    resize,
    shelve,
    snapshot,
    spawn,
    volumes,
)
from yunstack.compute.operations.base import Allowed, Body, Later, NoBody, Operation, observed_state, parse_body
from yunstack.compute.operations.queue import (
    MOVING,
    Queued,
    busy,
    current,
    end_work,
    hosts_of,
    queue_step,
    queued,
    register_kinds,
    steps_on,
    waiting,
)
from yunstack.protocol import StepArgs

_ALL: tuple[Operation, ...] = (spawn.SPAWN, delete.DELETE, *power.OPERATIONS, snapshot.SNAPSHOT,
                               *resize.OPERATIONS, *interfaces.OPERATIONS, rebuild.REBUILD,
                               *rescue.OPERATIONS, *shelve.OPERATIONS, *migrate.OPERATIONS,
                               *coldmigrate.OPERATIONS, *volumes.OPERATIONS)

REGISTRY: dict[str, Operation] = {op.name: op for op in _ALL}
register_kinds(_ALL)  # each operation's step is a task kind of its own (``server.<op>``)
_BY_VERB = {op.verb: op for op in _ALL if op.verb is not None}
_BY_ACTION = {op.action: op for op in _ALL if op.action is not None}


_ARGS: TypeAdapter[StepArgs] = TypeAdapter(StepArgs)


def no_args(decl: Operation) -> StepArgs:
    """The arguments of an operation that takes none (``StopArgs()`` for stop)."""
    return _ARGS.validate_python({"op": decl.name})


def operation(name: str) -> Operation:
    """The declaration of operation ``name`` (KeyError for an unknown one)."""
    return REGISTRY[name]


def by_verb(verb: str) -> Operation | None:
    """The operation an ``/action`` body key starts, if it starts one."""
    return _BY_VERB.get(verb)


def by_action(action: str) -> Operation:
    """The operation of Nova's action name (``createImage``, ``shelveOffload``, ``attach_interface``)."""
    return _BY_ACTION[action]


__all__ = [
    "MOVING",
    "REGISTRY",
    "Allowed",
    "Body",
    "Later",
    "NoBody",
    "Operation",
    "Queued",
    "busy",
    "by_action",
    "by_verb",
    "current",
    "end_work",
    "hosts_of",
    "no_args",
    "observed_state",
    "operation",
    "parse_body",
    "queue_step",
    "queued",
    "steps_on",
    "waiting",
]
