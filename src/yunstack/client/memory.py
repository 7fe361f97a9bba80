"""The memory ledger and the memory balancer as the dashboard shows them (``os-memory``,
``os-yunstack-memory-balancer``; bytes throughout).

The ledger's history is about one sample per 10 s per host, kept 24 h.  An admin sees every
host's balance and every server; anyone else sees only their own servers' rows, and no balancer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from yunstack.client.http import YunClient


@dataclass(frozen=True, kw_only=True)
class GuestMemory:
    """Where one server's memory is, in one sample."""

    server_id: str
    configured: int
    resident: int  # QEMU's RSS
    shared: int  # host memory KSM page sharing saves, attributed to this server
    ballooned: int  # configured - the balloon's actual size
    swapped: int  # host swap holding its memory
    working_set: int
    pressured: bool
    template: str | None = None  # the memory template it started from (a clone), None if it booted
    template_shared: int = 0  # of its resident memory, the template's page cache (counted once per host)


@dataclass(frozen=True, kw_only=True)
class TemplateMemory:
    """One memory template's RAM in a host's page cache, shared by its clones."""

    key: str
    resident: int
    clones: int


@dataclass(frozen=True, kw_only=True)
class HostMemory:
    """A host's balance in one sample (admins only)."""

    physical: int
    committed: int  # the servers' configured RAM
    guests_resident: int
    guests_used: int  # what the servers really cost: resident - KSM's saving
    available: int
    savings_ksm: int
    savings_balloon: int
    savings_swap: int
    consolidation_ratio: float
    templates_resident: int = 0  # the memory templates' page cache, counted once
    templates: tuple[TemplateMemory, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LedgerSample:
    host: str | None  # None for a non-admin
    at: datetime
    level: str  # none, ksm, balloon, swap: the memory manager's pressure level
    balance: HostMemory | None
    servers: tuple[GuestMemory, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Move:
    """One live migration the balancer plans (``advisory``: shown, never applied)."""

    server_id: str
    source: str
    target: str
    bytes: int
    duration_seconds: float
    downtime_seconds: float
    advisory: bool
    reason: str


@dataclass(frozen=True, kw_only=True)
class HostLoad:
    host: str
    physical: int
    before_fraction: float
    after_fraction: float


@dataclass(frozen=True, kw_only=True)
class Applied:
    server_id: str
    target: str
    result: str  # queued or failed
    why: str


@dataclass(frozen=True, kw_only=True)
class Plan:
    """The balancer's plan: its moves, what it left alone and why, each host before and after."""

    mode: str  # off, advise, auto
    moves: tuple[Move, ...]
    refusals: tuple[str, ...]
    hosts: tuple[HostLoad, ...]
    applied: tuple[Applied, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Pass:
    """A recorded pass of the balancer: the control plane's own (``trigger``) or an admin's apply."""

    at: str
    trigger: str
    moves: tuple[Move, ...]
    applied: tuple[Applied, ...]


def _int(d: dict[str, Any], key: str) -> int:
    return int(d.get(key) or 0)


def _guest(g: dict[str, Any]) -> GuestMemory:
    return GuestMemory(server_id=str(g["instance_id"]), configured=_int(g, "configured"), resident=_int(g, "resident"),
                       shared=_int(g, "shared"), ballooned=_int(g, "ballooned"), swapped=_int(g, "swapped"),
                       working_set=_int(g, "working_set"), pressured=bool(g.get("pressured")),
                       template=g.get("template"), template_shared=_int(g, "template_shared"))


def _sample(e: dict[str, Any]) -> LedgerSample:
    bal = e.get("balance")
    balance = None if not isinstance(bal, dict) else HostMemory(
        physical=_int(bal, "physical"), committed=_int(bal, "committed"),
        guests_resident=_int(bal, "guests_resident"), guests_used=_int(bal, "guests_used"),
        available=_int(bal, "available"), savings_ksm=_int(bal, "savings_ksm"),
        savings_balloon=_int(bal, "savings_balloon"), savings_swap=_int(bal, "savings_swap"),
        consolidation_ratio=float(bal.get("consolidation_ratio") or 0.0),
        templates_resident=_int(bal, "templates_resident"),
        templates=tuple(TemplateMemory(key=str(t["key"]), resident=_int(t, "resident"), clones=_int(t, "clones"))
                        for t in bal.get("templates") or []))
    return LedgerSample(host=e.get("host"), at=datetime.fromisoformat(str(e["at"])), level=str(e.get("level") or ""),
                        balance=balance, servers=tuple(_guest(g) for g in e.get("servers") or []),
                        reasons=tuple(str(r) for r in e.get("reasons") or []))


def memory_now(client: YunClient) -> list[LedgerSample]:
    """The newest sample of every host."""
    return [_sample(e) for e in client.get("compute", "/os-memory")["memory"]]


def memory_history(client: YunClient, *, host: str | None = None, limit: int = 360) -> list[LedgerSample]:
    """The newest ``limit`` samples (of ``host`` when given; an admin's filter), oldest first."""
    params: dict[str, Any] = {"limit": limit, **({"host": host} if host else {})}
    return [_sample(e) for e in client.get("compute", "/os-memory/history", params=params)["history"]]


def _move(m: dict[str, Any]) -> Move:
    return Move(server_id=str(m["guest"]), source=str(m["source"]), target=str(m["target"]), bytes=_int(m, "bytes"),
                duration_seconds=float(m.get("duration_seconds") or 0.0),
                downtime_seconds=float(m.get("downtime_seconds") or 0.0), advisory=bool(m.get("advisory")),
                reason=str(m.get("reason") or ""))


def _applied(a: dict[str, Any]) -> Applied:
    return Applied(server_id=str(a["server_id"]), target=str(a["target"]), result=str(a["result"]),
                   why=str(a.get("why") or ""))


def _plan(body: dict[str, Any]) -> Plan:
    return Plan(mode=str(body["mode"]), moves=tuple(_move(m) for m in body.get("moves") or []),
                refusals=tuple(str(r["reason"]) for r in body.get("refusals") or []),
                hosts=tuple(HostLoad(host=str(h["host"]), physical=_int(h, "physical"),
                                     before_fraction=float(h["before_fraction"]),
                                     after_fraction=float(h["after_fraction"])) for h in body.get("hosts") or []),
                applied=tuple(_applied(a) for a in body.get("applied") or []))


def balancer_plan(client: YunClient) -> Plan:
    """What the memory balancer would move where now, and why nothing else moves (admins)."""
    return _plan(client.memory_balancer())


def apply_balancer(client: YunClient) -> Plan:
    """Plan again and queue the applicable moves as live migrations; each one's result in ``applied``."""
    return _plan(client.memory_balancer(apply=True))


def balancer_history(client: YunClient, *, limit: int = 20) -> list[Pass]:
    """The balancer's recorded passes (each that queued a move or changed the plan), newest first."""
    return [Pass(at=str(p["at"]), trigger=str(p.get("trigger") or ""),
                 moves=tuple(_move(m) for m in p.get("moves") or []),
                 applied=tuple(_applied(a) for a in p.get("applied") or []))
            for p in client.memory_balancer_history(limit=limit)]
