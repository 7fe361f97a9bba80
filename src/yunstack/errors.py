"""The one error tree of yunstack.

Every error we raise on purpose is a ``YunError``; ``api/faults.py`` alone turns one into an
OpenStack fault body.  The tree::

    YunError (500)
    ├── BadRequest (400)
    │   ├── ValidationFailed
    │   └── ImageFormatMismatch (415 in Glance, rendered as 400 elsewhere)
    ├── Unauthorized (401)
    │   └── AuthenticationFailed
    ├── Forbidden (403)
    │   └── QuotaExceeded
    ├── NotFound (404)
    ├── Conflict (409)
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415)
    ├── DriverError (500)            raised at a driver's edge; the message says what failed
    │   ├── DriverUnavailable        transient: worth retrying
    │   └── DriverMisconfigured      permanent: stop and tell the operator
    └── NoValidHost (500)           scheduling failed; ``reasons`` holds one line per host

Messages are format strings filled from keyword context, so that a message never depends on
where it was raised.
"""

from __future__ import annotations

import contextlib


class YunError(Exception):
    """Root of every error we raise."""

    status = 500
    message = "An unknown error occurred."

    def __init__(self, message: str | None = None, **context: object) -> None:
        self.context = context
        text = message if message is not None else self.message
        with contextlib.suppress(KeyError, IndexError):
            text = text.format(**context)
        self.text = text
        super().__init__(text)


class BadRequest(YunError):
    """Raised when the request is malformed or asks for something impossible."""

    status = 400
    message = "The request is invalid."


class ValidationFailed(BadRequest):
    """Raised when a request body or query does not match its schema."""

    message = "Invalid input: {detail}"


class Unauthorized(YunError):
    """Raised when the caller is not authenticated."""

    status = 401
    message = "The request you have made requires authentication."


class AuthenticationFailed(Unauthorized):
    """Raised when credentials are wrong; deliberately says nothing about which part."""

    message = "The request you have made requires authentication."


class Forbidden(YunError):
    """Raised when the caller is authenticated but not allowed to do this."""

    status = 403
    message = "You are not authorized to perform the requested action: {action}."


class QuotaExceeded(Forbidden):
    """Raised when an operation would exceed a project quota; names the quota."""

    message = "Quota exceeded for {resource}: requested {requested}, in use {used}, limit {limit}."


class NotFound(YunError):
    """Raised when a resource does not exist or is not visible to the caller's project."""

    status = 404
    message = "Could not find {kind}: {id}."


class Conflict(YunError):
    """Raised when the request conflicts with the resource's current state."""

    status = 409
    message = "Conflict: {detail}"


class PayloadTooLarge(YunError):
    """Raised when a request body exceeds the configured limit."""

    status = 413
    message = "Request body is larger than {limit} bytes."


class UnsupportedMediaType(YunError):
    """Raised when a body's content type or data format is not acceptable."""

    status = 415
    message = "Unsupported media type: {detail}"


class ImageFormatMismatch(UnsupportedMediaType):
    """Raised when uploaded image bytes do not match the declared disk_format, or are unsafe."""

    message = "Image disk_format {declared} does not match stream data {actual}."


class DriverError(YunError):
    """Raised at a driver's edge when the underlying system failed."""

    status = 500
    message = "Driver operation failed: {detail}"


class DriverUnavailable(DriverError):
    """Raised when a driver's backend is temporarily unavailable; retrying may help."""

    status = 503
    message = "Driver backend unavailable: {detail}"


class DriverMisconfigured(DriverError):
    """Raised when a driver cannot work on this host as configured; retrying will not help."""

    message = "Driver misconfigured: {detail}"


class NoValidHost(YunError):
    """Raised when the scheduler finds no host; ``reasons`` maps each host to why it was rejected."""

    status = 500
    message = "No valid host was found. {detail}"

    def __init__(self, reasons: dict[str, str], **context: object) -> None:
        self.reasons = reasons
        detail = "; ".join(f"{host}: {why}" for host, why in sorted(reasons.items()))
        super().__init__(None, detail=detail or "There are no enabled hosts.", **context)
