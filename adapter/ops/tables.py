"""Operators' tables: service-wide switches shared by every instance (the sending pause) and
alerts a person must act on.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, String
from sqlmodel import Field, SQLModel


class ServiceFlag(SQLModel, table=True):
    """Service-wide switches shared by every instance, e.g. ``sending_paused`` (the circuit breaker)."""

    __tablename__ = "service_flag"

    name: str = Field(primary_key=True, max_length=64)
    reason: str = Field(max_length=300)
    set_at: datetime


class OperatorAlert(SQLModel, table=True):
    """Something a person must look at (a configuration error, a paused template, …); raised once per
    ``dedupe_key`` until acknowledged."""

    __tablename__ = "operator_alert"

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    kind: str = Field(max_length=64)
    detail: str = Field(max_length=300)
    created_at: datetime
    acknowledged_at: datetime | None = None


class ServiceInstance(SQLModel, table=True):
    """One boot of one service instance and its heartbeat (:mod:`adapter.ops.liveness`). Leases name
    the boot that holds them; a boot whose heartbeat stopped has its leases released by the others."""

    __tablename__ = "service_instance"

    boot_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=120, index=True)  # settings: instance_name (stable across restarts)
    started_at: datetime
    heartbeat_at: datetime
