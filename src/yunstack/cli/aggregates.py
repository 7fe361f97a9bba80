"""`yun aggregate list|show|create|delete|add-host|remove-host|set`: host aggregates (admin), through the client."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from yunstack.cli.common import Cloud, Format, FormatOpt, StateDirOpt, client, emit_json, output
from yunstack.client import ApiError, YunClient

aggregate_app = typer.Typer(help="Host aggregates: sets of hosts with metadata and a zone (admin).",
                            no_args_is_help=True)
AggregateArg = Annotated[str, typer.Argument(help="The aggregate's name or id.")]
HostArg = Annotated[str, typer.Argument(help="A compute host's name.")]
PATH = "/os-aggregates"
VERSION = {"OpenStack-API-Version": "compute 2.41"}  # with the aggregates' uuid


def _id(c: YunClient, given: str) -> int:
    """The id of the aggregate named ``given`` (or whose id it is)."""
    found = c.get("compute", PATH, headers=VERSION)["aggregates"]
    for agg in found:
        if str(agg["id"]) == given or agg["uuid"] == given:
            return int(agg["id"])
    named = [agg for agg in found if agg["name"] == given]
    if not named:
        raise ApiError(404, f"No aggregate is named {given!r}.")
    return int(named[0]["id"])


def _show(fmt: Format, agg: dict[str, Any]) -> None:
    if fmt is Format.json:
        emit_json(agg)
        return
    rows = [(k, json.dumps(v) if isinstance(v, dict | list) else v) for k, v in agg.items()]
    output(fmt, ["Field", "Value"], rows)


def _action(cloud: str, state_dir: Any, fmt: Format, aggregate: str, body: dict[str, Any]) -> None:
    with client(cloud, state_dir) as c:
        agg = c.post("compute", f"{PATH}/{_id(c, aggregate)}/action", json=body, headers=VERSION)["aggregate"]
    _show(fmt, agg)


@aggregate_app.command("list")
def aggregate_list(cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """List aggregates with their zone and hosts."""
    with client(cloud, state_dir) as c:
        found: list[dict[str, Any]] = c.get("compute", PATH, headers=VERSION)["aggregates"]
    if fmt is Format.json:
        emit_json(found)
        return
    output(fmt, ["ID", "Name", "Zone", "Hosts", "Metadata"],
           [(x["id"], x["name"], x["availability_zone"] or "", ", ".join(x["hosts"]),
             ", ".join(f"{k}={v}" for k, v in x["metadata"].items() if k != "availability_zone"))
            for x in found])


@aggregate_app.command("show")
def aggregate_show(aggregate: AggregateArg, cloud: Cloud = "yunstack", state_dir: StateDirOpt = None,
                   fmt: FormatOpt = Format.table) -> None:
    """Show one aggregate: its hosts and metadata."""
    with client(cloud, state_dir) as c:
        agg = c.get("compute", f"{PATH}/{_id(c, aggregate)}", headers=VERSION)["aggregate"]
    _show(fmt, agg)


@aggregate_app.command("create")
def aggregate_create(
    name: Annotated[str, typer.Argument(help="The new aggregate's name.")],
    zone: Annotated[str | None, typer.Option("--zone", help="Its hosts' availability zone.")] = None,
    cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table,
) -> None:
    """Create an aggregate, optionally with an availability zone."""
    body: dict[str, Any] = {"name": name}
    if zone is not None:
        body["availability_zone"] = zone
    with client(cloud, state_dir) as c:
        agg = c.post("compute", PATH, json={"aggregate": body}, headers=VERSION)["aggregate"]
    _show(fmt, agg)


@aggregate_app.command("delete")
def aggregate_delete(aggregate: AggregateArg, cloud: Cloud = "yunstack", state_dir: StateDirOpt = None) -> None:
    """Delete an aggregate (it must have no hosts)."""
    with client(cloud, state_dir) as c:
        c.delete("compute", f"{PATH}/{_id(c, aggregate)}")


@aggregate_app.command("add-host")
def aggregate_add_host(aggregate: AggregateArg, host: HostArg, cloud: Cloud = "yunstack",
                       state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Add a host to an aggregate."""
    _action(cloud, state_dir, fmt, aggregate, {"add_host": {"host": host}})


@aggregate_app.command("remove-host")
def aggregate_remove_host(aggregate: AggregateArg, host: HostArg, cloud: Cloud = "yunstack",
                          state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """Take a host out of an aggregate."""
    _action(cloud, state_dir, fmt, aggregate, {"remove_host": {"host": host}})


@aggregate_app.command("set")
def aggregate_set(
    aggregate: AggregateArg,
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    zone: Annotated[str | None, typer.Option("--zone", help="A new availability zone.")] = None,
    properties: Annotated[list[str] | None, typer.Option(
        "--property", help="KEY=VALUE metadata (repeatable), e.g. yunstack:memory_balancer=advise.")] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="A metadata key to delete (repeatable).")] = None,
    cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table,
) -> None:
    """Rename an aggregate, change its zone, or set and delete metadata keys."""
    metadata: dict[str, str | None] = {}
    for item in properties or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--property")
        metadata[key] = value
    metadata.update(dict.fromkeys(unset or []))
    updates = {k: v for k, v in {"name": name, "availability_zone": zone}.items() if v is not None}
    if not (metadata or updates):
        raise typer.BadParameter("nothing to set: give --name, --zone, --property or --unset")
    with client(cloud, state_dir) as c:
        agg_id = _id(c, aggregate)
        agg = None
        if updates:
            agg = c.put("compute", f"{PATH}/{agg_id}", json={"aggregate": updates}, headers=VERSION)["aggregate"]
        if metadata:
            agg = c.post("compute", f"{PATH}/{agg_id}/action", json={"set_metadata": {"metadata": metadata}},
                         headers=VERSION)["aggregate"]
    _show(fmt, agg or {})
