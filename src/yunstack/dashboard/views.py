"""The pages.  Each one finds its session, calls the API through ``yunstack.client`` (in a worker
thread: the client is synchronous) and renders a template; every POST passes the CSRF check first.

An API error is shown with the API's own message.  A 401 from the API means the token expired or
was revoked: the session ends and the browser goes to the sign-in page with a message.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from yunstack.client import ApiError
from yunstack.client.keystone import password_sign_in, projects, rescope, scope_of
from yunstack.client.servers import list_servers
from yunstack.dashboard.security import CSRF_FIELD, CSRF_HEADER, csrf_ok
from yunstack.dashboard.sessions import COOKIE, Session

if TYPE_CHECKING:
    from yunstack.dashboard.app import Dashboard

T = TypeVar("T")
SIGN_IN_COOKIE = "yun_sign_in"  # the sign-in form's CSRF token (there is no session yet)
MESSAGES = {  # what ?m= may say on the sign-in page: fixed texts, nothing from the URL is shown
    "expired": "Your session has ended (the token expired or was revoked). Sign in again.",
    "signed_out": "You have signed out.",
}
CSRF_REFUSED = "This form is stale or did not come from this dashboard (no valid CSRF token). Reload and try again."
NO_PROJECT = "You have no role on any project yet: an administrator can give you one."
READER_REFUSED = "Your role in this project is reader: you may look, not change anything."


async def _blocking(request: Request, fn: Callable[[], T]) -> T:
    """Run a blocking client call on the dashboard's own threads (``Dashboard.threads``)."""
    return await asyncio.get_running_loop().run_in_executor(_dashboard(request).threads, fn)


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _secure(request: Request) -> bool:
    """Whether cookies get ``Secure``: the request came over TLS, or the cloud's public URL is https
    (a TLS proxy in front, whose forwarded scheme uvicorn trusts only from loopback)."""
    return request.url.scheme == "https" or _dashboard(request).api_url.startswith("https://")


def _url(request: Request, path: str) -> str:
    return f"{request.scope.get('root_path', '')}{path}"


def _redirect(request: Request, path: str) -> Response:
    """303 to ``path``; htmx (which would follow it and swap the answer in) is told to navigate."""
    if request.headers.get("hx-request") and not request.headers.get("hx-boosted"):
        return Response(status_code=200, headers={"HX-Redirect": _url(request, path)})
    return RedirectResponse(_url(request, path), status_code=303)


class Form(dict[str, str]):
    """A posted form: each field's first value; ``lists`` has every value (a multi-select's)."""

    lists: dict[str, list[str]]


async def _form(request: Request) -> Form:
    body = (await request.body()).decode("utf-8", "replace")
    lists = parse_qs(body, keep_blank_values=True)
    form = Form({k: v[0] for k, v in lists.items()})
    form.lists = lists
    return form


def _session(request: Request) -> Session | None:
    return _dashboard(request).sessions.get(request.cookies.get(COOKIE))


def _ended(request: Request) -> Response:
    """The session is gone (or never was): back to sign-in, saying why if there was one."""
    had = bool(request.cookies.get(COOKIE))
    response = _redirect(request, "/login?m=expired" if had else "/login")
    response.delete_cookie(COOKIE, path=_url(request, "/"))
    return response


async def _call(request: Request, session: Session, fn: Callable[[], T]) -> T | Response:
    """Run one client call in a worker thread; an expired token ends the session."""
    token = session.client.token
    try:
        return await _blocking(request, fn)
    except ApiError as exc:
        if exc.status != 401:
            raise
        if session.client.token != token:  # a project switch revoked the token this call used
            return await _call(request, session, fn)
        _dashboard(request).sessions.pop(session.id)
        await _blocking(request, session.client.close)
        return _ended(request)


async def _post(request: Request) -> tuple[Session, Form] | Response:
    """The session and form of a POST that passes the CSRF check, or the response refusing it."""
    session = _session(request)
    if session is None:
        return _ended(request)
    form = await _form(request)
    if not csrf_ok(session.csrf, form.get(CSRF_FIELD), request.headers.get(CSRF_HEADER)):
        return _dashboard(request).error(403, CSRF_REFUSED)
    return session, form


async def home(request: Request) -> Response:
    return _redirect(request, "/project/instances" if _session(request) else "/login")


async def sign_in_form(request: Request, *, status: int = 200, error: str | None = None,
                       domain: str = "Default", user: str = "") -> Response:
    token = secrets.token_urlsafe(32)
    message = error or MESSAGES.get(request.query_params.get("m", ""))
    response = _dashboard(request).render("login.html", status, message=message, is_error=error is not None,
                                          csrf=token, domain=domain, user=user)
    response.set_cookie(SIGN_IN_COOKIE, token, max_age=3600, path=_url(request, "/login"), httponly=True,
                        samesite="strict", secure=_secure(request))
    return response


async def sign_in(request: Request) -> Response:
    dashboard = _dashboard(request)
    form = await _form(request)
    if not csrf_ok(request.cookies.get(SIGN_IN_COOKIE, ""), form.get(CSRF_FIELD), None):
        return dashboard.error(403, CSRF_REFUSED)
    domain, user = form.get("domain", "").strip() or "Default", form.get("user", "").strip()

    def sign_in_and_list() -> Session:
        client = password_sign_in(dashboard.api_url, domain=domain, user=user, password=form.get("password", ""),
                                  transport=dashboard.transport)
        try:
            root = client.token or ""
            found = projects(client)
            if found:
                rescope(client, found[0].id)
            return Session(client=client, root_token=root, scope=scope_of(client), projects=found)
        except BaseException:
            client.close()
            raise

    try:
        session = await _blocking(request, sign_in_and_list)
    except ApiError as exc:
        return await sign_in_form(request, status=exc.status if 400 <= exc.status < 500 else 502,
                                  error=exc.message, domain=domain, user=user)
    previous = dashboard.sessions.pop(request.cookies.get(COOKIE) or "")
    if previous is not None:  # signing in again (as anyone) ends this browser's previous session
        await _blocking(request, lambda: _end(previous))
    dashboard.sessions.add(session)
    response = _redirect(request, "/project/instances")
    response.set_cookie(COOKIE, session.id, path=_url(request, "/"), httponly=True, samesite="lax",
                        secure=_secure(request))
    response.delete_cookie(SIGN_IN_COOKIE, path=_url(request, "/login"))
    return response


def _end(session: Session) -> None:
    """Revoke the session's unscoped token, and with it every token rescoped from it."""
    try:
        session.client.revoke(session.root_token)
    except ApiError:
        pass  # the session is gone either way; the token expires on its own
    finally:
        session.client.close()


async def sign_out(request: Request) -> Response:
    checked = await _post(request)
    if isinstance(checked, Response):
        return checked
    session, _ = checked
    _dashboard(request).sessions.pop(session.id)
    await _blocking(request, lambda: _end(session))
    response = _redirect(request, "/login?m=signed_out")
    response.delete_cookie(COOKIE, path=_url(request, "/"))
    return response


async def switch_project(request: Request) -> Response:
    checked = await _post(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    project_id = form.get("project_id", "")
    if project_id not in {p.id for p in session.projects}:
        return _dashboard(request).error(403, "You have no role on that project.")

    def switch() -> None:
        old = session.client.token
        session.scope = rescope(session.client, project_id, source=session.root_token)
        if old != session.root_token:
            session.client.revoke(old)  # the new token authenticates; only the old one goes

    try:
        done = await _call(request, session, switch)
    except ApiError as exc:
        session.flash = ("error", exc.message)
        done = None
    return done if isinstance(done, Response) else _redirect(request, "/project/instances")


def _page(session: Session, nav: str = "instances") -> dict[str, Any]:
    return {"scope": session.scope, "projects": session.projects, "csrf": session.csrf,
            "can_act": not session.scope.reader_only, "nav": nav}


async def show(request: Request, template: str, nav: str, load: Callable[[Session], dict[str, Any]],
               empty: dict[str, Any]) -> Response:
    """A page of the project: ``load`` calls the API (in a worker thread) for the template's data.

    Without a project, or when the API refuses, the page shows why with ``empty`` data; a 404 (an id
    of another project, or none at all) is a 404 page with the API's message.
    """
    session = _session(request)
    if session is None:
        return _ended(request)
    dashboard = _dashboard(request)
    if session.scope.project_id is None:
        return dashboard.render(template, **empty, error=NO_PROJECT, flash=None, **_page(session, nav))
    try:
        data = await _call(request, session, lambda: load(session))
    except ApiError as exc:
        if exc.status == 404:
            return dashboard.error(404, exc.message)
        return dashboard.render(template, exc.status, **empty, error=exc.message, flash=None, **_page(session, nav))
    if isinstance(data, Response):
        return data
    return dashboard.render(template, **data, error=None, flash=session.pop_flash(), **_page(session, nav))


async def change(request: Request, back: str | Callable[[Form], str],
                 fn: Callable[[Session, Form], str | Response]) -> Response:
    """A POST that changes something: CSRF first, readers refused (403), then ``fn`` (in a worker
    thread) calls the API and says what it did; back to ``back`` with that (or the API's error) as
    the next page's message.  A 404 (another project's id) is a 404 page; a ``ValueError`` from
    ``fn`` (a form field it could not use) is shown like an API error.
    """
    checked = await _post(request)
    if isinstance(checked, Response):
        return checked
    session, form = checked
    dashboard = _dashboard(request)
    if session.scope.reader_only:
        return dashboard.error(403, READER_REFUSED)
    if not isinstance(back, str):
        back = back(form)
    try:
        done = await _call(request, session, lambda: fn(session, form))
    except ApiError as exc:
        if exc.status == 404:
            return dashboard.error(404, exc.message)
        session.flash = ("error", exc.message)
        return _redirect(request, back)
    except ValueError as exc:
        session.flash = ("error", str(exc))
        return _redirect(request, back)
    if isinstance(done, Response):
        return done
    session.flash = ("note", done)
    return _redirect(request, back)


def number(form: dict[str, str], field: str, what: str, low: int = 0, high: int = 1 << 20) -> int:
    """A whole number from a form field, or a ``ValueError`` that says what was wrong."""
    try:
        value = int(form.get(field, "").strip() or "x")
    except ValueError:
        raise ValueError(f"{what} must be a whole number.") from None
    if not low <= value <= high:
        raise ValueError(f"{what} must be from {low} to {high}.")
    return value


async def instances(request: Request) -> Response:
    session = _session(request)
    if session is None:
        return _ended(request)
    dashboard = _dashboard(request)
    if session.scope.project_id is None:
        return dashboard.render("instances.html", servers=[], error=NO_PROJECT, flash=None, **_page(session))
    try:
        servers = await _call(request, session, lambda: list_servers(session.client))
    except ApiError as exc:
        return dashboard.render("instances.html", exc.status, servers=[], error=exc.message, flash=None,
                                **_page(session))
    if isinstance(servers, Response):
        return servers
    return dashboard.render("instances.html", servers=servers, error=None, flash=session.pop_flash(),
                            **_page(session))


async def instances_table(request: Request) -> Response:
    """The table alone: htmx polls it and swaps it in place."""
    session = _session(request)
    if session is None:
        return _ended(request)
    dashboard = _dashboard(request)
    try:
        servers = await _call(request, session, lambda: list_servers(session.client))
    except ApiError as exc:
        return dashboard.render("_instances_table.html", servers=[], error=exc.message, **_page(session))
    if isinstance(servers, Response):
        return servers
    return dashboard.render("_instances_table.html", servers=servers, error=None, **_page(session))
