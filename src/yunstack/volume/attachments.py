"""A volume's attachments to servers: the rows and the volume statuses that follow them.

The compute host's report of ``attach_volume``/``detach_volume`` (``compute.operations.volumes``)
and a server's deletion change them, in the transaction that applies the report, so a volume's
status and its attachments never disagree: ``attaching`` until the guest has the disk, then
``in-use``; ``detaching`` until the guest let go, then ``available``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from yunstack.db.tables import volume as t
from yunstack.volume import states

ATTACHING, ATTACHED, DETACHING = "attaching", "attached", "detaching"
# A block device mapping's rows at a server's create: waiting for its volume to be made; one whose
# server went away meanwhile (the end of the volume's creation removes it); one whose volume could
# not be made (its server's build fails with the volume's reason).
RESERVED, RELEASED, FAILED = "reserved", "released", "error"
# Who made a row: Nova's path (it plugs the disk) or a record of Cinder's attachments API (it plugs nothing).
COMPUTE, CINDER = "compute", "cinder"


def _of(s: Session, instance_id: str, volume_id: str) -> tuple[t.VolumeAttachment | None, t.Volume | None]:
    row = s.scalar(select(t.VolumeAttachment).where(t.VolumeAttachment.instance_id == instance_id,
                                                    t.VolumeAttachment.volume_id == volume_id))
    return row, s.get(t.Volume, volume_id)


def attached(s: Session, instance_id: str, volume_id: str, device: str, now: datetime) -> None:
    att, vol = _of(s, instance_id, volume_id)
    if att is not None:
        att.status, att.device, att.attached_at, att.updated_at = ATTACHED, f"/dev/{device}", now, now
    if vol is not None:
        vol.status, vol.status_reason, vol.updated_at = states.IN_USE, None, now


def _end_export(s: Session, att: t.VolumeAttachment) -> None:
    """An attachment across hosts ended: its export goes too (a storage host's step)."""
    if att.connection is not None:
        from yunstack.volume import operations  # it imports this module

        operations.unexport(s, att.volume_id)


def attach_failed(s: Session, instance_id: str, volume_id: str, why: str, now: datetime) -> None:
    """The disk never reached the guest: the volume is free again, with the reason kept."""
    att, vol = _of(s, instance_id, volume_id)
    if att is not None:
        _end_export(s, att)
        s.delete(att)
    if vol is not None:
        vol.status, vol.status_reason, vol.updated_at = states.AVAILABLE, f"attach failed: {why}"[:2000], now


def detached(s: Session, instance_id: str, volume_id: str, now: datetime) -> None:
    att, vol = _of(s, instance_id, volume_id)
    if att is not None:
        _end_export(s, att)
        s.delete(att)
    if vol is not None:
        s.flush()
        others = s.scalar(select(t.VolumeAttachment.id).where(t.VolumeAttachment.volume_id == volume_id).limit(1))
        vol.status = states.IN_USE if others else states.AVAILABLE
        vol.status_reason, vol.updated_at = None, now


def detach_failed(s: Session, instance_id: str, volume_id: str, why: str, now: datetime) -> None:
    """The guest kept the disk: it stays attached (as Nova leaves it), the reason on the volume."""
    att, vol = _of(s, instance_id, volume_id)
    if att is not None:
        att.status, att.updated_at = ATTACHED, now
    if vol is not None:
        vol.status, vol.status_reason, vol.updated_at = states.IN_USE, f"detach failed: {why}"[:2000], now


def release_all(s: Session, instance_id: str, now: datetime) -> list[str]:
    """The server is gone (its guest with it): every volume it had is free.

    Returns the ids of the volumes to delete with it (``delete_on_termination``).  A volume still
    being made for the server keeps a ``released`` row: its creation's end frees (or deletes) it.
    """
    rows = list(s.scalars(select(t.VolumeAttachment).where(t.VolumeAttachment.instance_id == instance_id,
                                                           t.VolumeAttachment.origin == COMPUTE)))
    doomed = []
    for att in rows:
        vol = s.get(t.Volume, att.volume_id)
        if vol is not None and vol.status == states.CREATING:
            att.status, att.updated_at = RELEASED, now
            continue
        if att.status == FAILED:  # the volume's error status stays: it says why
            s.delete(att)
            if att.delete_on_termination:
                doomed.append(att.volume_id)
            continue
        if att.delete_on_termination:
            doomed.append(att.volume_id)
        detached(s, instance_id, att.volume_id, now)
    return doomed


def at_boot(s: Session, instance_id: str, building: bool) -> list[t.VolumeAttachment]:
    """The volumes a guest has from its boot on, in the order it sees them (the root first).

    Those attached, and while the server is being built those its block device mapping is
    attaching; a hot-plug under way is the attach step's, not the boot's.
    """
    wanted = (ATTACHED, ATTACHING) if building else (ATTACHED,)
    rows = s.scalars(select(t.VolumeAttachment).where(t.VolumeAttachment.instance_id == instance_id,
                                                      t.VolumeAttachment.origin == COMPUTE,
                                                      t.VolumeAttachment.status.in_(wanted))
                     .order_by(t.VolumeAttachment.boot_index.is_(None), t.VolumeAttachment.boot_index,
                               t.VolumeAttachment.created_at))
    return list(rows)


def boot_attached(s: Session, instance_id: str, now: datetime) -> None:
    """The guest booted with its block device mapping: those volumes are in use."""
    for att in s.scalars(select(t.VolumeAttachment).where(t.VolumeAttachment.instance_id == instance_id,
                                                          t.VolumeAttachment.origin == COMPUTE,
                                                          t.VolumeAttachment.status == ATTACHING)):
        attached(s, instance_id, att.volume_id, (att.device or "").removeprefix("/dev/"), now)


def of_servers(s: Session, instance_ids: list[str]) -> dict[str, list[t.VolumeAttachment]]:
    """The attachments of these servers, oldest first (for ``volumes_attached`` in server views): Nova's
    own, not the records others made through Cinder's attachments API (Nova does not know those)."""
    out: dict[str, list[t.VolumeAttachment]] = {i: [] for i in instance_ids}
    if instance_ids:
        for att in s.scalars(select(t.VolumeAttachment).where(t.VolumeAttachment.instance_id.in_(instance_ids),
                                                              t.VolumeAttachment.origin == COMPUTE)
                             .order_by(t.VolumeAttachment.created_at)):
            out[att.instance_id].append(att)
    return out


def extended(s: Session, volume_id: str, size_gib: int, now: datetime) -> None:
    """The attached volume grew (its guest was told): the new size, and ``in-use`` again."""
    vol = s.get(t.Volume, volume_id)
    if vol is not None:
        vol.size, vol.status, vol.status_reason, vol.updated_at = size_gib, states.IN_USE, None, now


def extend_failed(s: Session, volume_id: str, why: str, now: datetime) -> None:
    """The volume kept its size (Cinder would say ``error_extending``; it stays usable in its guest)."""
    vol = s.get(t.Volume, volume_id)
    if vol is not None:
        vol.status, vol.status_reason, vol.updated_at = states.IN_USE, f"extend failed: {why}"[:2000], now
