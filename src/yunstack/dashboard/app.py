"""The dashboard's routes, its templates and static files, and the ``Dashboard`` that holds them."""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from yunstack.dashboard import (
    accounts,
    admin,
    floating_ips,
    images,
    instances,
    keys,
    memory,
    networks,
    overview,
    serial,
    views,
    volumes,
)
from yunstack.dashboard.security import HEADERS, SecurityHeaders, accepts_gzip
from yunstack.dashboard.sessions import Sessions

PREFIX = "/dashboard"
HERE = Path(__file__).parent
# Static files change only with a release; their URLs carry a content hash, so browsers keep them.
STATIC_CACHE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, kw_only=True)
class StaticFile:
    """A static file: its bytes, the same gzip-compressed, its media type, and its content hash."""

    data: bytes
    gzipped: bytes
    kind: str
    digest: str


class Dashboard:
    """Everything the pages need: where the API is, how to reach it, the sessions, the templates.

    ``transport`` is the httpx transport the dashboard's clients use (None: real HTTP to
    ``api_url``); tests hand it the in-process app.
    """

    def __init__(self, api_url: str, *, transport: httpx.BaseTransport | None = None,
                 session_limit: int = 1000) -> None:
        self.api_url = api_url.rstrip("/")
        self.transport = transport
        self.sessions = Sessions(session_limit)
        # The API's handlers run on Starlette's shared thread pool; a page holding one of those threads
        # while its API call waits for another could, with enough pages at once, leave none for the
        # API.  The dashboard's blocking client calls get threads of their own.
        self.threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dashboard")
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                            autoescape=True, undefined=jinja2.StrictUndefined)
        # Each file as it is and gzip-compressed once, here: a first visit downloads htmx as 16 KB
        # instead of 50 (docs/explanation/dashboard.md, Benchmarks).  Only these files are compressed;
        # pages are not (they carry the CSRF token next to text users choose: BREACH).
        self.static: dict[str, StaticFile] = {}
        for path in sorted((HERE / "static").iterdir()):
            data = path.read_bytes()
            kind = "text/plain" if path.suffix == ".LICENSE" else mimetypes.guess_type(path.name)[0] or "text/plain"
            self.static[path.name] = StaticFile(data=data, gzipped=gzip.compress(data, 9, mtime=0), kind=kind,
                                                digest=hashlib.sha256(data).hexdigest()[:12])
        self.templates.globals["static"] = self.static_url
        self.templates.globals["prefix"] = PREFIX
        self.templates.filters["bytes"] = images.human_size
        self.app: ASGIApp = Starlette(routes=ROUTES, middleware=[Middleware(SecurityHeaders)],
                                      exception_handlers={Exception: self._crashed})
        self.app.state.dashboard = self

    def static_url(self, name: str) -> str:
        return f"{PREFIX}/static/{name}?v={self.static[name].digest}"

    def render(self, name: str, code: int = 200, /, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(**context)
        return HTMLResponse(html, status_code=code, headers={"Cache-Control": "no-store"})

    def error(self, status: int, message: str) -> HTMLResponse:
        return self.render("error.html", status, status=status, message=message)

    async def _crashed(self, request: Request, exc: Exception) -> Response:
        # The traceback goes to the log (Starlette's error middleware), never to the page.  This runs
        # outside the middleware (in Starlette's outermost one), so it adds the headers itself.
        response = self.error(500, "The dashboard failed to answer; the error is in the server's log.")
        response.headers.update({k.decode(): v.decode() for k, v in HEADERS})
        return response


async def static(request: Request) -> Response:
    dashboard: Dashboard = request.app.state.dashboard
    found = dashboard.static.get(request.path_params["name"])
    if found is None:
        return dashboard.error(404, "There is no such file.")
    # The two encodings are two representations: each has its own ETag, and caches key on the header.
    zipped = accepts_gzip(request.headers.get("accept-encoding"))
    etag = f'"{found.digest}-gzip"' if zipped else f'"{found.digest}"'
    headers = {"ETag": etag, "Cache-Control": STATIC_CACHE, "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") in (f'"{found.digest}"', f'"{found.digest}-gzip"'):
        return Response(status_code=304, headers=headers)
    if zipped:
        return Response(found.gzipped, media_type=found.kind, headers={**headers, "Content-Encoding": "gzip"})
    return Response(found.data, media_type=found.kind, headers=headers)


ROUTES = [
    Route("/", views.home),
    Route("/login", views.sign_in_form, methods=["GET"]),
    Route("/login", views.sign_in, methods=["POST"]),
    Route("/logout", views.sign_out, methods=["POST"]),
    Route("/project", views.switch_project, methods=["POST"]),
    Route("/project/overview", overview.page),
    Route("/project/instances", views.instances),
    Route("/project/instances/table", views.instances_table),
    Route("/project/instances/launch", instances.launch_page, methods=["GET"]),
    Route("/project/instances/launch", instances.launch_post, methods=["POST"]),
    Route("/project/instances/launch/form", instances.launch_form),
    Route("/project/instances/{server_id}", instances.server_page),
    Route("/project/instances/{server_id}/console", instances.console),
    Route("/project/instances/{server_id}/serial", serial.page, methods=["GET"]),
    Route("/project/instances/{server_id}/serial/url", serial.url, methods=["POST"]),
    Route("/project/instances/{server_id}/snapshot", instances.snapshot, methods=["POST"]),
    Route("/project/instances/{server_id}/attach", instances.attach, methods=["POST"]),
    Route("/project/instances/{server_id}/detach", instances.detach, methods=["POST"]),
    Route("/project/instances/{server_id}/floating-ip", instances.floating_ip, methods=["POST"]),
    Route("/project/instances/{server_id}/resize", instances.resize_post, methods=["POST"]),
    Route("/project/instances/{server_id}/interfaces/attach", instances.attach_port, methods=["POST"]),
    Route("/project/instances/{server_id}/interfaces/detach", instances.detach_port, methods=["POST"]),
    Route("/project/instances/{server_id}/{action}", instances.action, methods=["POST"]),
    Route("/project/images", images.page, methods=["GET"]),
    Route("/project/images", images.create, methods=["POST"]),
    Route("/project/images/{image_id}", images.image_page, methods=["GET"]),
    Route("/project/images/{image_id}", images.edit, methods=["POST"]),
    Route("/project/images/{image_id}/delete", images.delete, methods=["POST"]),
    Route("/project/images/{image_id}/file", images.upload, methods=["PUT"]),
    Route("/project/volumes", volumes.page, methods=["GET"]),
    Route("/project/volumes", volumes.create, methods=["POST"]),
    Route("/project/volumes/{volume_id}/delete", volumes.delete, methods=["POST"]),
    Route("/project/volumes/{volume_id}/extend", volumes.extend, methods=["POST"]),
    Route("/project/volumes/{volume_id}/snapshot", volumes.snapshot, methods=["POST"]),
    Route("/project/snapshots/{snapshot_id}/delete", volumes.delete_snap, methods=["POST"]),
    Route("/project/networks", networks.page, methods=["GET"]),
    Route("/project/networks", networks.create, methods=["POST"]),
    Route("/project/networks/{network_id}/delete", networks.delete, methods=["POST"]),
    Route("/project/network-topology", networks.topology),
    Route("/project/routers", networks.create_r, methods=["POST"]),
    Route("/project/routers/{router_id}/{verb:str}", networks.router_change, methods=["POST"]),
    Route("/project/floating-ips", floating_ips.page, methods=["GET"]),
    Route("/project/floating-ips", floating_ips.allocate, methods=["POST"]),
    Route("/project/floating-ips/{floating_ip_id}/{verb:str}", floating_ips.floating_change, methods=["POST"]),
    Route("/project/keypairs", keys.keypairs, methods=["GET"]),
    Route("/project/keypairs", keys.create_key, methods=["POST"]),
    Route("/project/keypairs/import", keys.import_key, methods=["POST"]),
    Route("/project/keypairs/{name}/delete", keys.delete_key, methods=["POST"]),
    Route("/project/security-groups", keys.groups, methods=["GET"]),
    Route("/project/security-groups", keys.create_group, methods=["POST"]),
    Route("/project/security-groups/{group_id}/delete", keys.delete_group, methods=["POST"]),
    Route("/project/security-groups/{group_id}/rules", keys.create_rule, methods=["POST"]),
    Route("/project/security-group-rules/{rule_id}/delete", keys.remove_rule, methods=["POST"]),
    # The admin pages (admin.py refuses every other token).
    Route("/admin/hosts", admin.hosts),
    Route("/admin/hosts/{host}", admin.host_page),
    Route("/admin/hosts/{host}/enable", admin.enable, methods=["POST"]),
    Route("/admin/hosts/{host}/disable", admin.disable, methods=["POST"]),
    Route("/admin/hosts/{host}/drain", admin.drain, methods=["POST"]),
    Route("/admin/servers/{server_id}/live-migrate", admin.migrate, methods=["POST"]),
    Route("/admin/servers/{server_id}/evacuate", admin.evacuate_server, methods=["POST"]),
    Route("/admin/migrations", admin.migrations),
    Route("/admin/operations", admin.operations),
    Route("/admin/memory", memory.page),
    Route("/admin/memory/apply", memory.apply, methods=["POST"]),
    Route("/admin/flavors", accounts.flavors, methods=["GET"]),
    Route("/admin/flavors", accounts.create_flavor_post, methods=["POST"]),
    Route("/admin/flavors/{flavor_id}/delete", accounts.delete_flavor_post, methods=["POST"]),
    Route("/admin/projects", accounts.projects, methods=["GET"]),
    Route("/admin/projects", accounts.create_project_post, methods=["POST"]),
    Route("/admin/projects/{project_id}/quotas", accounts.quotas_page, methods=["GET"]),
    Route("/admin/projects/{project_id}/quotas", accounts.quotas_post, methods=["POST"]),
    Route("/admin/users", accounts.create_user_post, methods=["POST"]),
    Route("/admin/grants", accounts.grant_post, methods=["POST"]),
    Route("/static/{name}", static),
]
