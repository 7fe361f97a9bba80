"""Shared CLI plumbing: finding the cloud, building the client, rendering tables and errors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from yunstack import config as configmod
from yunstack.client import ApiError, YunClient

console = Console()
err = Console(stderr=True)

Cloud = Annotated[str, typer.Option("--cloud", envvar="OS_CLOUD", help="Cloud name in clouds.yaml.")]
StateDirOpt = Annotated[Path | None, typer.Option("--state-dir", help="State directory of `yun up`.")]


def clouds_yaml(state_dir: Path | None) -> Path:
    env = os.environ.get("OS_CLIENT_CONFIG_FILE")
    if env and state_dir is None:
        return Path(env)
    cfg = configmod.load(None, server={"state_dir": str(state_dir)} if state_dir else {})
    return cfg.server.state_path / "clouds.yaml"


@contextmanager
def client(cloud: str, state_dir: Path | None) -> Iterator[YunClient]:
    path = clouds_yaml(state_dir)
    if not path.exists():
        err.print(f"[red]no clouds.yaml at {path}[/]: is `yun up` running? (or set OS_CLIENT_CONFIG_FILE)")
        raise typer.Exit(2)
    try:
        with YunClient.from_clouds_yaml(path, cloud) as c:
            yield c
    except ApiError as exc:
        err.print(f"[red]error {exc.status}[/]: {exc.message}")
        raise typer.Exit(1) from None


class Format(StrEnum):
    table = "table"
    json = "json"


FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table for people, json for scripts.")]


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    t = Table(*columns, title=title, header_style="bold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)


def emit_json(data: Any) -> None:
    """JSON on stdout, untouched by Rich (no wrapping, no markup), so scripts can parse it."""
    typer.echo(json.dumps(data, indent=2, default=str))


def output(fmt: Format, columns: Sequence[str], rows: Sequence[Sequence[Any]],
           title: str | None = None) -> None:
    """A listing as a table, or as a JSON list of objects keyed by the column names."""
    if fmt is Format.json:
        emit_json([dict(zip(columns, row, strict=True)) for row in rows])
    else:
        table(columns, rows, title)
