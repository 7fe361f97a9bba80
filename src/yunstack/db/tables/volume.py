"""Cinder tables: volumes, their snapshots, volume types and the block-storage quotas.

A volume's ``status`` is Cinder's (``creating``, ``available``, ``in-use``, ``error`` ...); what its
storage host is doing to it right now is a task (``tasks``, resource type ``volume``), so the row
never holds work.  ``status_reason`` keeps why a volume went to ``error`` (Cinder tells that
through its messages API; ``docs/reference/volume-api.md`` says where yunstack shows it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from yunstack.db.base import Base


class VolumeType(Base):
    __tablename__ = "volume_type"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    extra_specs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Volume(Base):
    __tablename__ = "volume"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    size: Mapped[int] = mapped_column(Integer)  # GiB
    status: Mapped[str] = mapped_column(String(32), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    availability_zone: Mapped[str] = mapped_column(String(255))
    volume_type_id: Mapped[str] = mapped_column(ForeignKey("volume_type.id"))
    host: Mapped[str] = mapped_column(String(255))  # the storage host that keeps it
    backend: Mapped[str] = mapped_column(String(32))  # its backend there ("file", "lvm", "rbd", "fake")
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    # None until os-update_readonly_flag sets it; from then Cinder shows it as metadata "readonly".
    read_only: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    multiattach: Mapped[bool] = mapped_column(Boolean, default=False)
    snapshot_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    source_volid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    image_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    image_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    launched_at: Mapped[datetime | None] = mapped_column(nullable=True)

    __table_args__ = (Index("ix_volume_project_created", "project_id", "created_at"),)


class Snapshot(Base):
    __tablename__ = "volume_snapshot"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volume.id"), index=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[str] = mapped_column(String(8), default="0%")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class VolumeQuota(Base):
    """A per-project override of a default block-storage quota limit (-1 = unlimited)."""

    __tablename__ = "volume_quota"
    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(Integer)


class VolumeAttachment(Base):
    """A volume attached to a server (Cinder's attachment; Nova's volume attachment of the server).

    ``status`` is ``attaching`` until the compute host reports the disk in the guest, then
    ``attached``; ``detaching`` while the guest lets go.  ``device`` is the name the guest sees.
    A server's block device mapping makes its rows at create: ``reserved`` while the volume is
    still being made for it, ``released`` when the server went away meanwhile (the volume's
    creation ends the row).  ``boot_index`` 0 marks the root disk of a volume-backed server.
    ``origin`` says who made it: ``compute`` (Nova's path, which hot-plugs) or ``cinder`` (a record
    of Cinder's attachments API, which plugs nothing); ``connector`` is what such a record was given.
    """

    __tablename__ = "volume_attachment"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volume.id"), index=True)
    instance_id: Mapped[str] = mapped_column(String(36), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))  # the compute host of the guest
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(2), default="rw")
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    boot_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Where the guest's host reaches a volume kept on another host (``protocol.NbdConnection``: the
    # storage host's export and its key); None while the guest opens the storage host's own file.
    connection: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    origin: Mapped[str] = mapped_column(String(8), default="compute", server_default="compute")
    connector: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    attached_at: Mapped[datetime | None] = mapped_column(nullable=True)
