"""The power verbs: stop, start, reboot, pause/unpause, suspend/resume.

A failure of any of them leaves the server as its guest is, with a fault (Nova), never in ERROR.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator
from sqlalchemy.orm import Session

from yunstack.compute import states as st
from yunstack.compute.operations.base import (
    ActionContext,
    Body,
    NoBody,
    Operation,
    Prepared,
    allowed,
    becomes,
)
from yunstack.db.tables import compute as t
from yunstack.errors import Conflict
from yunstack.identity.context import AuthContext
from yunstack.protocol import PauseArgs, RebootArgs, ResumeArgs, StartArgs, StopArgs, SuspendArgs, UnpauseArgs

NO_ARGUMENTS = "Action {name} takes no arguments."


class RebootBody(Body):
    type: str

    @field_validator("type", mode="plain")
    @classmethod
    def _soft_or_hard(cls, value: Any) -> str:
        if str(value).upper() not in ("SOFT", "HARD"):
            raise ValueError("reboot needs {\"type\": \"SOFT\" or \"HARD\"}.")
        return str(value).upper()


def _reboot_args(svc: ActionContext, s: Session, ctx: AuthContext, row: t.Instance, body: Any) -> Prepared:
    kind: Literal["SOFT", "HARD"] = "HARD" if body.type == "HARD" else "SOFT"
    if row.vm_state != st.ACTIVE and kind == "SOFT":
        raise Conflict("Cannot 'reboot' instance {id} while it is in vm_state {state}; use a HARD reboot",
                       id=row.id, state=row.vm_state)
    return RebootArgs(type=kind), {}


def _reboot_task(args: RebootArgs) -> str:
    return st.REBOOTING_HARD if args.type == "HARD" else st.REBOOTING


STOP = Operation(name="stop", args=StopArgs, task=st.POWERING_OFF, event="compute_stop_instance",
                 action="stop", verb="os-stop", body=NoBody, body_error=NO_ARGUMENTS,
                 allowed=allowed(st.ACTIVE, st.ERROR), on_success=becomes(st.STOPPED),
                 keeps_state_on_failure=True)
START = Operation(name="start", args=StartArgs, task=st.POWERING_ON, event="compute_start_instance",
                  action="start", verb="os-start", body=NoBody, body_error=NO_ARGUMENTS,
                  allowed=allowed(st.STOPPED), on_success=becomes(st.ACTIVE), keeps_state_on_failure=True)
REBOOT = Operation(name="reboot", args=RebootArgs, task=st.REBOOTING, task_for=_reboot_task,
                   event="compute_reboot_instance", action="reboot", verb="reboot", body=RebootBody,
                   body_error='reboot needs {"type": "SOFT" or "HARD"}.', prepare=_reboot_args,
                   allowed=allowed(st.ACTIVE, st.STOPPED, st.PAUSED, st.SUSPENDED, st.ERROR,
                                   tasks=(None, st.REBOOTING)),
                   on_success=becomes(st.ACTIVE), keeps_state_on_failure=True)
PAUSE = Operation(name="pause", args=PauseArgs, task=st.PAUSING, event="compute_pause_instance",
                  action="pause", verb="pause", body=NoBody, body_error=NO_ARGUMENTS,
                  allowed=allowed(st.ACTIVE), on_success=becomes(st.PAUSED), keeps_state_on_failure=True)
UNPAUSE = Operation(name="unpause", args=UnpauseArgs, task=st.UNPAUSING, event="compute_unpause_instance",
                    action="unpause", verb="unpause", body=NoBody, body_error=NO_ARGUMENTS,
                    allowed=allowed(st.PAUSED), on_success=becomes(st.ACTIVE), keeps_state_on_failure=True)
SUSPEND = Operation(name="suspend", args=SuspendArgs, task=st.SUSPENDING, event="compute_suspend_instance",
                    action="suspend", verb="suspend", body=NoBody, body_error=NO_ARGUMENTS,
                    allowed=allowed(st.ACTIVE), on_success=becomes(st.SUSPENDED), keeps_state_on_failure=True)
RESUME = Operation(name="resume", args=ResumeArgs, task=st.RESUMING, event="compute_resume_instance",
                   action="resume", verb="resume", body=NoBody, body_error=NO_ARGUMENTS,
                   allowed=allowed(st.SUSPENDED), on_success=becomes(st.ACTIVE), keeps_state_on_failure=True)

OPERATIONS = (STOP, START, REBOOT, PAUSE, UNPAUSE, SUSPEND, RESUME)
