"""Nova tables: flavors, keypairs, instances and their actions, compute nodes, quotas.

A server's host work is not here: each step is a row of the durable task table (``tables.tasks``),
queued in the same transaction as the server's state change, and the agent of the step's host
claims and carries it out.  That is what makes long operations survive a restart of either side
without a message broker.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from yunstack.db.base import Base


class Flavor(Base):
    __tablename__ = "flavor"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    ram: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer)
    ephemeral: Mapped[int] = mapped_column(Integer, default=0)
    swap: Mapped[int] = mapped_column(Integer, default=0)
    rxtx_factor: Mapped[float] = mapped_column(default=1.0)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra_specs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]


class FlavorAccess(Base):
    __tablename__ = "flavor_access"
    flavor_id: Mapped[str] = mapped_column(ForeignKey("flavor.id", ondelete="CASCADE"), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class KeyPair(Base):
    __tablename__ = "key_pair"
    __table_args__ = (UniqueConstraint("user_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16), default="ssh")
    created_at: Mapped[datetime]


class ComputeNode(Base):
    """One host, as its agent last reported it (the heartbeat is ``updated_at``)."""

    __tablename__ = "compute_node"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)
    availability_zone: Mapped[str] = mapped_column(String(255), default="nova")
    vcpus: Mapped[int] = mapped_column(Integer, default=0)
    memory_mib: Mapped[int] = mapped_column(Integer, default=0)
    memory_used_mib: Mapped[int] = mapped_column(Integer, default=0)
    local_gb: Mapped[int] = mapped_column(Integer, default=0)
    local_gb_used: Mapped[int] = mapped_column(Integer, default=0)
    hypervisor_type: Mapped[str] = mapped_column(String(64), default="QEMU")
    hypervisor_version: Mapped[int] = mapped_column(Integer, default=0)
    cpu_info: Mapped[str] = mapped_column(Text, default="{}")
    host_ip: Mapped[str] = mapped_column(String(64), default="127.0.0.1")
    uptime: Mapped[str] = mapped_column(Text, default="")
    accel: Mapped[str] = mapped_column(String(16), default="tcg")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    ram_allocation_ratio: Mapped[float] = mapped_column(default=1.5)
    cpu_allocation_ratio: Mapped[float] = mapped_column(default=16.0)
    disk_allocation_ratio: Mapped[float] = mapped_column(default=1.0)
    reserved_host_memory_mib: Mapped[int] = mapped_column(Integer, default=512)
    # Observed memory facts for overcommit-aware admission (filled by the memory manager).
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the host's driver can do (``compute.driver.Capabilities.to_dict``); None until it reported.
    capabilities: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Instance(Base):
    __tablename__ = "instance"
    # The server list's default page (a project's newest first) reads 100 index entries, not the project.
    __table_args__ = (Index("ix_instance_project_created", "project_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # The zone the create asked for (None: any); every later move keeps the server in it, as Nova's
    # request spec does.  ``availability_zone`` is where the server is now.
    requested_availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    flavor: Mapped[dict[str, Any]] = mapped_column(JSON)
    old_flavor: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    image_id: Mapped[str] = mapped_column(String(36), default="")
    key_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    key_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    config_drive: Mapped[bool] = mapped_column(Boolean, default=True)
    requested_networks: Mapped[Any] = mapped_column(JSON, nullable=True)
    security_groups: Mapped[list[Any]] = mapped_column(JSON, default=list)
    vm_state: Mapped[str] = mapped_column(String(32))
    task_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    power_state: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    locked_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Nova's instances.locked_by: "owner" (the server's project locked it) or "admin" (another did).
    locked_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Nova's system_metadata: facts the control plane keeps about a server (e.g. shelved_image_id).
    system_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    access_ipv4: Mapped[str] = mapped_column(String(64), default="")
    access_ipv6: Mapped[str] = mapped_column(String(64), default="")
    reservation_id: Mapped[str] = mapped_column(String(64), default="")
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    fault: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    launched_at: Mapped[datetime | None] = mapped_column(nullable=True)
    terminated_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class InstanceAction(Base):
    __tablename__ = "instance_action"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(String(36), index=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    start_time: Mapped[datetime]
    finish_time: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime]


class InstanceActionEvent(Base):
    __tablename__ = "instance_action_event"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    action_id: Mapped[int] = mapped_column(ForeignKey("instance_action.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    result: Mapped[str | None] = mapped_column(String(32), nullable=True)
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    start_time: Mapped[datetime]
    finish_time: Mapped[datetime | None] = mapped_column(nullable=True)


class Quota(Base):
    """A per-project override of a default quota limit (-1 = unlimited)."""

    __tablename__ = "quota"
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(Integer)


class BalancerPass(Base):
    """One pass of the cluster memory balancer that moved a guest or changed its plan (the history)."""

    __tablename__ = "memory_balancer_pass"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    trigger: Mapped[str] = mapped_column(String(16))  # auto (the periodic pass) | apply (an admin's call)
    queued: Mapped[int] = mapped_column(Integer, default=0)  # its moves queued as live migrations
    failed: Mapped[int] = mapped_column(Integer, default=0)  # its moves refused when queued
    data: Mapped[dict[str, Any]] = mapped_column(JSON)  # the plan as the API renders it, with what was applied


class MemorySample(Base):
    """A memory-ledger sample of one host (every ~10 s), kept for the history views."""

    __tablename__ = "memory_sample"
    # The balancer and the scheduler read each host's newest sample: (host, at) finds it at once.
    __table_args__ = (Index("ix_memory_sample_host_at", "host", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    at: Mapped[datetime] = mapped_column(index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
