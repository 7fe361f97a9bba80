"""attach_volume, detach_volume: a volume in or out of a server's guest (Nova's os-volume_attachments).

The compute host does the hot-plug; the volume's status and attachment follow the host's report in
the same transaction (``volume.attachments``).  A failure never leaves the server in ERROR: the
guest is as it was, and the volume says why on its ``status_reason``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import object_session

from yunstack.compute import states as st
from yunstack.compute.operations.base import Later, Operation, allowed, as_observed
from yunstack.db.tables import compute as t
from yunstack.protocol import AttachedResult, AttachVolumeArgs, DetachVolumeArgs, ExtendVolumeArgs, Outcome
from yunstack.volume import attachments


def _attached(row: t.Instance, outcome: Outcome, args: AttachVolumeArgs | None, now: datetime) -> Later:
    s = object_session(row)
    if s is None or args is None:
        return Later()
    if outcome.error is not None:
        attachments.attach_failed(s, row.id, args.volume_id, outcome.error, now)
    else:
        device = outcome.result.device if isinstance(outcome.result, AttachedResult) else "vdb"
        attachments.attached(s, row.id, args.volume_id, device, now)
    return Later()


def _detached(row: t.Instance, outcome: Outcome, args: DetachVolumeArgs | None, now: datetime) -> Later:
    s = object_session(row)
    if s is None or args is None:
        return Later()
    if outcome.error is not None:
        attachments.detach_failed(s, row.id, args.volume_id, outcome.error, now)
    else:
        attachments.detached(s, row.id, args.volume_id, now)
    return Later()


def _extended(row: t.Instance, outcome: Outcome, args: ExtendVolumeArgs | None, now: datetime) -> Later:
    s = object_session(row)
    if s is None or args is None:
        return Later()
    if outcome.error is not None:
        attachments.extend_failed(s, args.volume_id, outcome.error, now)
    else:
        attachments.extended(s, args.volume_id, args.size_gib, now)
    return Later()


# Nova's attach_volume/detach_volume states (``check_instance_state`` in nova.compute.api).
_STATES = (st.ACTIVE, st.PAUSED, st.STOPPED, st.RESIZED)
ATTACH_VOLUME = Operation(name="attach_volume", args=AttachVolumeArgs, task=st.ATTACHING_VOLUME,
                          event="compute_attach_volume", action="attach_volume", allowed=allowed(*_STATES),
                          on_success=as_observed, keeps_state_on_failure=True, apply=_attached)
DETACH_VOLUME = Operation(name="detach_volume", args=DetachVolumeArgs, task=st.DETACHING_VOLUME,
                          event="compute_detach_volume", action="detach_volume", allowed=allowed(*_STATES),
                          on_success=as_observed, keeps_state_on_failure=True, apply=_detached)

# Cinder's extend of an in-use volume (Nova's volume-extended event): the guest sees the new size.
EXTEND_VOLUME = Operation(name="extend_volume", args=ExtendVolumeArgs, task=st.EXTENDING_VOLUME,
                          event="compute_extend_volume", action="extend_volume", allowed=allowed(*_STATES),
                          on_success=as_observed, keeps_state_on_failure=True, apply=_extended)

OPERATIONS = (ATTACH_VOLUME, DETACH_VOLUME, EXTEND_VOLUME)
