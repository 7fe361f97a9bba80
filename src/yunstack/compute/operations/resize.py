"""resize, confirmResize, revertResize: a new flavor, kept or undone.

On the server's own host when it fits there (the guest restarts with the new size, its old disk
kept until the confirm); otherwise the server moves to another host powered off, as a cold
migration does (``coldmigrate``), and confirm and revert run that move's steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy.orm import Session

from yunstack.compute import states as st
from yunstack.compute.operations import coldmigrate
from yunstack.compute.operations.base import (
    ActionContext,
    Body,
    Later,
    NoBody,
    Operation,
    Prepared,
    allowed,
    as_observed,
    becomes,
)
from yunstack.db.tables import compute as t
from yunstack.errors import BadRequest, NoValidHost
from yunstack.identity.context import AuthContext
from yunstack.protocol import ConfirmResizeArgs, FlavorData, Outcome, ResizeArgs, RevertResizeArgs


def flavor_data(snapshot: Mapping[str, Any]) -> FlavorData:
    """An instance's flavor copy as the wire model (keys this version does not know are left out)."""
    return FlavorData.model_validate({k: v for k, v in snapshot.items() if k in FlavorData.model_fields})


class ResizeBody(Body):
    flavorRef: Any  # Nova's name; any JSON value, looked up as a string
    disk_config: Any = Field(default=None, alias="OS-DCF:diskConfig")


def _resize(svc: ActionContext, s: Session, ctx: AuthContext, row: t.Instance, body: Any) -> Prepared:
    flavor = svc.flavors.get_for_boot(ctx, str(body.flavorRef))
    if flavor.id == row.flavor.get("id"):
        raise BadRequest("When resizing, instances must change flavor!")
    old = row.flavor
    grow = {"cores": max(0, flavor.vcpus - old["vcpus"]), "ram": max(0, flavor.ram - old["ram"])}
    svc.quotas.check(s, row.project_id, grow)
    if flavor.disk and flavor.disk < old.get("disk", 0):
        raise BadRequest("Resizing to a smaller disk is not supported.")
    new = flavor_data(flavor.snapshot())
    try:
        svc._check_fits(s, row, flavor)
    except NoValidHost as here:
        # Its own host cannot take the new size (full, or disabled): the server moves, powered off.
        dest = coldmigrate.destination(svc, s, row, new, here.reasons)
        return coldmigrate.start(s, ctx, row, new, dest, coldmigrate.RESIZE), {}
    return ResizeArgs(flavor=new), {}


def _resized(row: t.Instance, outcome: Outcome, args: ResizeArgs | None, now: datetime) -> Later:
    if outcome.error is None and args is not None:
        row.old_flavor = row.flavor
        row.flavor = args.flavor.model_dump(mode="json")
    return Later()


def _confirm_args(svc: ActionContext, s: Session, ctx: AuthContext, row: t.Instance, body: Any) -> Prepared:
    record = coldmigrate.unconfirmed(s, row)
    if record is not None:  # it moved: the source removes its stopped copy
        return coldmigrate.confirm_args(s, row, record), {}
    return ConfirmResizeArgs(), {}


def _revert_args(svc: ActionContext, s: Session, ctx: AuthContext, row: t.Instance, body: Any) -> Prepared:
    record = coldmigrate.unconfirmed(s, row)
    if record is not None:  # it moved: the destination drops its copy, then the source takes it back
        return coldmigrate.revert_args(s, row, record), {}
    # The host rebuilds the old spec from it.
    return RevertResizeArgs(old_flavor=flavor_data(row.old_flavor) if row.old_flavor else None), {}


def _confirmed(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    if outcome.error is None:
        row.old_flavor = None
    return Later()


def _reverted(row: t.Instance, outcome: Outcome, args: Any, now: datetime) -> Later:
    if outcome.error is None and row.old_flavor:
        row.flavor, row.old_flavor = row.old_flavor, None
    return Later()


NO_ARGUMENTS = "Action {name} takes no arguments."

RESIZE = Operation(name="resize", args=ResizeArgs, task=st.RESIZE_PREP, event="compute_resize_instance",
                   action="resize", verb="resize", body=ResizeBody, body_error="resize needs 'flavorRef'.",
                   prepare=_resize, allowed=allowed(st.ACTIVE, st.STOPPED), on_success=becomes(st.RESIZED),
                   apply=_resized)
CONFIRM_RESIZE = Operation(name="confirm_resize", args=ConfirmResizeArgs, task=st.RESIZE_CONFIRMING,
                           event="compute_confirm_resize", action="confirmResize", verb="confirmResize",
                           body=NoBody, body_error=NO_ARGUMENTS, status=204, allowed=allowed(st.RESIZED),
                           prepare=_confirm_args, on_success=as_observed, keeps_state_on_failure=True,
                           apply=_confirmed, runs_on=coldmigrate.runs_on)
REVERT_RESIZE = Operation(name="revert_resize", args=RevertResizeArgs, task=st.RESIZE_REVERTING,
                          event="compute_revert_resize_instance", action="revertResize", verb="revertResize",
                          body=NoBody, body_error=NO_ARGUMENTS, prepare=_revert_args, allowed=allowed(st.RESIZED),
                          on_success=becomes(st.ACTIVE), apply=_reverted, runs_on=coldmigrate.runs_on)

OPERATIONS = (RESIZE, CONFIRM_RESIZE, REVERT_RESIZE)
