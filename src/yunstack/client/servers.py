"""Servers as a person looks at them: one row per server, and the power actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from yunstack.client.http import ApiError, YunClient

# 2.47: a server's flavor is shown inline (its name is ``original_name``).
MICROVERSION = {"OpenStack-API-Version": "compute 2.47"}

Action = Literal["start", "stop", "reboot", "delete"]
ACTIONS: tuple[Action, ...] = ("start", "stop", "reboot", "delete")
_BODIES: dict[str, dict[str, Any]] = {"start": {"os-start": None}, "stop": {"os-stop": None},
                                      "reboot": {"reboot": {"type": "SOFT"}}}
# Statuses a server leaves by itself (a watcher should look again soon).
TRANSITIONAL = frozenset({"BUILD", "REBOOT", "HARD_REBOOT", "RESIZE", "MIGRATING", "REBUILD", "PASSWORD",
                          "REVERT_RESIZE"})


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

    @property
    def busy(self) -> bool:
        """True while the server is changing by itself (a status or a task in progress)."""
        return self.status in TRANSITIONAL or self.task_state is not None


def list_servers(client: YunClient) -> list[ServerRow]:
    """The token's project's servers, newest first, with image names resolved where visible."""
    servers = client.get("compute", "/servers/detail", headers=MICROVERSION)["servers"]
    images = _image_names(client) if any((s.get("image") or {}).get("id") for s in servers) else {}
    rows = []
    for s in servers:
        image_id = str((s.get("image") or {}).get("id") or "")
        addresses = tuple(a["addr"] for net in (s.get("addresses") or {}).values() for a in net)
        rows.append(ServerRow(id=str(s["id"]), name=str(s["name"]), status=str(s["status"]),
                              task_state=s.get("OS-EXT-STS:task_state"), addresses=addresses,
                              flavor=str((s.get("flavor") or {}).get("original_name", "")),
                              image=images.get(image_id, image_id) if image_id else "(volume)",
                              created=str(s.get("created", ""))))
    return rows


def server_action(client: YunClient, server_id: str, action: Action) -> None:
    """Start, stop, reboot (soft) or delete one server; raises ``ApiError`` with the API's message."""
    if action == "delete":
        client.delete("compute", f"/servers/{server_id}")
        return
    client.request("POST", "compute", f"/servers/{server_id}/action", json=_BODIES[action])


def _image_names(client: YunClient) -> dict[str, str]:
    try:
        images = client.get("image", "/v2/images", params={"limit": 1000})["images"]
    except ApiError:
        return {}  # names are a nicety: the ids still show
    return {str(i["id"]): str(i.get("name") or i["id"]) for i in images}
