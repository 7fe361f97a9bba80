"""The volumes page: volumes (create from nothing, an image or a snapshot; extend; delete) and
their snapshots (create, delete)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from yunstack.client.images import list_images
from yunstack.client.servers import list_servers
from yunstack.client.volumes import (
    create_snapshot,
    create_volume,
    delete_snapshot,
    delete_volume,
    extend_volume,
    list_snapshots,
    list_volumes,
)
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import Form, change, number, show

PAGE = "/project/volumes"
# Statuses a volume or snapshot leaves by itself: the table looks again every 2 s while one is there.
BUSY = frozenset({"creating", "deleting", "extending", "attaching", "detaching", "downloading", "reserved"})


def _load(session: Session) -> dict[str, Any]:
    client = session.client
    volumes, snapshots = list_volumes(client), list_snapshots(client)
    servers = {s.id: s.name for s in list_servers(client)} if any(v.attached_to for v in volumes) else {}
    return {"volumes": volumes, "snapshots": snapshots, "servers": servers,
            "images": list_images(client, active_only=True) if not session.scope.reader_only else [],
            "busy": any(v.status in BUSY for v in volumes) or any(s.status in BUSY for s in snapshots)}


async def page(request: Request) -> Response:
    return await show(request, "volumes.html", "volumes", _load,
                      {"volumes": [], "snapshots": [], "servers": {}, "images": [], "busy": False})


async def create(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        name = form.get("name", "").strip()
        size = number(form, "size", "The size (GiB)", 1, 16384)
        source = form.get("source", "")
        kind, _, source_id = source.partition(":")
        create_volume(session.client, name, size, image_id=source_id if kind == "image" else "",
                      snapshot_id=source_id if kind == "snapshot" else "")
        return f"Creating the volume {name or '(no name)'}."

    return await change(request, PAGE, act)


async def delete(request: Request) -> Response:
    volume_id = request.path_params["volume_id"]

    def act(session: Session, form: Form) -> str:
        delete_volume(session.client, volume_id)
        return "Deleting the volume."

    return await change(request, PAGE, act)


async def extend(request: Request) -> Response:
    volume_id = request.path_params["volume_id"]

    def act(session: Session, form: Form) -> str:
        size = number(form, "size", "The new size (GiB)", 1, 16384)
        extend_volume(session.client, volume_id, size)
        return f"Extending the volume to {size} GiB."

    return await change(request, PAGE, act)


async def snapshot(request: Request) -> Response:
    volume_id = request.path_params["volume_id"]

    def act(session: Session, form: Form) -> str:
        name = form.get("name", "").strip()
        create_snapshot(session.client, volume_id, name)
        return f"Creating the snapshot {name or '(no name)'}."

    return await change(request, PAGE, act)


async def delete_snap(request: Request) -> Response:
    snapshot_id = request.path_params["snapshot_id"]

    def act(session: Session, form: Form) -> str:
        delete_snapshot(session.client, snapshot_id)
        return "Deleting the snapshot."

    return await change(request, PAGE, act)
