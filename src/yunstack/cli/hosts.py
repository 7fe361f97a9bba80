"""`yun host add NAME` (an admin makes a join token), `yun host drain NAME` and `yun agent` (a host joins)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from yunstack import config as configmod
from yunstack.cli.common import Cloud, Format, FormatOpt, StateDirOpt, client, console, emit_json

host_app = typer.Typer(help="Compute hosts.", no_args_is_help=True)


@host_app.command("add")
def host_add(name: Annotated[str, typer.Argument(help="The new host's name (its agent will be this host).")],
             cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Add a compute host: prints its one-time join token (valid for an hour)."""
    with client(cloud, state_dir) as c:
        host = c.add_host(name)
    if fmt is Format.json:
        emit_json(host)
        return
    console.print(f"host [bold]{host['name']}[/]: join token (once, until {host['expires_at']}):")
    typer.echo(host["join_token"])
    console.print(f"on the host:  yun agent --control {c.base_url} --join-token {host['join_token']}",
                  soft_wrap=True)


@host_app.command("drain")
def host_drain(name: Annotated[str, typer.Argument(help="The compute host to empty.")],
               reason: Annotated[str, typer.Option("--reason", help="Why (shown in `compute service list`).")] = (
                   "draining for maintenance (yun host drain)"),
               timeout: Annotated[float, typer.Option("--timeout", help="Seconds per server.")] = 900.0,
               cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Disable a host, then live-migrate its servers elsewhere one at a time (exit 1 if any stays)."""
    from yunstack.client.drain import drain_host

    with client(cloud, state_dir) as c:
        results = drain_host(c, name, reason=reason, timeout=timeout)
    if fmt is Format.json:
        emit_json([vars(r) for r in results])
    else:
        console.print(f"host [bold]{name}[/] disabled; {len(results)} server(s) on it")
        for r in results:
            colour = {"moved": "green", "failed": "red", "skipped": "yellow"}[r.result]
            console.print(f"  {r.name} ({r.server_id}): [{colour}]{r.result}[/] -> {r.host}"
                          + (f": {r.why}" if r.why else ""), soft_wrap=True)
    if any(r.result != "moved" for r in results):
        raise typer.Exit(1)


def agent_cmd(
    control: Annotated[str, typer.Option("--control", help="The control plane's URL.")],
    join_token: Annotated[str | None, typer.Option("--join-token", envvar="YUN_JOIN_TOKEN",
                                                   help="One-time token from `yun host add` (first start).")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="This host's state directory.")] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML config file.")] = None,
) -> None:
    """Run one compute host (driver, dataplane, memory manager) against a control plane over HTTP."""
    from yunstack.agent import host

    overrides = {"state_dir": str(state_dir)} if state_dir is not None else {}
    probe = configmod.load(None, server=overrides)
    cfg = configmod.load(config_file or probe.server.state_path / "yunstack.toml", server=overrides)
    logging.basicConfig(level=cfg.log.level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per protocol call is noise
    host.run(cfg, control, join_token)
