"""Compute entities as services hand them out: frozen data with no database session behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Flavor:
    id: str
    name: str
    ram: int
    vcpus: int
    disk: int
    ephemeral: int = 0
    swap: int = 0
    rxtx_factor: float = 1.0
    is_public: bool = True
    disabled: bool = False
    description: str | None = None
    extra_specs: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """The copy an instance keeps, so later flavor edits never change a running server."""
        return {"id": self.id, "name": self.name, "ram": self.ram, "vcpus": self.vcpus, "disk": self.disk,
                "ephemeral": self.ephemeral, "swap": self.swap, "extra_specs": dict(self.extra_specs)}


@dataclass(frozen=True, kw_only=True)
class KeyPair:
    name: str
    user_id: str
    public_key: str
    fingerprint: str
    type: str
    created_at: datetime
    private_key: str | None = None  # only when the server generated the pair, on create
    id: int = 0  # the row id; Nova shows it on GET /os-keypairs/{name}


@dataclass(frozen=True, kw_only=True)
class ComputeNode:
    id: str
    host: str
    availability_zone: str
    vcpus: int
    memory_mib: int
    memory_used_mib: int
    local_gb: int
    local_gb_used: int
    hypervisor_type: str
    hypervisor_version: int
    cpu_info: str
    host_ip: str
    uptime: str
    accel: str
    disabled: bool
    disabled_reason: str | None
    up: bool
    running_vms: int = 0
    vcpus_used: int = 0
    memory_allocated_mib: int = 0
    disk_allocated_gb: int = 0
    updated_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Server:
    """One instance as the API shows it."""

    id: str
    name: str
    hostname: str
    description: str | None
    project_id: str
    user_id: str
    host: str | None
    availability_zone: str | None
    flavor: dict[str, Any]
    image_id: str
    key_name: str | None
    metadata: dict[str, str]
    tags: tuple[str, ...]
    config_drive: bool
    vm_state: str
    task_state: str | None
    power_state: int
    status: str
    progress: int
    locked: bool
    locked_reason: str | None
    access_ipv4: str
    access_ipv6: str
    reservation_id: str
    launch_index: int
    fault: dict[str, Any] | None
    security_groups: tuple[str, ...]
    addresses: dict[str, list[dict[str, Any]]]
    launched_at: datetime | None
    terminated_at: datetime | None
    created_at: datetime
    updated_at: datetime
    admin_pass: str | None = None  # only in the create response
    # (volume id, delete_on_termination) of each volume attached, oldest first
    volumes_attached: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Action:
    action: str
    instance_id: str
    request_id: str
    user_id: str
    project_id: str
    start_time: datetime
    finish_time: datetime | None
    message: str | None
    updated_at: datetime
    events: tuple[dict[str, Any], ...] = ()
