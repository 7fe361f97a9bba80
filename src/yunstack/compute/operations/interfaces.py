"""attach_interface, detach_interface: hot-plug a NIC into the guest, or unplug it.

The port itself belongs to the network service: a detached port (or one whose attach failed) is
released only once the host reports the guest let go of it, so its tap never vanishes under QEMU.
"""

from __future__ import annotations

from datetime import datetime

from yunstack.compute import states as st
from yunstack.compute.operations.base import Later, Operation, allowed, as_observed
from yunstack.db.tables import compute as t
from yunstack.protocol import AttachInterfaceArgs, DetachInterfaceArgs, Outcome


def _attached(row: t.Instance, outcome: Outcome, args: AttachInterfaceArgs | None, now: datetime) -> Later:
    if outcome.error is not None and args is not None:
        return Later(released_port=(row.id, row.project_id, args.port_id))  # never plugged
    return Later()


def _detached(row: t.Instance, outcome: Outcome, args: DetachInterfaceArgs | None, now: datetime) -> Later:
    if outcome.error is None and args is not None:
        return Later(released_port=(row.id, row.project_id, args.port_id))
    return Later()


ATTACH_INTERFACE = Operation(name="attach_interface", args=AttachInterfaceArgs, task=st.ATTACHING_INTERFACE,
                             event="compute_attach_interface", action="attach_interface",
                             allowed=allowed(st.ACTIVE, st.STOPPED), on_success=as_observed,
                             keeps_state_on_failure=True, apply=_attached)
DETACH_INTERFACE = Operation(name="detach_interface", args=DetachInterfaceArgs, task=st.DETACHING_INTERFACE,
                             event="compute_detach_interface", action="detach_interface",
                             allowed=allowed(st.ACTIVE, st.STOPPED), on_success=as_observed,
                             keeps_state_on_failure=True, apply=_detached)

OPERATIONS = (ATTACH_INTERFACE, DETACH_INTERFACE)
