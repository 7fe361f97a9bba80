"""rescue, unrescue: boot from a rescue image with the server's own disk second, and back."""

from __future__ import annotations

from yunstack.compute import states as st
from yunstack.compute.operations.base import NoBody, Operation, allowed, becomes
from yunstack.protocol import RescueArgs, UnrescueArgs

NOT_NULL = "Invalid input for field/attribute {name}. Value: {value}. {value} is not of type 'null'"

# rescue's body (adminPass, rescue_image_ref) is parsed by the API; it answers 200 with the password.
RESCUE = Operation(name="rescue", args=RescueArgs, task=st.RESCUING, event="compute_rescue_instance",
                   action="rescue", verb="rescue", status=200, allowed=allowed(st.ACTIVE, st.STOPPED, st.ERROR),
                   on_success=becomes(st.RESCUED))
UNRESCUE = Operation(name="unrescue", args=UnrescueArgs, task=st.UNRESCUING, event="compute_unrescue_instance",
                     action="unrescue", verb="unrescue", body=NoBody, body_error=NOT_NULL,
                     allowed=allowed(st.RESCUED), on_success=becomes(st.ACTIVE))

OPERATIONS = (RESCUE, UNRESCUE)
