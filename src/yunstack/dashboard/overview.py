"""The project's overview: its use of each quota against the limit, as rings (``charts.usage_ring``)
with the numbers in words, for compute, block storage and networking."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from yunstack.client.usage import Usage, block_storage_usage, compute_usage, network_usage
from yunstack.dashboard.charts import usage_label, usage_ring
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import show


@dataclass(frozen=True, kw_only=True)
class Shown:
    ring: Markup
    label: str


def _shown(rows: list[Usage]) -> list[Shown]:
    return [Shown(ring=usage_ring(u.resource, u.used, u.limit), label=usage_label(u.resource, u.used, u.limit))
            for u in rows]


def _load(session: Session) -> dict[str, Any]:
    client, project = session.client, session.scope.project_id or ""
    return {"sections": [("Compute", _shown(compute_usage(client))),
                         ("Block storage", _shown(block_storage_usage(client))),
                         ("Network", _shown(network_usage(client, project)))]}


async def page(request: Request) -> Response:
    return await show(request, "overview.html", "overview", _load, {"sections": []})
