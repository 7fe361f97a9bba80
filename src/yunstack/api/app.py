"""Assembles the one ASGI app: every service's routes under its prefix, faults, middleware."""

from __future__ import annotations

import logging
import threading
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.requests import Request
from starlette.responses import Response

from yunstack import __version__
from yunstack.api import faults, metrics
from yunstack.api.agent import routes as agent_routes
from yunstack.api.agent.calls import AgentCalls
from yunstack.api.compute import aggregates as compute_aggregates
from yunstack.api.compute import balancer as compute_balancer
from yunstack.api.compute import consoles as compute_consoles
from yunstack.api.compute import flavors as compute_flavors
from yunstack.api.compute import hypervisors as compute_hypervisors
from yunstack.api.compute import images as compute_images
from yunstack.api.compute import interfaces as compute_interfaces
from yunstack.api.compute import keypairs as compute_keypairs
from yunstack.api.compute import memory as compute_memory
from yunstack.api.compute import migrations as compute_migrations
from yunstack.api.compute import quotas as compute_quotas
from yunstack.api.compute import server_groups as compute_server_groups
from yunstack.api.compute import servers as compute_servers
from yunstack.api.compute import services as compute_services
from yunstack.api.compute import tasks as compute_tasks
from yunstack.api.compute import versions as compute_versions
from yunstack.api.compute import volume_attachments as compute_volume_attachments
from yunstack.api.compute.microversion import Microversions
from yunstack.api.identity import resources as identity_resources
from yunstack.api.identity import routes as identity_routes
from yunstack.api.image import routes as image_routes
from yunstack.api.metadata import make_metadata_router
from yunstack.api.middleware import BodyLimit, JsonDepthLimit, PathGuard, RequestId, RequestIdFilter
from yunstack.api.network import routes as network_routes
from yunstack.api.network import routes_l3 as network_routes_l3
from yunstack.api.network import routes_sg as network_routes_sg
from yunstack.api.volume import attachments as volume_attachments
from yunstack.api.volume import routes as volume_routes
from yunstack.api.volume import routes_misc as volume_routes_misc
from yunstack.api.volume.microversion import VolumeVersions
from yunstack.dashboard import PREFIX as DASHBOARD
from yunstack.dashboard import Dashboard
from yunstack.dashboard.security import HEADERS as DASHBOARD_HEADERS
from yunstack.dashboard.security import prefers_html
from yunstack.network.dataplane.metadata_api import ensure_secret
from yunstack.wiring import Services

# (catalog type, name, path under the base URL) of every API this app serves.
CATALOG: tuple[tuple[str, str, str], ...] = (
    ("identity", "keystone", "/identity/v3"),
    ("image", "glance", "/image"),
    ("compute", "nova", "/compute/v2.1"),
    ("network", "neutron", "/networking"),
    ("block-storage", "cinder", "/volume/v3"),
    ("volumev3", "cinderv3", "/volume/v3"),
)


def _streamed(path: str) -> bool:
    """Upload paths stream their bodies to disk and enforce their own limits."""
    if path.startswith("/agent/v1/hosts/") and "/snapshots/" in path:
        return True  # a host's snapshot upload (credential-checked before a byte is stored)
    if path.startswith(DASHBOARD + "/project/images/") and path.endswith("/file"):
        return True  # the dashboard's image upload, streamed on to the one below (dashboard/images.py)
    return path.startswith("/image/v2/images/") and path.endswith("/file")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


# pydantic builds a model's schema on first use and is not safe to do so from two threads at once
# (a TypeAdapter read a half-built model: a 500 in CI).  Recent FastAPI builds an included router's
# routes, and their TypeAdapters, on the router's first matched request; two apps of one process
# (the tests', a lab's) serving their first requests from two threads raced there.  So every app
# builds all its routes when it is made, one app at a time.
_ROUTE_BUILD = threading.Lock()


def _build_routes(app: FastAPI) -> None:
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if contexts is None:  # a FastAPI that builds its routes in include_router already
        return
    with _ROUTE_BUILD:
        for _ in contexts(app.router.routes):
            pass


def create_app(services: Services) -> Any:
    """The ASGI application (middleware-wrapped FastAPI app)."""
    app = FastAPI(title="yunstack", version=__version__, docs_url="/docs", redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.services = services
    faults.install(app)
    app.include_router(metrics.make_router(services))
    app.include_router(agent_routes.router)
    # Instances reach this only through the metadata proxy, which signs each request (no token).
    secret = ensure_secret(services.config.server.state_path / "network" / "metadata_secret")
    app.include_router(make_metadata_router(services.compute.metadata_for, secret))
    app.include_router(identity_routes.router)
    app.include_router(identity_resources.router)
    app.include_router(image_routes.router)
    for compute_router in (compute_versions.router, compute_flavors.router, compute_keypairs.router,
                           compute_quotas.router, compute_hypervisors.router, compute_servers.router,
                           compute_interfaces.router, compute_memory.router, compute_server_groups.router,
                           compute_services.router, compute_images.router, compute_consoles.router,
                           compute_consoles.socket_router, compute_tasks.router, compute_migrations.router,
                           compute_volume_attachments.router, compute_aggregates.router,
                           compute_balancer.router):
        app.include_router(compute_router)
    for network_router in (network_routes.router, network_routes_l3.router, network_routes_sg.router):
        app.include_router(network_router)
    if services.config.volume.enabled:
        app.include_router(volume_routes.router)
        app.include_router(volume_routes_misc.router)
        app.include_router(volume_attachments.router)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> JSONResponse:
        with services.db() as s:
            s.connection().exec_driver_sql("SELECT 1")
        # `yun up` is healthy once its own host's agent has joined (before that nothing can be placed).
        waiting = app.state.own_host if getattr(app.state, "own_host", None) else None
        if waiting is not None and not services.compute.hub.connected(waiting):
            return JSONResponse({"status": "starting", "version": __version__,
                                 "waiting_for": f"the agent of host {waiting}"}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    # The dashboard reaches the API as any client does: over HTTP, at the base URL (dashboard/app.py).
    dashboard = Dashboard(services.config.server.base_url)
    app.state.dashboard = dashboard
    app.mount(DASHBOARD, dashboard.app)

    @app.get("/", tags=["meta"])
    def index(request: Request) -> Response:
        """The version document for API clients; a browser (which prefers HTML) goes to the dashboard."""
        if prefers_html(request.headers.get("accept")):
            response: Response = RedirectResponse(DASHBOARD + "/", status_code=303)
            response.headers.update({k.decode(): v.decode() for k, v in DASHBOARD_HEADERS})
        else:
            base = services.config.server.base_url
            response = JSONResponse({"name": "yunstack", "version": __version__,
                                     "apis": {kind: base + path for kind, _, path in CATALOG}})
        response.headers["Vary"] = "Accept"
        return response

    _build_routes(app)

    # The agents' calls are answered before FastAPI's routing (api/agent/calls.py), inside the size
    # limit; their typed bodies are parsed by pydantic, whose JSON parser refuses deep nesting itself.
    limited = BodyLimit(AgentCalls(JsonDepthLimit(app, _streamed), services), services.config.server.max_body_bytes,
                        _streamed)
    wrapped = RequestId(metrics.RequestTimer(PathGuard(VolumeVersions(Microversions(limited)))))
    # Keep a handle on the FastAPI app for tests and tooling (openapi, state).
    wrapped.fastapi = app  # type: ignore[attr-defined]
    return wrapped
