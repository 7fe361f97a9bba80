"""Flavors, keypairs, hypervisors, zones, quota sets and limits -> Nova JSON, per microversion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from yunstack.api.compute.microversion import APIVersion
from yunstack.compute.hosts import HostUsage, Zone, cpu_info_dict
from yunstack.compute.models import Flavor, KeyPair
from yunstack.compute.quotas import NETWORK_PROXY, QuotaUsage
from yunstack.errors import BadRequest

Json = dict[str, Any]
MAX_LIMIT = 1000  # Nova's [api] max_limit


def paging(limit: str | None, marker: str | None) -> tuple[int, str | None]:
    """Nova's ``limit``/``marker`` query parameters; the limit is capped at MAX_LIMIT."""
    if limit is None:
        return MAX_LIMIT, marker
    try:
        value = int(limit)
    except ValueError:
        raise BadRequest("limit param must be an integer") from None
    if value < 0:
        raise BadRequest("limit param must be positive")
    return min(value, MAX_LIMIT), marker


def next_links(request: Request, base: str, ids: Sequence[str], limit: int) -> list[Json]:
    """A ``next`` link when the page is full, keeping the request's other query parameters."""
    if not ids or len(ids) != limit:
        return []
    params = dict(request.query_params)
    params["marker"] = ids[-1]
    path = request.url.path
    return [{"rel": "next", "href": f"{base}{path}?{urlencode(params)}"}]


def _naive(value: datetime | None) -> str | None:
    """Nova's oslo datetime rendering: ISO 8601, microseconds, no zone."""
    if value is None:
        return None
    return value.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S.%f")


# -- flavors ------------------------------------------------------------------------------------

def flavor_links(base: str, flavor_id: str) -> list[Json]:
    return [{"rel": "self", "href": f"{base}/compute/v2.1/flavors/{flavor_id}"},
            {"rel": "bookmark", "href": f"{base}/compute/flavors/{flavor_id}"}]


def flavor_brief(base: str, f: Flavor) -> Json:
    return {"id": f.id, "name": f.name, "links": flavor_links(base, f.id)}


def flavor(base: str, f: Flavor, version: APIVersion) -> Json:
    # Up to 2.47: no description (2.55) or extra_specs (2.61); swap is "" when 0 (until 2.75).
    return {"id": f.id, "name": f.name, "ram": f.ram, "disk": f.disk, "vcpus": f.vcpus,
            "links": flavor_links(base, f.id), "OS-FLV-EXT-DATA:ephemeral": f.ephemeral,
            "OS-FLV-DISABLED:disabled": f.disabled, "os-flavor-access:is_public": f.is_public,
            "swap": f.swap or "", "rxtx_factor": f.rxtx_factor}


def flavor_access(flavor_id: str, projects: Sequence[str]) -> Json:
    return {"flavor_access": [{"flavor_id": flavor_id, "tenant_id": p} for p in projects]}


# -- keypairs -----------------------------------------------------------------------------------

def keypair_created(k: KeyPair, version: APIVersion) -> Json:
    body: Json = {"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint,
                  "user_id": k.user_id}
    if version.at_least("2.2"):
        body["type"] = k.type
    if k.private_key is not None:
        body["private_key"] = k.private_key
    return {"keypair": body}


def keypair_listed(k: KeyPair, version: APIVersion) -> Json:
    body: Json = {"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint}
    if version.at_least("2.2"):
        body["type"] = k.type
    return {"keypair": body}


def keypair(k: KeyPair, version: APIVersion) -> Json:
    body: Json = {"name": k.name, "public_key": k.public_key, "fingerprint": k.fingerprint,
                  "user_id": k.user_id, "created_at": _naive(k.created_at), "deleted": False,
                  "deleted_at": None, "updated_at": None, "id": k.id}
    if version.at_least("2.2"):
        body["type"] = k.type
    return {"keypair": body}


# -- hypervisors and zones ----------------------------------------------------------------------

def hypervisor(h: HostUsage, version: APIVersion, *, detail: bool, **extra: Any) -> Json:
    """Below 2.53 ids are integers; cpu_info is a JSON string below 2.28 and a dict from 2.28."""
    body: Json = {"id": h.api_id, "hypervisor_hostname": h.host, "state": "up" if h.up else "down",
                  "status": "disabled" if h.disabled else "enabled"}
    if detail:
        body.update({
            "vcpus": h.vcpus, "memory_mb": h.memory_mib, "local_gb": h.local_gb,
            "vcpus_used": h.vcpus_used, "memory_mb_used": h.memory_mb_used,
            "local_gb_used": h.disk_used_gb, "hypervisor_type": h.hypervisor_type,
            "hypervisor_version": h.hypervisor_version, "free_ram_mb": h.free_ram_mb,
            "free_disk_gb": h.free_disk_gb, "current_workload": h.workload, "running_vms": h.instances,
            "disk_available_least": h.disk_available_least, "host_ip": h.host_ip,
            "service": {"host": h.host, "id": h.api_id, "disabled_reason": h.disabled_reason},
            "cpu_info": cpu_info_dict(h.cpu_info) if version.at_least("2.28") else h.cpu_info,
        })
    body.update(extra)
    return body


def zones(found: Sequence[Zone], *, detail: bool) -> Json:
    info = []
    for z in found:
        hosts: Json | None = None
        if detail and z.hosts:
            hosts = {}
            for h in z.hosts:
                hosts.setdefault(h.host, {})[h.service] = {
                    "available": h.available, "active": h.active, "updated_at": _naive(h.updated_at)}
        info.append({"zoneName": z.name, "zoneState": {"available": z.available}, "hosts": hosts})
    return {"availabilityZoneInfo": info}


# -- quotas and limits --------------------------------------------------------------------------

def _shown(resource: str, version: APIVersion) -> bool:
    return not (resource in NETWORK_PROXY and version.at_least("2.36"))


def quota_set(values: Mapping[str, Any], version: APIVersion, project_id: str | None) -> Json:
    body: Json = {} if project_id is None else {"id": project_id}
    for resource, value in values.items():
        if _shown(resource, version):
            body[resource] = ({"limit": value.limit, "in_use": value.in_use, "reserved": value.reserved}
                              if isinstance(value, QuotaUsage) else value)
    return {"quota_set": body}


LIMIT_NAMES: dict[str, tuple[str, ...]] = {
    "ram": ("maxTotalRAMSize",),
    "instances": ("maxTotalInstances",),
    "cores": ("maxTotalCores",),
    "key_pairs": ("maxTotalKeypairs",),
    "floating_ips": ("maxTotalFloatingIps",),
    "metadata_items": ("maxServerMeta", "maxImageMeta"),
    "injected_files": ("maxPersonality",),
    "injected_file_content_bytes": ("maxPersonalitySize",),
    "security_groups": ("maxSecurityGroups",),
    "security_group_rules": ("maxSecurityGroupRules",),
    "server_groups": ("maxServerGroups",),
    "server_group_members": ("maxServerGroupMembers",),
}
USED_NAMES: dict[str, str] = {
    "ram": "totalRAMUsed", "cores": "totalCoresUsed", "instances": "totalInstancesUsed",
    "floating_ips": "totalFloatingIpsUsed", "security_groups": "totalSecurityGroupsUsed",
    "server_groups": "totalServerGroupsUsed",
}


def limits(quotas: Mapping[str, QuotaUsage], version: APIVersion) -> Json:
    """Nova's absolute limits: network ones go at 2.36, maxImageMeta at 2.39."""
    absolute: Json = {}
    for resource, names in LIMIT_NAMES.items():
        if resource not in quotas or not _shown(resource, version):
            continue
        for name in names:
            if name == "maxImageMeta" and version.at_least("2.39"):
                continue
            absolute[name] = quotas[resource].limit
    for resource, name in USED_NAMES.items():
        if resource in quotas and _shown(resource, version):
            absolute[name] = quotas[resource].in_use
    return {"limits": {"rate": [], "absolute": absolute}}
