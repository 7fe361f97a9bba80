"""shelve, shelve_offload, unshelve: a server set aside as an image, off its host, and back.

Shelving is two host steps, each its own queued work (``shelve``: stop and upload the disk; then
``shelve_offload``: the guest and its files leave the host), so a control-plane restart between
them resumes at the step that did not finish.  An offloaded server has no host: its claim is
released, its ports stay (unbound), and ``unshelve`` schedules it again (``compute.lifecycle``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from yunstack.compute import states as st
from yunstack.compute.operations.base import Later, NoBody, Operation, allowed, becomes
from yunstack.db.tables import compute as t
from yunstack.protocol import Outcome, ShelveArgs, ShelveOffloadArgs, UnshelveArgs
from yunstack.protocol.steps import SHELVING_IMAGE_PENDING_UPLOAD, SHELVING_IMAGE_UPLOADING, SPAWNING

SHELVED_IMAGE = "shelved_image_id"  # system_metadata key, as Nova names it
SHELVED_AT, SHELVED_HOST = "shelved_at", "shelved_host"
NOT_NULL = "Invalid input for field/attribute {name}. Value: {value}. {value} is not of type 'null'"


def shelved_image(row: t.Instance) -> str | None:
    """The shelve image a server owns, from its shelve request until its unshelve finished (or the
    shelve failed): deleted with the server, even when the delete cut the shelve short."""
    image_id = (row.system_metadata or {}).get(SHELVED_IMAGE)
    return str(image_id) if image_id else None


def _forget_image(row: t.Instance) -> Later:
    """The shelve image has served (Nova deletes it): after a failed shelve or a finished unshelve."""
    image_id = shelved_image(row)
    row.system_metadata = {k: v for k, v in (row.system_metadata or {}).items()
                           if k not in (SHELVED_IMAGE, SHELVED_AT, SHELVED_HOST)}
    return Later(abandoned_image=(image_id, row.project_id)) if image_id else Later()


def _shelved(row: t.Instance, outcome: Outcome, args: ShelveArgs | None, now: datetime) -> Later:
    if outcome.error is not None:
        return _forget_image(row)
    # shelved_offload_time = 0: the offload is the next step, queued as its own work.
    return Later(then=ShelveOffloadArgs()) if args is not None and args.offload else Later()


def _offloaded(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    if outcome.error is not None:
        return Later()
    row.host = None  # its claim on the host is released with it
    return Later(unbound=(row.id, row.project_id))


def _unshelved(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    return _forget_image(row) if outcome.error is None else Later()


SHELVE = Operation(name="shelve", args=ShelveArgs, task=st.SHELVING, event="compute_shelve_instance",
                   action="shelve", verb="shelve", body=NoBody, body_error=NOT_NULL,
                   allowed=allowed(st.ACTIVE, st.STOPPED, st.PAUSED, st.SUSPENDED),
                   on_success=becomes(st.SHELVED), keeps_state_on_failure=True, apply=_shelved,
                   progress=frozenset({SHELVING_IMAGE_PENDING_UPLOAD, SHELVING_IMAGE_UPLOADING}))
SHELVE_OFFLOAD = Operation(name="shelve_offload", args=ShelveOffloadArgs, task=st.SHELVING_OFFLOADING,
                           event="compute_shelve_offload_instance", action="shelveOffload", verb="shelveOffload",
                           body=NoBody, body_error=NOT_NULL, allowed=allowed(st.SHELVED),
                           on_success=becomes(st.SHELVED_OFFLOADED), apply=_offloaded)
UNSHELVE = Operation(name="unshelve", args=UnshelveArgs, task=st.UNSHELVING, event="compute_unshelve_instance",
                     action="unshelve", verb="unshelve", body=NoBody, body_error=NOT_NULL,
                     allowed=allowed(st.SHELVED, st.SHELVED_OFFLOADED), on_success=becomes(st.ACTIVE),
                     launches=True, apply=_unshelved, progress=frozenset({SPAWNING}))

OPERATIONS = (SHELVE, SHELVE_OFFLOAD, UNSHELVE)
