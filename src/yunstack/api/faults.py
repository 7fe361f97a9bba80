"""The one place where errors become OpenStack fault bodies.

Each OpenStack service has its own fault shape and clients parse them, so the shape follows the
path prefix:

- identity (Keystone): ``{"error": {"code": 404, "title": "Not Found", "message": "..."}}``
- compute and volume (Nova, Cinder): ``{"itemNotFound": {"code": 404, "message": "..."}}``
- networking (Neutron): ``{"NeutronError": {"type": "NotFound", "message": "...", "detail": ""}}``
- image (Glance) and everything else: the Keystone shape.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from yunstack.errors import NoValidHost, YunError

log = logging.getLogger(__name__)

NOVA_KEYS = {
    400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
    405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 415: "badMediaType",
    429: "overLimit", 501: "notImplemented", 503: "serviceUnavailable",
}


def fault_body(path: str, status: int, message: str, kind: str = "") -> dict[str, object]:
    title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    if path.startswith(("/compute", "/volume")):
        key = NOVA_KEYS.get(status, "computeFault" if path.startswith("/compute") else "volumeFault")
        return {key: {"code": status, "message": message}}
    if path.startswith("/networking"):
        return {"NeutronError": {"type": kind or title.replace(" ", ""), "message": message, "detail": ""}}
    return {"error": {"code": status, "title": title, "message": message}}


def fault_response(request: Request, status: int, message: str, kind: str = "") -> JSONResponse:
    headers: dict[str, str] = {}
    if status == 401:
        base = str(request.base_url).rstrip("/")
        headers["WWW-Authenticate"] = f'Keystone uri="{base}/identity/v3"'
    return JSONResponse(fault_body(request.url.path, status, message, kind), status_code=status,
                        headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "Invalid input for the request. " + "; ".join(parts)


def render(request: Request, exc: Exception) -> JSONResponse:
    """The fault for an error a route raised: a named error says what it is; anything else is a
    bug, logged whole, and the user is told only what is safe."""
    if isinstance(exc, YunError):
        if exc.status >= 500 and not isinstance(exc, NoValidHost):
            log.error("request failed: %s", exc.text)
        return fault_response(request, exc.status, exc.text, type(exc).__name__)
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return fault_response(request, 500, "An unexpected error occurred; the request id names it "
                          "in the server log.")


def install(app: FastAPI) -> None:
    """Register the handlers; route handlers themselves never catch."""

    @app.exception_handler(YunError)
    async def _yun(request: Request, exc: YunError) -> JSONResponse:
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return fault_response(request, 400, _validation_message(exc), "ValidationFailed")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail) if exc.detail else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and message == "Not Found":
            message = f"The resource could not be found: {request.url.path}"
        return fault_response(request, exc.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return render(request, exc)
