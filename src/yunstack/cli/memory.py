"""`yun memory`: where the cloud's memory is, and what overcommit saves — a table or a live view."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from yunstack.cli.common import Cloud, StateDirOpt, client, console
from yunstack.client import YunClient

MIB = 1 << 20


def _mib(value: Any) -> str:
    return f"{int(value or 0) / MIB:,.0f}"


def _render(entries: list[dict[str, Any]]) -> Group:
    parts: list[Table] = []
    for e in entries:
        bal = e.get("balance") or {}
        if bal:
            h = Table(title=f"host {e.get('host')}  level={e.get('level')}", header_style="bold")
            for col in ("physical", "committed", "guests use", "ratio", "KSM saved", "ballooned", "swapped",
                        "available"):
                h.add_column(col, justify="right")
            h.add_row(_mib(bal.get("physical")), _mib(bal.get("committed")), _mib(bal.get("guests_used")),
                      f"{bal.get('consolidation_ratio', 0):.2f}x", _mib(bal.get("savings_ksm")),
                      _mib(bal.get("savings_balloon")), _mib(bal.get("savings_swap")), _mib(bal.get("available")))
            parts.append(h)
        g = Table(title="servers (MiB)" + (f" on {e.get('host')}" if e.get("host") else ""), header_style="bold")
        for col in ("server", "configured", "resident", "ballooned", "shared", "swapped", "working set",
                    "target", "pressure"):
            g.add_column(col, justify="right" if col not in ("server", "pressure") else "left")
        for s in e.get("servers", []):
            g.add_row(s["instance_id"][:8], _mib(s.get("configured")), _mib(s.get("resident")),
                      _mib(s.get("ballooned")), _mib(s.get("shared")), _mib(s.get("swapped")),
                      _mib(s.get("working_set")), _mib(s.get("target")), "yes" if s.get("pressured") else "")
        parts.append(g)
    if not parts:
        t = Table(title="no memory ledger yet (the agent reports every ~10 s)")
        parts.append(t)
    return Group(*parts)


def _fetch(c: YunClient) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = c.get("compute", "/os-memory")["memory"]
    return data


def memory_cmd(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep refreshing (a live view).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 2.0,
    cloud: Cloud = "yunstack", state_dir: StateDirOpt = None,
) -> None:
    """Show the memory ledger: per host and per server, what is resident, shared, ballooned, swapped."""
    with client(cloud, state_dir) as c:
        if not watch:
            console.print(_render(_fetch(c)))
            return
        with Live(_render(_fetch(c)), console=console, refresh_per_second=4) as live:
            try:
                while True:
                    time.sleep(interval)
                    live.update(_render(_fetch(c)))
            except KeyboardInterrupt:
                pass
