"""`yun volume`: block storage basics (list, show, create, delete, attach, detach), through the HTTP client.

A create or a delete returns at once, as the API does; ``--wait`` follows the volume's status
with a spinner until it settles, and says why when it ends in ``error``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from yunstack.cli.common import Cloud, Format, FormatOpt, StateDirOpt, client, console, emit_json, err, output
from yunstack.cli.resources import _find
from yunstack.client import ApiError, YunClient

volume_app = typer.Typer(help="Volumes (block storage).", no_args_is_help=True)
SETTLED = frozenset({"available", "in-use", "error", "error_deleting", "error_extending"})


def _volume(c: YunClient, name_or_id: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = dict(c.get("block-storage", f"/volumes/{name_or_id}")["volume"])
        return found
    except ApiError as exc:
        if exc.status != 404:
            raise
    items = c.get("block-storage", "/volumes/detail", params={"name": name_or_id})["volumes"]
    if len(items) != 1:
        raise ApiError(404, f"{'No' if not items else 'More than one'} volume named {name_or_id!r}.")
    return dict(items[0])


def _follow(c: YunClient, volume_id: str, *, until: frozenset[str] = SETTLED, gone_ok: bool = False,
            timeout: float = 300.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("waiting")
        while time.monotonic() < deadline:
            try:
                v = c.get("block-storage", f"/volumes/{volume_id}")["volume"]
            except ApiError as exc:
                if exc.status == 404 and gone_ok:
                    bar.update(task, description="deleted")
                    return None
                raise
            bar.update(task, description=v["status"])
            if v["status"] in until:
                return dict(v)
            time.sleep(0.3)
    err.print("[red]timed out waiting for the volume[/]")
    raise typer.Exit(1)


@volume_app.command("list")
def volume_list(cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table) -> None:
    """List volumes."""
    with client(cloud, state_dir) as c:
        rows = c.get("block-storage", "/volumes/detail")["volumes"]
        output(fmt, ["ID", "Name", "Status", "Size", "Type", "Attached to"],
               [(v["id"], v["name"], v["status"], v["size"], v["volume_type"],
                 ", ".join(f"{a['server_id']} {a['device']}" for a in v["attachments"])) for v in rows])


@volume_app.command("show")
def volume_show(volume: str, cloud: Cloud = "yunstack", state_dir: StateDirOpt = None,
                fmt: FormatOpt = Format.table) -> None:
    """Show one volume."""
    with client(cloud, state_dir) as c:
        v = _volume(c, volume)
        if fmt is Format.json:
            emit_json({k: x for k, x in v.items() if k != "links"})
            return
        output(fmt, ["Field", "Value"], sorted((k, x) for k, x in v.items() if k != "links"))


@volume_app.command("create")
def volume_create(
    name: str,
    size: Annotated[int, typer.Option(help="Size in GiB.")] = 1,
    image: Annotated[str | None, typer.Option(help="Image id to fill it from.")] = None,
    snapshot: Annotated[str | None, typer.Option(help="Snapshot id to make it from.")] = None,
    source: Annotated[str | None, typer.Option(help="Volume (name or id) to clone.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the create until the volume is available.")] = False,
    cloud: Cloud = "yunstack", state_dir: StateDirOpt = None,
) -> None:
    """Create a volume; with --wait, follow it until it is available (or say why it failed)."""
    with client(cloud, state_dir) as c:
        body: dict[str, Any] = {"name": name, "size": size}
        if image:
            body["imageRef"] = image
        if snapshot:
            body["snapshot_id"] = snapshot
        if source:
            body["source_volid"] = _volume(c, source)["id"]
        v = c.post("block-storage", "/volumes", json={"volume": body})["volume"]
        console.print(f"volume {name} [bold]{v['id']}[/] accepted")
        if wait:
            done = _follow(c, v["id"])
            if done is not None and done["status"] != "available":
                err.print(f"[red]{done['status']}[/]: the storage host could not make the volume")
                raise typer.Exit(1)


@volume_app.command("extend")
def volume_extend(volume: str, size: int, wait: Annotated[bool, typer.Option(help="Wait until it has grown.")] = False,
                  cloud: Cloud = "yunstack", state_dir: StateDirOpt = None) -> None:
    """Grow a volume to SIZE GiB, also while attached (the guest sees the new size)."""
    with client(cloud, state_dir) as c:
        v = _volume(c, volume)
        # 3.42: Cinder's microversion that grows an in-use volume too.
        c.post("block-storage", f"/volumes/{v['id']}/action", json={"os-extend": {"new_size": size}},
               headers={"OpenStack-API-Version": "volume 3.42"})
        console.print(f"extending {v['name'] or v['id']} to {size} GiB")
        if wait:
            done = _follow(c, v["id"], until=frozenset({"available", "in-use", "error_extending"}))
            if done is None or done["size"] != size:
                err.print("[red]the volume did not grow[/]")
                raise typer.Exit(1)


@volume_app.command("delete")
def volume_delete(volume: str, wait: Annotated[bool, typer.Option(help="Wait until it is gone.")] = False,
                  cloud: Cloud = "yunstack", state_dir: StateDirOpt = None) -> None:
    """Delete a volume (refused while attached or while it has snapshots)."""
    with client(cloud, state_dir) as c:
        v = _volume(c, volume)
        c.delete("block-storage", f"/volumes/{v['id']}")
        console.print(f"deleting {v['name'] or v['id']}")
        if wait:
            _follow(c, v["id"], until=frozenset({"error_deleting"}), gone_ok=True)


@volume_app.command("attach")
def volume_attach(volume: str, server: str, wait: Annotated[bool, typer.Option(help="Wait until in use.")] = False,
                  cloud: Cloud = "yunstack", state_dir: StateDirOpt = None) -> None:
    """Attach a volume to a server (hot-plugged into a running guest)."""
    with client(cloud, state_dir) as c:
        v, s = _volume(c, volume), _find(c, "server", server)
        att = c.post("compute", f"/servers/{s['id']}/os-volume_attachments",
                     json={"volumeAttachment": {"volumeId": v["id"]}})["volumeAttachment"]
        console.print(f"attaching {v['name'] or v['id']} to {s['name']} as {att['device']}")
        if wait:
            done = _follow(c, v["id"], until=frozenset({"in-use", "available", "error"}))
            if done is None or done["status"] != "in-use":
                err.print("[red]the attach failed[/]: see `openstack server event list` for the host's reason")
                raise typer.Exit(1)


@volume_app.command("detach")
def volume_detach(volume: str, server: str, wait: Annotated[bool, typer.Option(help="Wait until free.")] = False,
                  cloud: Cloud = "yunstack", state_dir: StateDirOpt = None) -> None:
    """Detach a volume from a server (the guest must let go of it)."""
    with client(cloud, state_dir) as c:
        v, s = _volume(c, volume), _find(c, "server", server)
        c.delete("compute", f"/servers/{s['id']}/os-volume_attachments/{v['id']}")
        console.print(f"detaching {v['name'] or v['id']} from {s['name']}")
        if wait:
            done = _follow(c, v["id"], until=frozenset({"available", "in-use"}))
            if done is None or done["status"] != "available":
                err.print("[red]the guest did not let go of the volume[/]; it stays attached")
                raise typer.Exit(1)
