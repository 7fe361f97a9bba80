"""delete: the guest and its files leave the host; the server's row is kept, soft-deleted."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import object_session

from yunstack.compute import states
from yunstack.compute.driver import PowerState
from yunstack.compute.operations.base import Later, Operation, becomes
from yunstack.compute.operations.shelve import shelved_image
from yunstack.db.tables import compute as t
from yunstack.protocol import DeleteArgs, Outcome
from yunstack.volume import attachments


def soft_delete(row: t.Instance, now: datetime) -> None:
    """Keep a deleted server's row (as Nova does) so usage reports still count the hours it ran.

    Without a host it is on no agent's list any more, and every reader skips ``vm_state`` deleted.
    """
    row.vm_state, row.task_state = states.DELETED, None
    row.power_state = int(PowerState.NOSTATE)
    row.host = None
    row.terminated_at = now
    row.updated_at = now


def _apply(row: t.Instance, outcome: Outcome, args: DeleteArgs | None, now: datetime) -> Later:
    if outcome.error is not None:
        return Later()
    image_id = shelved_image(row)  # a shelved server's image goes with it (as Nova)
    s = object_session(row)
    doomed: list[str] = []
    if s is not None:  # its guest is gone, and with it the hold on every volume it had
        doomed = attachments.release_all(s, row.id, now)
    soft_delete(row, now)
    return Later(deleted=(row.id, row.project_id), doomed_volumes=tuple(doomed),
                 abandoned_image=(image_id, row.project_id) if image_id else None)


DELETE = Operation(name="delete", args=DeleteArgs, task=states.DELETING, event="compute_terminate_instance",
                   action="delete", on_success=becomes(states.DELETED), apply=_apply)
