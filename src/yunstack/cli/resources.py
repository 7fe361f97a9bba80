"""`yun server|image|flavor|console`: everyday commands, all through the HTTP client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from yunstack.cli.common import Cloud, Format, FormatOpt, StateDirOpt, client, console, emit_json, err, output
from yunstack.client import ApiError, YunClient

server_app = typer.Typer(help="Servers (VMs).", no_args_is_help=True)
image_app = typer.Typer(help="Images.", no_args_is_help=True)
flavor_app = typer.Typer(help="Flavors.", no_args_is_help=True)

BOOT_STEPS = ("BUILD", "YUNSTACK-BOOT", "YUNSTACK-METADATA", "YUNSTACK-READY")


def _find(c: YunClient, kind: str, name_or_id: str) -> dict[str, Any]:
    path = {"server": "/servers/detail", "flavor": "/flavors/detail"}[kind]
    try:
        found: dict[str, Any] = dict(c.get("compute", f"/{kind}s/{name_or_id}")[kind])
        return found
    except ApiError as exc:
        if exc.status != 404:
            raise
    items: list[dict[str, Any]] = [x for x in c.get("compute", path)[f"{kind}s"] if x["name"] == name_or_id]
    if len(items) != 1:
        raise ApiError(404, f"{'No' if not items else 'More than one'} {kind} named {name_or_id!r}.")
    return items[0]


def _image_id(c: YunClient, name_or_id: str) -> str:
    images = c.get("image", "/v2/images", params={"name": name_or_id})["images"]
    if len(images) == 1:
        return str(images[0]["id"])
    return name_or_id


@server_app.command("list")
def server_list(cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table
                ) -> None:
    """List servers."""
    with client(cloud, state_dir) as c:
        rows = c.get("compute", "/servers/detail")["servers"]
        output(fmt, ["ID", "Name", "Status", "Task", "Power", "Host"],
              [(s["id"], s["name"], s["status"], s["OS-EXT-STS:task_state"], s["OS-EXT-STS:power_state"],
                s.get("OS-EXT-SRV-ATTR:host", "")) for s in rows])


@server_app.command("show")
def server_show(server: str, cloud: Cloud = "yunstack", state_dir: StateDirOpt = None,
                fmt: FormatOpt = Format.table) -> None:
    """Show one server, with its fault if it failed."""
    with client(cloud, state_dir) as c:
        s = _find(c, "server", server)
        if fmt is Format.json:
            emit_json({k: v for k, v in s.items() if k != "links"})
            return
        output(fmt, ["Field", "Value"], sorted((k, v) for k, v in s.items() if k != "links"))


@server_app.command("create")
def server_create(
    name: str,
    image: Annotated[str, typer.Option(help="Image name or id.")] = "tiny",
    flavor: Annotated[str, typer.Option(help="Flavor name or id.")] = "m1.nano",
    key_name: Annotated[str | None, typer.Option(help="Keypair name.")] = None,
    user_data: Annotated[Path | None, typer.Option(help="File with user data.")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the boot until the guest is ready.")] = False,
    cloud: Cloud = "yunstack", state_dir: StateDirOpt = None,
) -> None:
    """Create a server; with --wait, show boot progress until the guest says it is ready."""
    import base64

    with client(cloud, state_dir) as c:
        body: dict[str, Any] = {"name": name, "imageRef": _image_id(c, image),
                                "flavorRef": _find(c, "flavor", flavor)["id"], "networks": "none"}
        if key_name:
            body["key_name"] = key_name
        if user_data:
            body["user_data"] = base64.b64encode(user_data.read_bytes()).decode()
        sid = c.post("compute", "/servers", json={"server": body},
                     headers={"OpenStack-API-Version": "compute 2.47"})["server"]["id"]
        console.print(f"server {name} [bold]{sid}[/] accepted")
        if wait:
            _follow_boot(c, sid)


def _follow_boot(c: YunClient, sid: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("scheduling", total=len(BOOT_STEPS))
        while time.monotonic() < deadline:
            s = c.get("compute", f"/servers/{sid}")["server"]
            if s["status"] == "ERROR":
                progress.stop()
                err.print(f"[red]ERROR[/]: {(s.get('fault') or {}).get('message', 'unknown')}")
                raise typer.Exit(1)
            done = 0
            if s["status"] == "ACTIVE":
                log = c.post("compute", f"/servers/{sid}/action", json={"os-getConsoleOutput": {}})["output"]
                done = 1 + sum(1 for step in BOOT_STEPS[1:] if step in log)
                progress.update(task, completed=done, description=f"ACTIVE, {BOOT_STEPS[done - 1]}")
                if done == len(BOOT_STEPS):
                    progress.update(task, description="ready")
                    return
            else:
                progress.update(task, description=s["status"].lower())
            time.sleep(0.5)
    err.print("[red]timed out waiting for the guest[/]")
    raise typer.Exit(1)


@server_app.command("delete")
def server_delete(server: str, cloud: Cloud = "yunstack", state_dir: StateDirOpt = None) -> None:
    """Delete a server (its process, disks and files go too)."""
    with client(cloud, state_dir) as c:
        s = _find(c, "server", server)
        c.delete("compute", f"/servers/{s['id']}")
        console.print(f"deleting {s['name']}")


@image_app.command("list")
def image_list(cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table
               ) -> None:
    """List images."""
    with client(cloud, state_dir) as c:
        rows = c.get("image", "/v2/images")["images"]
        output(fmt, ["ID", "Name", "Status", "Format", "Size", "Visibility"],
              [(i["id"], i["name"], i["status"], i["disk_format"], i["size"], i["visibility"]) for i in rows])


@image_app.command("build-tiny")
def image_build_tiny(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("build/tiny"),
) -> None:
    """Build the tiny guest image (busybox, config-drive init, memload) offline from Debian packages."""
    from yunstack.image.tiny import build_tiny_image

    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as p:
        task = p.add_task("building", total=1.0)
        path = build_tiny_image(out, progress=lambda step, frac: p.update(task, description=step, completed=frac))
        p.update(task, completed=1.0, description="done")
    console.print(f"tiny image: {path}")


@flavor_app.command("list")
def flavor_list(cloud: Cloud = "yunstack", state_dir: StateDirOpt = None, fmt: FormatOpt = Format.table
                ) -> None:
    """List flavors."""
    with client(cloud, state_dir) as c:
        rows = c.get("compute", "/flavors/detail")["flavors"]
        output(fmt, ["ID", "Name", "RAM (MiB)", "vCPUs", "Disk (GB)", "Public"],
              [(f["id"], f["name"], f["ram"], f["vcpus"], f["disk"], f["os-flavor-access:is_public"])
               for f in rows])


def console_cmd(
    server: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output.")] = False,
    lines: Annotated[int | None, typer.Option(help="Only the last N lines.")] = None,
    cloud: Cloud = "yunstack", state_dir: StateDirOpt = None,
) -> None:
    """Print (and with -f follow) a server's serial console log."""
    with client(cloud, state_dir) as c:
        sid = _find(c, "server", server)["id"]
        args: dict[str, Any] = {"length": lines} if lines else {}
        seen = ""
        while True:
            out = c.post("compute", f"/servers/{sid}/action", json={"os-getConsoleOutput": args})["output"]
            new = out[len(seen):] if out.startswith(seen) else out
            if new:
                console.out(new, end="", highlight=False)
            seen = out
            if not follow:
                return
            args = {}
            time.sleep(1.0)
