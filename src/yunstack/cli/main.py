"""`yun`: start the cloud, look at it, manage it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from yunstack import config as configmod
from yunstack.cli import cluster, hosts, memory, resources, tasks, volumes
from yunstack.cli.aggregates import aggregate_app
from yunstack.cli.bench import bench_app
from yunstack.client import ApiError, YunClient

app = typer.Typer(help="yunstack: a real IaaS cloud in one Python package.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
token_app = typer.Typer(help="Token keys.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(resources.server_app, name="server")
app.add_typer(resources.image_app, name="image")
app.add_typer(resources.flavor_app, name="flavor")
app.add_typer(volumes.volume_app, name="volume")
app.add_typer(tasks.task_app, name="task")
app.command("console")(resources.console_cmd)
app.command("memory")(memory.memory_cmd)
app.add_typer(hosts.host_app, name="host")
app.add_typer(aggregate_app, name="aggregate")
app.add_typer(cluster.cluster_app, name="cluster")
app.command("agent")(hosts.agent_cmd)
app.add_typer(bench_app, name="bench")
console = Console()

StateDir = Annotated[Path | None, typer.Option("--state-dir", help="State directory.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML config file.")]


def _load(config_file: Path | None, state_dir: Path | None, database: str | None = None,
          **server: object) -> configmod.Config:
    overrides: dict[str, object] = {k: v for k, v in server.items() if v is not None}
    if state_dir is not None:
        overrides["state_dir"] = str(state_dir)
    probe = configmod.load(None, server=overrides)
    path = config_file or probe.server.state_path / "yunstack.toml"
    return configmod.load(path, server=overrides, database={"url": database} if database else {})


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    state_dir: StateDir = None,
    config_file: ConfigFile = None,
    hosts: Annotated[int, typer.Option(
        "--hosts", min=0, max=16,
        help="A lab: N compute hosts on this machine, each an agent in its own network namespace "
             "(needs root); this host is then the network host only. 0: the all-in-one host.")] = 0,
    host_memory: Annotated[int, typer.Option(
        "--host-memory", min=0, help="Memory budget of each lab host, MiB (0: the whole machine).")] = 1024,
    database: Annotated[str | None, typer.Option(
        "--database", help="Database URL (postgresql+psycopg://...); default: SQLite in the state dir.")] = None,
) -> None:
    """Start the all-in-one cloud in the foreground (bootstraps on first start)."""
    from yunstack import server

    cfg = _load(config_file, state_dir, database, host=host, port=port)

    def ready(prepared: server.Prepared) -> None:
        lines = [f"[bold green]yunstack is up[/] at {cfg.server.base_url}",
                 f"state: {cfg.server.state_path}",
                 f"clouds.yaml: {prepared.clouds_yaml}",
                 f"dashboard: {cfg.server.base_url}/ in a browser (user demo)",
                 "",
                 f"  export OS_CLIENT_CONFIG_FILE={prepared.clouds_yaml}",
                 "  openstack --os-cloud yunstack token issue        # admin",
                 "  openstack --os-cloud yunstack-demo project list --my-projects  # demo",
                 "",
                 "Ctrl-C stops the control plane."]
        if hosts:
            lines[-1:] = [f"lab: {hosts} compute hosts lab-h1..lab-h{hosts}, each in its own network namespace;",
                          "  openstack --os-cloud yunstack hypervisor list",
                          "Ctrl-C stops the control plane and removes the lab (its guests too)."]
        console.print(Panel("\n".join(lines), title="yunstack", expand=False))

    if hosts and os.geteuid() != 0:
        console.print("[red]--hosts needs root[/] (network namespaces, bridges, VXLAN)")
        raise typer.Exit(2)
    server.up(cfg, ready, config_file=config_file, lab_hosts=hosts, lab_memory_mib=host_memory)


@app.command()
def status(state_dir: StateDir = None, config_file: ConfigFile = None) -> None:
    """Say what runs and where."""
    cfg = _load(config_file, state_dir)
    runtime = cfg.server.state_path / "runtime.json"
    if not runtime.exists():
        console.print(f"[yellow]not running[/] (no {runtime})")
        raise typer.Exit(1)
    info = json.loads(runtime.read_text())
    pid = int(info["pid"])
    alive = Path(f"/proc/{pid}").exists()
    try:
        with YunClient(info["url"]) as client:
            health = client.health()
    except (ApiError, OSError, Exception) as exc:
        console.print(f"[red]process {pid} {'alive' if alive else 'gone'}, API not answering[/]: {exc}")
        raise typer.Exit(1) from None
    console.print(f"[green]running[/] pid {pid}, API {info['url']} ({health['status']}, "
                  f"version {health['version']})")
    console.print(f"state dir {cfg.server.state_path}; clouds.yaml {info['clouds_yaml']}")
    console.print(f"database {cfg.database_url.split('@')[-1]}")


@token_app.command("rotate")
def token_rotate(state_dir: StateDir = None, config_file: ConfigFile = None) -> None:
    """Rotate the Fernet keys (tokens from the last keys stay valid until they expire)."""
    from yunstack.identity.tokens import KeyRepository

    cfg = _load(config_file, state_dir)
    repo = KeyRepository(cfg.server.state_path / "fernet-keys", cfg.identity.max_active_keys)
    index = repo.rotate()
    console.print(f"rotated: primary key is now {index}; {len(repo.load())} keys active")


@app.command("config-doc")
def config_doc(output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None
               ) -> None:
    """Print the configuration reference (docs/reference/config.md)."""
    text = configmod.reference_markdown()
    if output:
        output.write_text(text + "\n")
    else:
        typer.echo(text)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
