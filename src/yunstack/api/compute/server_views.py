"""Servers -> Nova JSON, field for field as each microversion up to our maximum shows them."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from yunstack.api.compute.microversion import APIVersion
from yunstack.compute.models import Action, Server
from yunstack.identity.context import AuthContext
from yunstack.types import isotime

Json = dict[str, Any]


def _usec(value: datetime | None) -> str | None:
    """Nova's oslo time format for usage and action times: microseconds, no zone suffix."""
    text = isotime(value, micro=True)
    return text[:-1] if text else None


def _links(base: str, kind: str, id: str) -> list[Json]:
    return [{"rel": "self", "href": f"{base}/compute/v2.1/{kind}/{id}"},
            {"rel": "bookmark", "href": f"{base}/compute/{kind}/{id}"}]


def host_id(server: Server) -> str:
    """Nova's hostId: sha224 of project id + host, so tenants can tell co-location without the name."""
    if not server.host:
        return ""
    return hashlib.sha224((server.project_id + server.host).encode()).hexdigest()


PROGRESS_STATUSES = ("ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING")


def summary(base: str, s: Server) -> Json:
    return {"id": s.id, "name": s.name, "links": _links(base, "servers", s.id)}


def detail(base: str, s: Server, v: APIVersion, ctx: AuthContext, *, host_up: bool | None = None) -> Json:
    flavor = s.flavor
    body: Json = {
        "id": s.id, "name": s.name, "status": s.status, "tenant_id": s.project_id, "user_id": s.user_id,
        "metadata": dict(s.metadata), "hostId": host_id(s),
        "image": {"id": s.image_id, "links": [{"rel": "bookmark",
                                               "href": f"{base}/compute/images/{s.image_id}"}]}
        if s.image_id else "",
        "created": isotime(s.created_at), "updated": isotime(s.updated_at),
        "addresses": s.addresses, "accessIPv4": s.access_ipv4, "accessIPv6": s.access_ipv6,
        "links": _links(base, "servers", s.id), "key_name": s.key_name,
        "config_drive": "True" if s.config_drive else "",
        "OS-DCF:diskConfig": "MANUAL", "OS-EXT-AZ:availability_zone": s.availability_zone or "",
        "OS-EXT-STS:task_state": s.task_state, "OS-EXT-STS:vm_state": s.vm_state,
        "OS-EXT-STS:power_state": s.power_state,
        "OS-SRV-USG:launched_at": _usec(s.launched_at),
        "OS-SRV-USG:terminated_at": _usec(s.terminated_at),
        "security_groups": [{"name": g} for g in s.security_groups],
        # 2.3 adds each volume's delete_on_termination.
        "os-extended-volumes:volumes_attached": [
            {"id": vid, "delete_on_termination": dot} if v.at_least("2.3") else {"id": vid}
            for vid, dot in s.volumes_attached],
    }
    if s.status in PROGRESS_STATUSES:  # Nova shows progress only while a status can make any
        body["progress"] = s.progress
    if v.at_least("2.47"):
        body["flavor"] = {"vcpus": flavor["vcpus"], "ram": flavor["ram"], "disk": flavor["disk"],
                          "ephemeral": flavor.get("ephemeral", 0), "swap": flavor.get("swap", 0),
                          "original_name": flavor["name"], "extra_specs": dict(flavor.get("extra_specs") or {})}
    else:
        body["flavor"] = {"id": flavor["id"], "links": [{"rel": "bookmark",
                                                         "href": f"{base}/compute/flavors/{flavor['id']}"}]}
    if ctx.is_admin:
        body["OS-EXT-SRV-ATTR:host"] = s.host
        body["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{s.id[:8]}"
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = s.host
        if v.at_least("2.3"):
            body.update({"OS-EXT-SRV-ATTR:reservation_id": s.reservation_id,
                         "OS-EXT-SRV-ATTR:launch_index": s.launch_index,
                         "OS-EXT-SRV-ATTR:hostname": s.hostname, "OS-EXT-SRV-ATTR:kernel_id": "",
                         "OS-EXT-SRV-ATTR:ramdisk_id": "", "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                         "OS-EXT-SRV-ATTR:user_data": None})
    if v.at_least("2.9"):
        body["locked"] = s.locked
    if v.at_least("2.16") and ctx.is_admin:
        body["host_status"] = "" if not s.host else ("UP" if host_up else "DOWN" if host_up is False else "UNKNOWN")
    if v.at_least("2.19"):
        body["description"] = s.description
    if v.at_least("2.26"):
        body["tags"] = list(s.tags)
    if s.status in ("ERROR", "DELETED") and s.fault:
        fault: Json = {"code": s.fault.get("code", 500), "message": s.fault.get("message", ""),
                       "created": (s.fault.get("created") or "")[:19] + "Z"}
        # Nova shows a 500's details (a traceback there) to admins only; the message says why for all.
        if ctx.is_admin or s.fault.get("code", 500) != 500:
            fault["details"] = s.fault.get("details", "")
        body["fault"] = fault
    return body


def created(base: str, s: Server) -> Json:
    return {"id": s.id, "links": _links(base, "servers", s.id), "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": g} for g in s.security_groups], "adminPass": s.admin_pass}


def action(a: Action, v: APIVersion, *, with_events: bool, admin: bool) -> Json:
    body: Json = {"action": a.action, "instance_uuid": a.instance_id, "request_id": a.request_id,
                  "user_id": a.user_id, "project_id": a.project_id,
                  "start_time": _usec(a.start_time), "message": a.message}
    if with_events:
        events = []
        for e in a.events:
            item: Json = {"event": e["event"], "start_time": _usec(e["start_time"]),
                          "finish_time": _usec(e["finish_time"]), "result": e["result"]}
            if admin:
                item["traceback"] = e["traceback"]
            events.append(item)
        body["events"] = events
    return body
