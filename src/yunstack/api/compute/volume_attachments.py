"""Nova's os-volume_attachments: a server's volumes (attach, list, show, detach)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Response
from pydantic import field_validator

from yunstack.api.deps import Ctx, Svc
from yunstack.api.middleware import request_id
from yunstack.api.schemas import Strict
from yunstack.compute.volumeattach import VolumeAttachment
from yunstack.errors import BadRequest

router = APIRouter(prefix="/compute/v2.1", tags=["compute"])
Json = dict[str, Any]
ATTACHMENTS = "/servers/{server_id}/os-volume_attachments"
_DEVICE = re.compile(r"(^/dev/x{0,1}[a-z]{0,1}d{0,1})([a-z]+)[0-9]*$")  # Nova's schema


class VolumeAttachmentRequest(Strict):
    volumeId: str
    device: str | None = None  # Nova takes it and, with libvirt, ignores it: the guest names its disks

    @field_validator("volumeId")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValueError(f"Invalid input for field/attribute volumeId. Value: {value}. "
                             f"'{value}' is not a 'uuid'") from None
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and not _DEVICE.match(value):
            raise ValueError(f"Invalid input for field/attribute device. Value: {value}.")
        return value


class VolumeAttachmentBody(Strict):
    volumeAttachment: VolumeAttachmentRequest


def view(a: VolumeAttachment) -> Json:
    return {"id": a.id, "serverId": a.server_id, "volumeId": a.volume_id, "device": a.device}


@router.get(ATTACHMENTS)
def list_attachments(server_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"volumeAttachments": [view(a) for a in svc.compute.list_volume_attachments(ctx, server_id)]}


@router.get(ATTACHMENTS + "/{volume_id}")
def show_attachment(server_id: str, volume_id: str, ctx: Ctx, svc: Svc) -> Json:
    return {"volumeAttachment": view(svc.compute.get_volume_attachment(ctx, server_id, volume_id))}


@router.post(ATTACHMENTS)
def attach(server_id: str, body: VolumeAttachmentBody, ctx: Ctx, svc: Svc) -> Json:
    a = body.volumeAttachment
    return {"volumeAttachment": view(svc.compute.attach_volume(ctx, server_id, a.volumeId, request_id.get()))}


@router.put(ATTACHMENTS + "/{volume_id}")
def swap(server_id: str, volume_id: str, ctx: Ctx, svc: Svc) -> Json:
    raise BadRequest("Swapping a server's volume (PUT os-volume_attachments) is not supported.")


@router.delete(ATTACHMENTS + "/{volume_id}", status_code=202)
def detach(server_id: str, volume_id: str, ctx: Ctx, svc: Svc) -> Response:
    svc.compute.detach_volume(ctx, server_id, volume_id, request_id.get())
    return Response(status_code=202)
