"""`yun memory`: where the cloud's memory is, and what overcommit saves — a table or a live view."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Group
from rich.live import Live
from rich.table import Table

from yunstack.cli.common import Cloud, Format, FormatOpt, StateDirOpt, client, console, emit_json
from yunstack.client import YunClient

MIB = 1 << 20
# (key in the ledger, header): short one-word headers so the table fits an 80-column terminal.
SERVER_COLUMNS = (("configured", "Size"), ("resident", "Resident"), ("ballooned", "Balloon"),
                  ("shared", "Shared"), ("swapped", "Swap"), ("working_set", "Working"),
                  ("target", "Target"))
HOST_FIELDS = (("physical", "physical"), ("committed", "committed"), ("guests_used", "guests use"),
               ("available", "available"), ("savings_ksm", "saved by KSM"),
               ("savings_balloon", "ballooned"), ("savings_swap", "swapped"))


def _mib(value: Any) -> str:
    return f"{int(value or 0) / MIB:,.0f}"


def _host_table(e: dict[str, Any]) -> Table:
    """The host's balance as label/value pairs, two to a row: readable at any width."""
    bal = e.get("balance") or {}
    h = Table(title=f"host {e.get('host')}, level {e.get('level')} (MiB)",
              box=box.SIMPLE, show_header=False, pad_edge=False, show_edge=False)
    for justify in ("left", "right", "left", "right"):
        h.add_column(justify=justify)
    cells = [(label, _mib(bal.get(key))) for key, label in HOST_FIELDS]
    cells.append(("consolidation", f"{bal.get('consolidation_ratio', 0):.2f}x"))
    templates = bal.get("templates") or []
    if templates:  # memory templates' page cache, counted once for the host
        clones = sum(int(t.get("clones") or 0) for t in templates)
        cells.append(("templates", f"{_mib(bal.get('templates_resident'))} ({clones} "
                                   f"clone{'' if clones == 1 else 's'})"))
    for i in range(0, len(cells), 2):
        pair = cells[i:i + 2]
        h.add_row(*(x for cell in pair for x in cell), *([""] * (4 - 2 * len(pair))))
    return h


def _server_table(e: dict[str, Any], names: dict[str, str]) -> Table:
    g = Table(title="servers (MiB)" + (f" on {e.get('host')}" if e.get("host") else ""),
              header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False,
              collapse_padding=True)
    g.add_column("Server", overflow="fold", min_width=6)
    for _, header in SERVER_COLUMNS:
        g.add_column(header, justify="right", no_wrap=True)
    g.add_column("Pressure", no_wrap=True)
    for srv in e.get("servers", []):
        sid = srv["instance_id"]
        clone = " (clone)" if srv.get("template") else ""  # started from a memory template
        g.add_row(names.get(sid, sid) + clone, *(_mib(srv.get(key)) for key, _ in SERVER_COLUMNS),
                  "yes" if srv.get("pressured") else "")
    return g


def _render(entries: list[dict[str, Any]], names: dict[str, str]) -> Group:
    parts: list[Table] = []
    for e in entries:
        if e.get("balance"):
            parts.append(_host_table(e))
        parts.append(_server_table(e, names))
    if not parts:
        parts.append(Table(title="no memory ledger yet (the agent reports every ~10 s)"))
    return Group(*parts)


def _fetch(c: YunClient) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = c.get("compute", "/os-memory")["memory"]
    return data


def _names(c: YunClient, entries: list[dict[str, Any]]) -> dict[str, str]:
    """Server names by id; an admin (who sees host balances) sees every project's servers."""
    admin = any(e.get("balance") for e in entries)
    params = {"all_tenants": "1"} if admin else {}
    servers = c.get("compute", "/servers/detail", params=params)["servers"]
    return {s["id"]: s["name"] for s in servers if s.get("name")}


def _named(entries: list[dict[str, Any]], names: dict[str, str]) -> list[dict[str, Any]]:
    return [dict(e, servers=[dict(s, name=names.get(s["instance_id"])) for s in e.get("servers", [])])
            for e in entries]


def memory_cmd(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep refreshing (a live view).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
    cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table,
) -> None:
    """Show the memory ledger: per host and per server, what is resident, shared, ballooned, swapped."""
    with client(cloud, state_dir) as c:
        entries = _fetch(c)
        names = _names(c, entries)
        if fmt is Format.json:
            emit_json(_named(entries, names))
            return
        if not watch:
            console.print(_render(entries, names))
            return
        with Live(_render(entries, names), console=console, refresh_per_second=4) as live:
            try:
                while True:
                    time.sleep(interval)
                    entries = _fetch(c)
                    if any(s["instance_id"] not in names for e in entries for s in e.get("servers", [])):
                        names = _names(c, entries)
                    live.update(_render(entries, names))
            except KeyboardInterrupt:
                pass
