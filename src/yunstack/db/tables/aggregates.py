"""Nova host aggregates (``os-aggregates``): named sets of hosts with key/value metadata.

Nova names an aggregate by an integer and (from microversion 2.41) a UUID.  The metadata key
``availability_zone`` puts the aggregate's hosts in that zone; ``yunstack:memory_balancer``
chooses the memory balancer's mode on them (``compute.aggregates``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from yunstack.db.base import Base


class Aggregate(Base):
    __tablename__ = "aggregate"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AggregateHost(Base):
    __tablename__ = "aggregate_host"
    aggregate_id: Mapped[int] = mapped_column(ForeignKey("aggregate.id", ondelete="CASCADE"), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)


class AggregateMetadata(Base):
    __tablename__ = "aggregate_metadata"
    aggregate_id: Mapped[int] = mapped_column(ForeignKey("aggregate.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    value: Mapped[str] = mapped_column(String(255))
