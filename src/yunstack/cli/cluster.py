"""`yun cluster balance [--apply]` and `yun cluster history`: the memory balancer's plan, applying it,
and the passes it recorded (admins)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from yunstack.cli.common import Cloud, Format, FormatOpt, StateDirOpt, client, console, emit_json, table

cluster_app = typer.Typer(help="The cluster as a whole (admins).", no_args_is_help=True)
MIB = 1 << 20


@cluster_app.command("balance")
def balance(apply: Annotated[bool, typer.Option("--apply", help="Queue the applicable moves as live migrations.")]
            = False, cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Show what the memory balancer would move where, and why nothing else moves (exit 1 if a move failed)."""
    with client(cloud, state_dir) as c:
        plan = c.memory_balancer(apply=apply)
    if fmt is Format.json:
        emit_json(plan)
    else:
        render(plan)
    if any(a["result"] != "queued" for a in plan.get("applied", [])):
        raise typer.Exit(1)


@cluster_app.command("history")
def history(limit: Annotated[int, typer.Option(help="At most this many passes.")] = 20, cloud: Cloud = "yunstack",
            state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """The balancer's recorded passes, newest first: each that queued a move or changed the plan."""
    with client(cloud, state_dir) as c:
        passes = c.memory_balancer_history(limit=limit)
    if fmt is Format.json:
        emit_json(passes)
        return
    table(("At", "Trigger", "Moves", "Applied"),
          [(p["at"], p["trigger"], ", ".join(f"{m['guest'][:8]} {m['source']}->{m['target']}"
                                             + (" (advisory)" if m["advisory"] else "") for m in p["moves"]) or "-",
            ", ".join(f"{a['server_id'][:8]} {a['result']}" for a in p.get("applied", [])) or "-")
           for p in passes], title="memory balancer passes")


def render(plan: dict[str, Any]) -> None:
    console.print(f"memory balancer: mode [bold]{plan['mode']}[/]")
    table(("Host", "Physical MiB", "Before", "After"),
          [(h["host"], h["physical"] // MIB, f"{h['before_fraction']:.0%}", f"{h['after_fraction']:.0%}")
           for h in plan["hosts"]], title="hosts")
    if plan["moves"]:
        table(("Server", "From", "To", "MiB", "Seconds", "Downtime s", "Advisory"),
              [(m["guest"], m["source"], m["target"], m["bytes"] // MIB, f"{m['duration_seconds']:.1f}",
                f"{m['downtime_seconds']:.1f}", "yes" if m["advisory"] else "") for m in plan["moves"]],
              title="moves")
        for m in plan["moves"]:
            console.print(f"  {m['guest']}: {m['reason']}", soft_wrap=True)
    else:
        console.print("no moves")
    for r in plan["refusals"]:
        console.print(f"  [yellow]{r['reason']}[/]", soft_wrap=True)
    for a in plan.get("applied", []):
        colour = "green" if a["result"] == "queued" else "red"
        console.print(f"  {a['server_id']} -> {a['target']}: [{colour}]{a['result']}[/]"
                      + (f": {a['why']}" if a["why"] else ""), soft_wrap=True)
