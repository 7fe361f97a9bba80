"""Volumes and volume snapshots (Cinder v3) as the dashboard shows them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yunstack.client.http import YunClient

SERVICE = "block-storage"


@dataclass(frozen=True, kw_only=True)
class Volume:
    id: str
    name: str
    size: int
    status: str
    bootable: bool
    attached_to: tuple[str, ...]  # server ids


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    id: str
    name: str
    size: int
    status: str
    volume_id: str


def list_volumes(client: YunClient) -> list[Volume]:
    found = client.get(SERVICE, "/volumes/detail")["volumes"]
    return [Volume(id=str(v["id"]), name=str(v.get("name") or ""), size=int(v.get("size") or 0),
                   status=str(v.get("status", "")), bootable=str(v.get("bootable", "false")).lower() == "true",
                   attached_to=tuple(str(a["server_id"]) for a in v.get("attachments") or []))
            for v in found]


def create_volume(client: YunClient, name: str, size: int, *, image_id: str = "", snapshot_id: str = "") -> str:
    volume: dict[str, Any] = {"name": name, "size": size}
    if image_id:
        volume["imageRef"] = image_id
    if snapshot_id:
        volume["snapshot_id"] = snapshot_id
    return str(client.post(SERVICE, "/volumes", json={"volume": volume})["volume"]["id"])


def delete_volume(client: YunClient, volume_id: str) -> None:
    client.delete(SERVICE, f"/volumes/{volume_id}")


def extend_volume(client: YunClient, volume_id: str, new_size: int) -> None:
    client.post(SERVICE, f"/volumes/{volume_id}/action", json={"os-extend": {"new_size": new_size}})


def list_snapshots(client: YunClient) -> list[Snapshot]:
    found = client.get(SERVICE, "/snapshots/detail")["snapshots"]
    return [Snapshot(id=str(s["id"]), name=str(s.get("name") or ""), size=int(s.get("size") or 0),
                     status=str(s.get("status", "")), volume_id=str(s["volume_id"])) for s in found]


def create_snapshot(client: YunClient, volume_id: str, name: str) -> str:
    body = {"snapshot": {"volume_id": volume_id, "name": name, "force": True}}
    return str(client.post(SERVICE, "/snapshots", json=body)["snapshot"]["id"])


def delete_snapshot(client: YunClient, snapshot_id: str) -> None:
    client.delete(SERVICE, f"/snapshots/{snapshot_id}")
