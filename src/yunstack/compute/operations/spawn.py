"""spawn: build and start a new server's guest (queued by a create once its ports exist, and its
block device mapping's volumes when it has some)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import object_session

from yunstack.compute import states
from yunstack.compute.operations.base import Later, Operation, becomes
from yunstack.db.tables import compute as t
from yunstack.protocol import Outcome, SpawnArgs
from yunstack.volume import attachments


def _apply(row: t.Instance, outcome: Outcome, args: SpawnArgs | None, now: datetime) -> Later:
    s = object_session(row)
    if outcome.error is None and s is not None:  # the guest booted with the volumes it was given
        attachments.boot_attached(s, row.id, now)
    return Later()


SPAWN = Operation(name="spawn", args=SpawnArgs, task=states.SPAWNING, event="compute_build_and_run_instance",
                  on_success=becomes(states.ACTIVE), launches=True, apply=_apply)
