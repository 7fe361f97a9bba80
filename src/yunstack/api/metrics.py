"""Prometheus ``/metrics``: the memory ledger, servers by status, hosts, and HTTP request timings.

Values are read from the services at scrape time (a custom collector), so nothing is cached twice.
Host-wide memory numbers describe every tenant's guests, so by default only loopback clients may
scrape (``server.metrics_public`` opens it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from yunstack.api.middleware import ASGIApp, Message, Receive, Scope, Send
from yunstack.errors import Forbidden
from yunstack.identity.context import system_context
from yunstack.wiring import Services

LEDGER_GUEST = ("configured", "resident", "ballooned", "shared", "swapped", "working_set", "target")
LEDGER_HOST = ("physical", "committed", "guests_resident", "guests_used", "savings_ksm", "savings_balloon",
               "savings_swap", "available", "templates_resident")


class CloudCollector(Collector):
    def __init__(self, services: Services) -> None:
        self._services = services

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ctx = system_context("")
        latest = self._services.memory.latest(ctx)
        host_g = {k: GaugeMetricFamily(f"yunstack_host_memory_{k}_bytes", f"Host memory ledger: {k}",
                                       labels=["host"]) for k in LEDGER_HOST}
        ratio = GaugeMetricFamily("yunstack_host_memory_consolidation_ratio",
                                  "Configured guest RAM / host memory the guests really use", labels=["host"])
        guest_g = {k: GaugeMetricFamily(f"yunstack_server_memory_{k}_bytes", f"Server memory ledger: {k}",
                                        labels=["host", "server", "project"]) for k in LEDGER_GUEST}
        dirty = GaugeMetricFamily("yunstack_server_memory_dirty_bytes_per_second", "Server memory ledger: bytes "
                                  "the guest dirtied per second (QEMU's page sampling)",
                                  labels=["host", "server", "project"])
        template = GaugeMetricFamily("yunstack_memory_template_resident_bytes", "A memory template's RAM file in "
                                     "the host's page cache, shared by its clones", labels=["host", "template"])
        clones = GaugeMetricFamily("yunstack_memory_template_clones", "Servers running from a memory template",
                                   labels=["host", "template"])
        template_shared = GaugeMetricFamily("yunstack_server_memory_template_shared_bytes", "Server memory "
                                            "ledger: resident memory that is its template's page cache",
                                            labels=["host", "server", "project"])
        for entry in latest:
            host = str(entry.get("host") or "")
            h: dict[str, Any] = entry.get("balance") or {}
            for k in LEDGER_HOST:
                host_g[k].add_metric([host], float(h.get(k, 0) or 0))
            ratio.add_metric([host], float(h.get("consolidation_ratio", 0) or 0))
            for t in h.get("templates") or []:
                template.add_metric([host, str(t["key"])], float(t.get("resident") or 0))
                clones.add_metric([host, str(t["key"])], float(t.get("clones") or 0))
            for g in entry.get("servers", []):
                labels = [host, g["instance_id"], str(g.get("project_id") or "")]
                for k in LEDGER_GUEST:
                    guest_g[k].add_metric(labels, float(g.get(k, 0) or 0))
                if g.get("dirty_rate") is not None:  # not measured: no sample rather than a false 0
                    dirty.add_metric(labels, float(g["dirty_rate"]))
                if g.get("template_shared") is not None:  # a clone whose process was read
                    template_shared.add_metric(labels, float(g["template_shared"]))
        yield from host_g.values()
        yield ratio
        yield template
        yield clones
        yield from guest_g.values()
        yield dirty
        yield template_shared
        yield from self._balancer(ctx)

    def _balancer(self, ctx: Any) -> Iterator[GaugeMetricFamily]:
        """The memory balancer from its recorded passes (kept 24 h): its moves, and its newest plan."""
        counts, newest = self._services.balancer.metrics()
        moves = GaugeMetricFamily("yunstack_memory_balancer_moves", "Moves the memory balancer applied in the "
                                  "recorded passes (24 h), by result", labels=["result"])
        for result, n in sorted(counts.items()):
            moves.add_metric([result], float(n))
        yield moves
        planned = GaugeMetricFamily("yunstack_memory_balancer_planned_moves", "Moves in the newest recorded "
                                    "plan, by whether they are advisory", labels=["advisory"])
        for advisory in (False, True):
            planned.add_metric([str(advisory).lower()], float(sum(
                1 for m in (newest or {}).get("moves", []) if m["advisory"] is advisory)))
        yield planned
        if newest is not None:
            at = GaugeMetricFamily("yunstack_memory_balancer_last_pass_timestamp_seconds",
                                   "When the newest recorded balancer pass ran (Unix time)")
            at.add_metric([], newest["at"].timestamp())
            yield at


REQUEST_SECONDS = Histogram("yunstack_http_request_seconds", "API request latency by service and status",
                            ["service", "method", "status"], registry=None,
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))


class RequestTimer:
    """ASGI middleware observing every request's latency into ``REQUEST_SECONDS``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def tracking(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        finally:
            service = scope["path"].strip("/").split("/", 1)[0] or "root"
            REQUEST_SECONDS.labels(service, scope["method"], str(status)).observe(time.perf_counter() - began)


def make_router(services: Services) -> APIRouter:
    router = APIRouter(tags=["meta"])
    registry = CollectorRegistry()
    registry.register(CloudCollector(services))
    registry.register(REQUEST_SECONDS)

    @router.get("/metrics", include_in_schema=True)
    def metrics(request: Request) -> Response:
        client = request.client.host if request.client else ""
        if not services.config.server.metrics_public and client not in ("127.0.0.1", "::1", "testclient"):
            raise Forbidden("Metrics are served to loopback clients only (server.metrics_public).")
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
