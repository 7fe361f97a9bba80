"""rebuild: a fresh root disk from a (new) image; the server returns to the power state it had."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from yunstack.compute import states as st
from yunstack.compute.operations.base import Later, Operation, allowed
from yunstack.compute.operations.migrate import migration_row
from yunstack.db.tables import compute as t
from yunstack.protocol import Outcome, RebuildArgs
from yunstack.protocol.steps import REBUILD_SPAWNING


def _after(outcome: Outcome, args: RebuildArgs | None) -> str:
    # A stopped server stays SHUTOFF (Nova); the host left its new guest powered off.
    return st.STOPPED if args is not None and args.keep_stopped else st.ACTIVE


# An evacuation's statuses (Nova's): accepted when the server was fenced and placed, then done or
# failed with the rebuild on the destination; error when no host could take it.
EVACUATION = "evacuation"
ACCEPTED, DONE, FAILED, ERROR = "accepted", "done", "failed", "error"


def _rebuilt(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    """An evacuation's rebuild ends its ``migrations`` row (a plain rebuild has none)."""
    record = migration_row(row, args.migration_id) if args is not None and args.migration_id else None
    if record is not None:
        record.status = DONE if outcome.error is None else FAILED
        record.error = outcome.error
        record.updated_at = now
    return Later()


# The body (imageRef, name, metadata, ...) is parsed by the API into ``compute.lifecycle.Rebuild``.
REBUILD = Operation(name="rebuild", args=RebuildArgs, task=st.REBUILDING, event="compute_rebuild_instance",
                    action="rebuild", verb="rebuild", allowed=allowed(st.ACTIVE, st.STOPPED, st.ERROR),
                    on_success=_after, launches=True, progress=frozenset({REBUILD_SPAWNING}), apply=_rebuilt)
