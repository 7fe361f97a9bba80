"""A server's serial console in the browser: the page (xterm.js and ``static/serial.js``) and the
one-time websocket URL the script asks for each time it connects.

The browser talks to the guest over the API's own websocket (``/compute/console/serial``, on this
same port): the dashboard only hands out the URL, asked of the API with the session's token, so the
token never reaches the page.  The API decides who may (a project's members, not its readers) and
when (the server is ACTIVE); its refusal is what the page shows.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from yunstack.client import ApiError
from yunstack.client.servers import get_server, serial_console_url
from yunstack.dashboard.security import CSRF_HEADER, csrf_ok
from yunstack.dashboard.views import CSRF_REFUSED, MESSAGES, READER_REFUSED, _call, _session, show


async def page(request: Request) -> Response:
    """The terminal; a reader gets the page without it, saying why."""
    server_id = request.path_params["server_id"]
    return await show(request, "serial.html", "instances", lambda s: {"server": get_server(s.client, server_id)},
                      {"server": None})


def _refused(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


async def url(request: Request) -> Response:
    """POST: ``{"url": ...}``, a fresh websocket URL, or ``{"error": ...}`` with the API's message.

    The script sends the CSRF token as a header (the URL opens the console to whoever holds it);
    readers are refused here, as every dashboard POST refuses them, without asking the API.
    """
    session = _session(request)
    if session is None:
        return _refused(401, MESSAGES["expired"])
    if not csrf_ok(session.csrf, None, request.headers.get(CSRF_HEADER)):
        return _refused(403, CSRF_REFUSED)
    if session.scope.reader_only:
        return _refused(403, READER_REFUSED)
    server_id = request.path_params["server_id"]
    try:
        found = await _call(request, session, lambda: serial_console_url(session.client, server_id))
    except ApiError as exc:
        return _refused(exc.status if 400 <= exc.status < 500 else 502, exc.message)
    if isinstance(found, Response):  # the token expired: the session has ended
        return _refused(401, MESSAGES["expired"])
    return JSONResponse({"url": found}, headers={"Cache-Control": "no-store"})
