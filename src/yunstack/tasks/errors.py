"""The task engine's error names, as leaves of our tree::

    NotFound > TaskNotFound
    Conflict > LeaseLost, TaskNotCancellable
"""

from __future__ import annotations

from yunstack.errors import Conflict, NotFound


class TaskNotFound(NotFound):
    """Raised when no task has the id."""

    message = "Task {id} could not be found."


class LeaseLost(Conflict):
    """Raised when a host renews, completes or fails a task it no longer holds (its lease ran out)."""

    message = "Task {id} is not running under a lease of {owner}: it is {state}."


class TaskNotCancellable(Conflict):
    """Raised when a task that already runs or has finished is asked to be cancelled."""

    message = "Task {id} cannot be cancelled: it is {state}."
