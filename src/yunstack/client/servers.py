"""Servers as a person looks at them: one row per server, one server in detail, launching, the actions."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

from yunstack.client.http import ApiError, YunClient

# 2.47: a server's flavor is shown inline (its name is ``original_name``); remote consoles need 2.6 or later.
MICROVERSION = {"OpenStack-API-Version": "compute 2.47"}

Action = Literal["start", "stop", "reboot", "pause", "unpause", "suspend", "resume", "confirm-resize",
                 "revert-resize", "delete"]
ACTIONS: tuple[Action, ...] = ("start", "stop", "reboot", "pause", "unpause", "suspend", "resume", "confirm-resize",
                               "revert-resize", "delete")
_BODIES: dict[str, dict[str, Any]] = {"start": {"os-start": None}, "stop": {"os-stop": None},
                                      "reboot": {"reboot": {"type": "SOFT"}}, "pause": {"pause": None},
                                      "unpause": {"unpause": None}, "suspend": {"suspend": None},
                                      "resume": {"resume": None}, "confirm-resize": {"confirmResize": None},
                                      "revert-resize": {"revertResize": None}}
# What a server in a settled status may be asked to do (the API decides; this only hides buttons).
OFFERED: dict[str, tuple[Action, ...]] = {
    "ACTIVE": ("stop", "reboot", "pause", "suspend", "delete"), "SHUTOFF": ("start", "delete"),
    "PAUSED": ("unpause", "delete"), "SUSPENDED": ("resume", "delete"),
    "VERIFY_RESIZE": ("confirm-resize", "revert-resize", "delete")}
# The statuses a resize starts from (Nova's: ACTIVE and SHUTOFF, nothing in progress).
RESIZABLE = frozenset({"ACTIVE", "SHUTOFF"})
# Statuses a server leaves by itself (a watcher should look again soon).
TRANSITIONAL = frozenset({"BUILD", "REBOOT", "HARD_REBOOT", "RESIZE", "MIGRATING", "REBUILD", "PASSWORD",
                          "REVERT_RESIZE"})


@dataclass(frozen=True, kw_only=True)
class Fault:
    """Why a server is in ERROR: the API's message and, when it shows them, the details (the
    scheduler's reasons per host)."""

    message: str
    details: str = ""


@dataclass(frozen=True, kw_only=True)
class ServerRow:
    """One server of the project, flattened for a list."""

    id: str
    name: str
    status: str
    task_state: str | None
    addresses: tuple[str, ...]
    flavor: str
    image: str
    created: str
    fault: Fault | None = None

    @property
    def busy(self) -> bool:
        """True while the server is changing by itself (a status or a task in progress)."""
        return self.status in TRANSITIONAL or self.task_state is not None

    @property
    def actions(self) -> tuple[Action, ...]:
        """The actions worth offering now (delete always; the API has the last word)."""
        return ("delete",) if self.task_state else OFFERED.get(self.status, ("delete",))

    @property
    def resizable(self) -> bool:
        """True when a resize is worth offering (the API has the last word)."""
        return self.status in RESIZABLE and not self.task_state


@dataclass(frozen=True, kw_only=True)
class ServerDetail(ServerRow):
    """One server with what its page shows beyond the row."""

    networks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    key_name: str = ""
    security_groups: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    power_state: int = 0
    host_status: str = ""
    updated: str = ""
    availability_zone: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


def _fault(s: dict[str, Any]) -> Fault | None:
    fault = s.get("fault")
    if not isinstance(fault, dict):
        return None
    return Fault(message=str(fault.get("message", "")), details=str(fault.get("details") or ""))


def _row(s: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    image_id = str((s.get("image") or {}).get("id") or "")
    return {"id": str(s["id"]), "name": str(s["name"]), "status": str(s["status"]),
            "task_state": s.get("OS-EXT-STS:task_state"),
            "addresses": tuple(a["addr"] for net in (s.get("addresses") or {}).values() for a in net),
            "flavor": str((s.get("flavor") or {}).get("original_name", "")),
            "image": images.get(image_id, image_id) if image_id else "(volume)",
            "created": str(s.get("created", "")), "fault": _fault(s)}


def list_servers(client: YunClient) -> list[ServerRow]:
    """The token's project's servers, newest first, with image names resolved where visible."""
    servers = client.get("compute", "/servers/detail", headers=MICROVERSION)["servers"]
    images = _image_names(client) if any((s.get("image") or {}).get("id") for s in servers) else {}
    return [ServerRow(**_row(s, images)) for s in servers]


def get_server(client: YunClient, server_id: str) -> ServerDetail:
    """One server of the token's project (another project's id is a 404 ``ApiError``)."""
    s = client.get("compute", f"/servers/{server_id}", headers=MICROVERSION)["server"]
    images = _image_names(client) if (s.get("image") or {}).get("id") else {}
    networks = tuple((str(net), tuple(str(a["addr"]) for a in addrs))
                     for net, addrs in (s.get("addresses") or {}).items())
    return ServerDetail(**_row(s, images), networks=networks, key_name=str(s.get("key_name") or ""),
                        security_groups=tuple(str(g["name"]) for g in s.get("security_groups") or []),
                        volumes=tuple(str(v["id"]) for v in s.get("os-extended-volumes:volumes_attached") or []),
                        power_state=int(s.get("OS-EXT-STS:power_state") or 0),
                        updated=str(s.get("updated", "")),
                        availability_zone=str(s.get("OS-EXT-AZ:availability_zone") or ""),
                        metadata={str(k): str(v) for k, v in (s.get("metadata") or {}).items()})


def console_output(client: YunClient, server_id: str, *, lines: int = 200) -> str:
    """The last ``lines`` lines of the server's console log (``os-getConsoleOutput``)."""
    body = client.post("compute", f"/servers/{server_id}/action", json={"os-getConsoleOutput": {"length": lines}})
    return str((body or {}).get("output", ""))


def serial_console_url(client: YunClient, server_id: str) -> str:
    """A websocket URL to the server's serial console (``remote-consoles``, protocol and type
    ``serial``): good for one connection within 10 minutes; the guest's serial bytes go both ways in
    binary frames.  A server that is not ACTIVE is a 409 ``ApiError``, a reader's token a 403."""
    body = client.post("compute", f"/servers/{server_id}/remote-consoles", headers=MICROVERSION,
                       json={"remote_console": {"protocol": "serial", "type": "serial"}})
    return str(body["remote_console"]["url"])


def server_action(client: YunClient, server_id: str, action: Action) -> None:
    """Start, stop, reboot (soft), pause, unpause, suspend, resume, confirm or revert a resize, or
    delete one server; raises ``ApiError`` with the API's message."""
    if action == "delete":
        client.delete("compute", f"/servers/{server_id}")
        return
    client.request("POST", "compute", f"/servers/{server_id}/action", json=_BODIES[action])


def create_image(client: YunClient, server_id: str, name: str) -> str:
    """Snapshot the server into a new image (``createImage``); its id."""
    r = client.request("POST", "compute", f"/servers/{server_id}/action", json={"createImage": {"name": name}},
                       headers=MICROVERSION)
    return str(r.json()["image_id"]) if r.content else r.headers.get("location", "").rsplit("/", 1)[-1]


def attach_volume(client: YunClient, server_id: str, volume_id: str) -> None:
    client.post("compute", f"/servers/{server_id}/os-volume_attachments",
                json={"volumeAttachment": {"volumeId": volume_id}})


def detach_volume(client: YunClient, server_id: str, volume_id: str) -> None:
    client.delete("compute", f"/servers/{server_id}/os-volume_attachments/{volume_id}")


def resize(client: YunClient, server_id: str, flavor_id: str) -> None:
    """Ask for the server on another flavor (``resize``); it comes to VERIFY_RESIZE, to be confirmed
    or reverted.  The API's refusals (the same flavor, no host with room, each host's reason) are an
    ``ApiError`` with its message."""
    client.request("POST", "compute", f"/servers/{server_id}/action", json={"resize": {"flavorRef": flavor_id}})


@dataclass(frozen=True, kw_only=True)
class Interface:
    """One of a server's ports as ``os-interface`` shows it (``id`` is the port's)."""

    id: str
    network_id: str
    mac: str
    fixed_ips: tuple[str, ...]
    status: str


def _interface(a: dict[str, Any]) -> Interface:
    return Interface(id=str(a["port_id"]), network_id=str(a.get("net_id") or ""), mac=str(a.get("mac_addr") or ""),
                     fixed_ips=tuple(str(f["ip_address"]) for f in a.get("fixed_ips") or []),
                     status=str(a.get("port_state") or ""))


def list_interfaces(client: YunClient, server_id: str) -> list[Interface]:
    """The server's ports (``GET /servers/{id}/os-interface``)."""
    found = client.get("compute", f"/servers/{server_id}/os-interface")["interfaceAttachments"]
    return [_interface(a) for a in found]


def attach_interface(client: YunClient, server_id: str, network_id: str) -> Interface:
    """A new port on ``network_id`` for the server: the API answers with it at once, and the host
    plugs it (hot-plugged while the server runs, else at its next start)."""
    body = {"interfaceAttachment": {"net_id": network_id}}
    return _interface(client.post("compute", f"/servers/{server_id}/os-interface", json=body)["interfaceAttachment"])


def detach_interface(client: YunClient, server_id: str, port_id: str) -> None:
    """Unplug the port (202: it goes after the host has unplugged it; a port the API made is deleted)."""
    client.delete("compute", f"/servers/{server_id}/os-interface/{port_id}")


@dataclass(frozen=True, kw_only=True)
class Launch:
    """What the launch dialog asks for.  ``volume_gib`` > 0 boots from a new volume of that size made
    from ``image_id`` (deleted with the server) instead of from the image itself."""

    name: str
    image_id: str
    flavor_id: str
    volume_gib: int = 0
    network_ids: tuple[str, ...] = ()
    key_name: str = ""
    security_groups: tuple[str, ...] = ()
    user_data: str = ""
    server_group_id: str = ""
    count: int = 1


def launch(client: YunClient, spec: Launch) -> str:
    """Ask for ``spec.count`` servers (all or none); the first one's id.  Raises ``ApiError`` with
    the API's message."""
    server: dict[str, Any] = {"name": spec.name, "flavorRef": spec.flavor_id,
                              "networks": [{"uuid": n} for n in spec.network_ids] or "none",
                              "min_count": spec.count, "max_count": spec.count}
    if spec.volume_gib > 0:
        server["imageRef"] = ""
        server["block_device_mapping_v2"] = [{"boot_index": 0, "uuid": spec.image_id, "source_type": "image",
                                              "destination_type": "volume", "volume_size": spec.volume_gib,
                                              "delete_on_termination": True}]
    else:
        server["imageRef"] = spec.image_id
    if spec.key_name:
        server["key_name"] = spec.key_name
    if spec.security_groups:
        server["security_groups"] = [{"name": g} for g in spec.security_groups]
    if spec.user_data:
        server["user_data"] = base64.b64encode(spec.user_data.encode()).decode()
    body: dict[str, Any] = {"server": server}
    if spec.server_group_id:
        body["os:scheduler_hints"] = {"group": spec.server_group_id}
    answer = client.post("compute", "/servers", json=body, headers=MICROVERSION) or {}
    return str((answer.get("server") or {}).get("id", answer.get("reservation_id", "")))


@dataclass(frozen=True, kw_only=True)
class Choice:
    """Something to pick in a form: its id and what to call it (``name``: its own name, where the
    label says more)."""

    id: str
    label: str
    name: str = ""


def flavors(client: YunClient) -> list[Choice]:
    found = client.get("compute", "/flavors/detail")["flavors"]
    return [Choice(id=str(f["id"]), label=f"{f['name']} ({f['vcpus']} vCPU, {f['ram']} MiB, {f['disk']} GiB)",
                   name=str(f["name"]))
            for f in sorted(found, key=lambda f: (int(f["ram"]), str(f["name"])))]


def server_groups(client: YunClient) -> list[Choice]:
    found = client.get("compute", "/os-server-groups")["server_groups"]
    return [Choice(id=str(g["id"]), label=f"{g['name']} ({', '.join(g.get('policies') or [g.get('policy', '')])})")
            for g in found]


def _image_names(client: YunClient) -> dict[str, str]:
    try:
        images = client.get("image", "/v2/images", params={"limit": 1000})["images"]
    except ApiError:
        return {}  # names are a nicety: the ids still show
    return {str(i["id"]): str(i.get("name") or i["id"]) for i in images}
