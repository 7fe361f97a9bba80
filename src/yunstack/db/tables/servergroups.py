"""Nova server groups (``os-server-groups``) and their members.

A member row names an instance; a member whose instance is deleted is hidden by joining on the
instance table, so deleting a server needs no extra bookkeeping here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from yunstack.db.base import Base


class ServerGroup(Base):
    __tablename__ = "server_group"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]


class ServerGroupMember(Base):
    __tablename__ = "server_group_member"
    group_id: Mapped[str] = mapped_column(ForeignKey("server_group.id", ondelete="CASCADE"), primary_key=True)
    # One group per server (as Nova): the instance id is unique across groups.
    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True, unique=True)
