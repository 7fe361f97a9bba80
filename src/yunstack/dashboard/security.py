"""What every dashboard response carries, and the checks every dashboard form post passes.

- ``SecurityHeaders``: a strict Content-Security-Policy (scripts only from our own origin, so no
  inline script runs even if a template ever failed to escape), no framing, no sniffing, no
  referrer to other sites;
- ``csrf_ok``: a form post carries its session's CSRF token as a field or, from htmx, a header;
- ``prefers_html``: whether ``/`` should answer a browser (the dashboard) or an API client (JSON);
- ``accepts_gzip``: whether a static file may go gzip-compressed.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class SecurityHeaders:
    """Adds ``HEADERS`` to every response of the wrapped app (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in HEADERS if h[0] not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)


def csrf_ok(expected: str, field: str | None, header: str | None) -> bool:
    """True when the form's field or the htmx header carries ``expected`` (compared in constant time)."""
    given = header or field or ""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _quality(accept: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media:
            found[media.lower()] = max(q, found.get(media.lower(), 0.0))
    return found


def prefers_html(accept: str | None) -> bool:
    """True when ``accept`` names HTML and ranks it above JSON.

    A browser sends ``text/html,...,*/*;q=0.8``: HTML.  API clients send ``application/json``, ``*/*``
    or nothing, and a tie goes to JSON: only a client that asks for HTML by name, and prefers it,
    gets the dashboard.
    """
    q = _quality(accept or "")
    html = max(q.get("text/html", 0.0), q.get("application/xhtml+xml", 0.0))
    json = max(q.get("application/json", 0.0), q.get("application/*", 0.0), q.get("*/*", 0.0))
    return html > 0 and html > json


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when ``Accept-Encoding`` names gzip (or ``*``) with a quality above 0: every browser does."""
    q = _quality(accept_encoding or "")
    return q.get("gzip", q.get("*", 0.0)) > 0
