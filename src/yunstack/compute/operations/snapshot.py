"""snapshot (Nova's ``createImage``): the guest's disk becomes a new image; the server stays as it is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator
from sqlalchemy.orm import Session

from yunstack.compute import states as st
from yunstack.compute.operations.base import ActionContext, Body, Later, Operation, Prepared, allowed, as_observed
from yunstack.db.tables import compute as t
from yunstack.identity.context import AuthContext
from yunstack.protocol import Outcome, SnapshotArgs

NEEDS_NAME = "createImage needs a non-empty 'name' (and optional 'metadata')."


class CreateImageBody(Body):
    name: str
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("name", mode="plain")
    @classmethod
    def _named(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(NEEDS_NAME)
        return value

    @field_validator("metadata", mode="plain")
    @classmethod
    def _sized(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and 0 < len(k) <= 255 and isinstance(v, str) and len(v) <= 255
                for k, v in value.items()):
            raise ValueError("createImage 'metadata' must be an object of strings (keys 1-255, values "
                             "0-255 characters).")
        return value


def _prepare(svc: ActionContext, s: Session, ctx: AuthContext, row: t.Instance, body: Any) -> Prepared:
    props = {"instance_uuid": row.id, "image_type": "snapshot", "base_image_ref": row.image_id or "",
             "owner_user_name": ctx.user.name, "user_id": ctx.user.id}
    # The caller's metadata wins over the snapshot's own properties, as in Nova.
    props.update(body.metadata)
    # The image exists (queued) at once so the API can return its id; the host uploads into it.
    # As Nova: the snapshot needs the RAM its base image needed, and the flavor's disk.
    image = svc.images.create(ctx, name=body.name, disk_format="qcow2", container_format="bare",
                              visibility="private", min_disk=int(row.flavor.get("disk", 0)),
                              min_ram=svc._base_min_ram(ctx, row.image_id), properties=props)
    return SnapshotArgs(image_id=image.id), {"image_id": image.id}


def _apply(row: t.Instance, outcome: Outcome, args: SnapshotArgs | None, now: datetime) -> Later:
    if outcome.error is not None and args is not None:
        return Later(abandoned_image=(args.image_id, row.project_id))  # no queued image left behind
    return Later()


SNAPSHOT = Operation(name="snapshot", args=SnapshotArgs, task=st.IMAGE_SNAPSHOT, event="compute_snapshot_instance",
                     action="createImage", verb="createImage", body=CreateImageBody,
                     body_error=NEEDS_NAME,
                     prepare=_prepare, allowed=allowed(st.ACTIVE, st.STOPPED, st.PAUSED, st.SUSPENDED),
                     on_success=as_observed, keeps_state_on_failure=True, apply=_apply)
