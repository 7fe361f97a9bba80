"""The memory page (admins): the ledger per host and per server as charts over time, and the
memory balancer's plan, its recorded passes and applying it."""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from yunstack.client.admin import servers_on
from yunstack.client.memory import (
    LedgerSample,
    apply_balancer,
    balancer_history,
    balancer_plan,
    memory_history,
    memory_now,
)
from yunstack.dashboard.admin import admin_change, admin_show
from yunstack.dashboard.charts import Series, line_chart
from yunstack.dashboard.sessions import Session
from yunstack.dashboard.views import Form

PAGE = "/admin/memory"
MIB = 1 << 20
SAMPLES = 180  # per host: the last 30 minutes at the managers' one report per ~10 s
# (label, field of HostMemory, dashed): what a host's chart draws, in MiB.
HOST_LINES = (("physical", "physical", True), ("committed", "committed", True),
              ("resident", "guests_resident", False), ("used (resident - shared)", "guests_used", False),
              ("shared by KSM", "savings_ksm", False), ("ballooned", "savings_balloon", False),
              ("swapped", "savings_swap", False), ("templates (page cache, once)", "templates_resident", False))
# (label, field of GuestMemory, dashed): what a server's chart draws, in MiB.
GUEST_LINES = (("configured", "configured", True), ("resident", "resident", False),
               ("shared by KSM", "shared", False), ("ballooned", "ballooned", False),
               ("swapped", "swapped", False))
# A clone's chart also draws what of its resident memory is its template's page cache.
CLONE_LINES = (*GUEST_LINES, ("from its template (page cache)", "template_shared", False))


def host_chart(host: str, samples: list[LedgerSample]) -> Markup:
    series = [Series(label=label, limit=dashed,
                     points=[(s.at.timestamp(), getattr(s.balance, key) / MIB) for s in samples if s.balance])
              for label, key, dashed in HOST_LINES]
    return line_chart(f"host {host}", series, unit="MiB")


def guest_chart(name: str, server_id: str, samples: list[LedgerSample]) -> Markup:
    rows = [(s.at.timestamp(), g) for s in samples for g in s.servers if g.server_id == server_id]
    lines = CLONE_LINES if any(g.template for _, g in rows) else GUEST_LINES
    series = [Series(label=label, limit=dashed, points=[(t, getattr(g, key) / MIB) for t, g in rows])
              for label, key, dashed in lines]
    return line_chart(f"server {name}", series, unit="MiB")


def _load(session: Session, *, balancer: bool = True) -> dict[str, Any]:
    client = session.client
    latest = memory_now(client)
    names = {s.id: s.name for s in servers_on(client)} if any(e.servers for e in latest) else {}
    hosts = []
    for entry in latest:
        name = entry.host or ""
        samples = memory_history(client, host=name, limit=SAMPLES)
        hosts.append({"entry": entry, "chart": host_chart(name, samples),
                      "servers": [{"id": g.server_id, "name": names.get(g.server_id, g.server_id), "now": g,
                                   "chart": guest_chart(names.get(g.server_id, g.server_id), g.server_id, samples)}
                                  for g in entry.servers]})
    if not balancer:
        return {"hosts": hosts, "plan": None, "passes": [], "names": names, "mib": MIB}
    return {"hosts": hosts, "plan": balancer_plan(client), "passes": balancer_history(client, limit=10),
            "names": names, "mib": MIB}


async def page(request: Request) -> Response:
    # The poll (?part=ledger) swaps in the ledger alone: it need not plan the balancer every 5 s.
    balancer = request.query_params.get("part") != "ledger"
    return await admin_show(request, "admin_memory.html", "memory", lambda s: _load(s, balancer=balancer),
                            {"hosts": [], "plan": None, "passes": [], "names": {}, "mib": MIB})


async def apply(request: Request) -> Response:
    def act(session: Session, form: Form) -> str:
        plan = apply_balancer(session.client)
        if not plan.applied:
            why = " (mode advise: every move is advisory)" if plan.mode == "advise" else ""
            return f"The balancer's plan has no move to apply{why}."
        queued = [a for a in plan.applied if a.result == "queued"]
        failed = [f"{a.server_id} to {a.target}: {a.why}" for a in plan.applied if a.result != "queued"]
        return (f"Queued {len(queued)} live migration(s)." + (" Failed: " + "; ".join(failed) + "." if failed else ""))

    return await admin_change(request, PAGE, act)
