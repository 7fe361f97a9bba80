"""Reverting a volume to its latest snapshot (Cinder 3.40's ``revert`` action).

Cinder's checks, in its order and with its answers: the snapshot named must be the volume's
latest (400 if the volume has none, or another is named), of the volume's size (400: a volume
extended since cannot go back), and both must be ``available`` (409).  Then the volume shows
``reverting`` and the snapshot ``restoring`` while the storage host gives the volume the
snapshot's bytes again (a ``volume_revert`` step, safe to repeat); its report makes both
``available``, or the volume ``error`` (the snapshot ``available``) when the host failed
(``operations._revert``).
"""

from __future__ import annotations

from sqlalchemy import desc, select, update
from sqlalchemy.orm import Session

from yunstack.db.tables import volume as t
from yunstack.errors import BadRequest, Conflict
from yunstack.protocol import VolumeRevertArgs
from yunstack.types import utcnow
from yunstack.volume import operations, states


class RevertRefused(BadRequest):
    """Raised when the snapshot named is not one a volume can be reverted to."""

    message = "{reason}"


class RevertConflict(Conflict):
    """Raised when the volume or its snapshot is not ``available`` for a revert."""

    message = "{reason}"


def latest_snapshot(s: Session, volume_id: str) -> t.Snapshot | None:
    """The volume's newest snapshot, whatever its status (Cinder's ``get_latest_snapshot``)."""
    return s.scalar(select(t.Snapshot).where(t.Snapshot.volume_id == volume_id)
                    .order_by(desc(t.Snapshot.created_at), desc(t.Snapshot.id)).limit(1))


def start(s: Session, row: t.Volume, snapshot_id: str | None, request_id: str | None) -> None:
    """Check the revert and queue it on the volume's storage host, in the caller's transaction."""
    latest = latest_snapshot(s, row.id)
    if latest is None:
        raise RevertRefused(reason=f"Volume {row.id} doesn't have any snapshots.")
    if snapshot_id != latest.id:
        raise RevertRefused(reason=f"Specified snapshot {snapshot_id} is None or not the latest one of volume "
                                   f"{row.id}.")
    if row.size != latest.size:
        raise RevertRefused(reason=f"Can't revert volume {row.id} to its latest snapshot {latest.id}. The volume "
                                   f"size must be equal to the snapshot size.")
    busy = RevertConflict(reason=f"Invalid volume: Can't revert volume {row.id} to its latest snapshot "
                                 f"{latest.id}. Volume's status must be 'available'.")
    if row.status != states.AVAILABLE:
        raise busy
    if latest.status != states.AVAILABLE:
        raise RevertConflict(reason=f"Invalid snapshot: Can't revert volume {row.id} to its latest snapshot "
                                    f"{latest.id}. Snapshot's status must be 'available'.")
    now = utcnow()
    # Only from "available", in one statement: an attach that read "available" too waits for this
    # (it locks the row) and then sees "reverting"; one that reserved first makes this 409.
    taken = s.execute(update(t.Volume).where(t.Volume.id == row.id, t.Volume.status == states.AVAILABLE)
                      .values(status=states.REVERTING, status_reason=None, updated_at=now)
                      .execution_options(synchronize_session=False))
    if getattr(taken, "rowcount", 1) != 1:
        raise busy
    s.refresh(row)
    latest.status, latest.updated_at = states.RESTORING, now
    operations.queue(s, row, VolumeRevertArgs(snapshot_id=latest.id), request_id)
