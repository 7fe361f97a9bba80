"""The images page: the images the project sees (its own, shared and public), an upload from the
browser with its progress, and an image's page (its fields, edit, delete).

An upload is two requests from ``static/images.js``: a POST of the form (CSRF) registers a queued
image and answers its id as JSON; then a PUT of the file's bytes, which this dashboard streams on to
Glance's ``PUT /v2/images/{id}/file`` one chunk at a time (never the whole file in memory), while the
browser's XMLHttpRequest reports the progress.  Without JavaScript the form is refused with a message:
a plain form post would have to hold the whole file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from yunstack.client import ApiError
from yunstack.client.images import (
    delete_image,
    get_image,
    list_images,
    register_image,
    update_image,
    upload_image_data,
)
from yunstack.dashboard.security import CSRF_HEADER, csrf_ok
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import CSRF_REFUSED, READER_REFUSED, Form, _call, _form, _session, change, number, show

PAGE = "/project/images"
# What Glance here can inspect (the API refuses any other); the first is the form's default.
DISK_FORMATS = ("qcow2", "raw", "iso", "vmdk", "vhd", "vhdx", "vdi")
# public is the admin's (Glance's publicize_image); the form offers all four and the API decides.
VISIBILITIES = ("private", "shared", "community", "public")
BUSY = frozenset({"saving", "importing", "uploading"})
NEEDS_SCRIPT = ("Uploading an image from the browser needs JavaScript (the file is streamed to the image "
                "service with its progress shown). Turn it on, or use: openstack image create --file FILE NAME")
SESSION_ENDED = "Your session has ended (the token expired or was revoked). Sign in again."


def human_size(size: int) -> str:
    """Bytes as a person reads them: 1.5 MiB, 16.0 GiB (binary units, as the API's sizes are)."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _load(session: Session) -> dict[str, Any]:
    images = list_images(session.client)
    return {"images": images, "busy": any(i.status in BUSY for i in images),
            "disk_formats": DISK_FORMATS, "visibilities": VISIBILITIES}


async def page(request: Request) -> Response:
    return await show(request, "images.html", "images", _load,
                      {"images": [], "busy": False, "disk_formats": DISK_FORMATS, "visibilities": VISIBILITIES})


async def image_page(request: Request) -> Response:
    image_id = request.path_params["image_id"]
    return await show(request, "image.html", "images",
                      lambda s: {"image": get_image(s.client, image_id), "visibilities": VISIBILITIES},
                      {"image": None, "visibilities": VISIBILITIES})


# -- the upload's two requests (from static/images.js) ---------------------------------------------

def _answer(code: int, message: str, /, **extra: object) -> JSONResponse:
    return JSONResponse({"message": message, **extra}, status_code=code, headers={"Cache-Control": "no-store"})


def _wants_json(request: Request) -> bool:
    return request.headers.get("accept", "").startswith("application/json")


def _script_session(request: Request) -> Session | JSONResponse:
    """The session of a script's request that passes the CSRF check (as a header) and may write."""
    session = _session(request)
    if session is None:
        return _answer(401, SESSION_ENDED)
    if not csrf_ok(session.csrf, None, request.headers.get(CSRF_HEADER)):
        return _answer(403, CSRF_REFUSED)
    if session.scope.reader_only:
        return _answer(403, READER_REFUSED)
    return session


def _fields(form: Form) -> dict[str, Any]:
    name = form.get("name", "").strip()
    if not name:
        raise ValueError("An image needs a name.")
    disk_format = form.get("disk_format", "")
    if disk_format not in DISK_FORMATS:
        raise ValueError(f"Choose a disk format: {', '.join(DISK_FORMATS)}.")
    return {"name": name, "disk_format": disk_format, "visibility": form.get("visibility", "private"),
            "min_disk": number(form, "min_disk", "The minimum disk (GiB)", 0, 1 << 20),
            "min_ram": number(form, "min_ram", "The minimum RAM (MiB)", 0, 1 << 30)}


async def create(request: Request) -> Response:
    """Register a queued image; the script then sends its data.  A plain form post is refused."""
    if not _wants_json(request):
        def refuse(session: Session, form: Form) -> str:
            raise ValueError(NEEDS_SCRIPT)

        return await change(request, PAGE, refuse)
    checked = _script_session(request)
    if isinstance(checked, JSONResponse):
        return checked
    session = checked
    try:
        fields = _fields(await _form(request))
        made = await _call(request, session, lambda: register_image(session.client, **fields))
    except ValueError as exc:
        return _answer(400, str(exc))
    except ApiError as exc:
        return _answer(exc.status, exc.message)
    if isinstance(made, Response):
        return _answer(401, SESSION_ENDED)
    return _answer(201, f"Registered the image {made.name}; sending its data.", id=made.id,
                   upload=f"{request.scope.get('root_path', '')}{PAGE}/{made.id}/file")


async def upload(request: Request) -> Response:
    """Stream the request's body to the image's data in Glance, chunk by chunk as it arrives."""
    checked = _script_session(request)
    if isinstance(checked, JSONResponse):
        return checked
    session, image_id = checked, request.path_params["image_id"]
    length = request.headers.get("content-length", "")
    size = int(length) if length.isascii() and length.isdigit() and len(length) < 19 else None
    loop = asyncio.get_running_loop()
    stream: AsyncIterator[bytes] = request.stream()

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    def chunks() -> Iterator[bytes]:
        # Runs in the client's worker thread: each chunk is fetched from the event loop only when
        # httpx is ready to send it, so no more than one is held here.
        while (chunk := asyncio.run_coroutine_threadsafe(next_chunk(), loop).result()) is not None:
            if chunk:
                yield chunk

    try:
        image = await _call(request, session, lambda: upload_image_data(session.client, image_id, chunks(),
                                                                          size=size))
    except ApiError as exc:
        # Glance may refuse before reading the data (an image over its limits, not queued); a browser
        # still sending would then see only a broken connection.  The rest is read and dropped, so
        # it gets the reason.
        while await next_chunk() is not None:
            pass
        return _answer(exc.status, exc.message)
    if isinstance(image, Response):
        return _answer(401, SESSION_ENDED)
    return _answer(200, f"Uploaded {human_size(image.size)}: the image {image.name} is {image.status}.",
                   status=image.status, size=image.size, checksum=image.checksum)


# -- edit, delete --------------------------------------------------------------------------------

async def edit(request: Request) -> Response:
    image_id = request.path_params["image_id"]

    def act(session: Session, form: Form) -> str:
        name = form.get("name", "").strip()
        if not name:
            raise ValueError("An image needs a name.")
        wanted = {"name": name, "visibility": form.get("visibility", ""),
                  "min_disk": number(form, "min_disk", "The minimum disk (GiB)", 0, 1 << 20),
                  "min_ram": number(form, "min_ram", "The minimum RAM (MiB)", 0, 1 << 30),
                  "protected": form.get("protected") == "on"}
        current = get_image(session.client, image_id)
        # Only what changed: replacing even an unchanged visibility of public would need an admin.
        changes = {k: v for k, v in wanted.items() if getattr(current, k) != v}
        if not changes:
            return "Nothing to change."
        update_image(session.client, image_id, **changes)
        return f"Saved the image {name}."

    return await change(request, f"{PAGE}/{image_id}", act)


async def delete(request: Request) -> Response:
    image_id = request.path_params["image_id"]

    def act(session: Session, form: Form) -> str:
        delete_image(session.client, image_id)
        return "Deleted the image."

    return await change(request, PAGE, act)
