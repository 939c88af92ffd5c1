"""The Backport feed table: per topic-based Subscription, where its event numbers stand, when it
was last heard from, what ``$status`` said, and how often it had to be recovered
(:mod:`adapter.feeds_backport`). No FHIR payload and no patient data."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class BackportFeed(SQLModel, table=True):
    """One row per Backport subscription key (the ``/ehr/notify/{key}`` segment)."""

    __tablename__ = "backport_feed"

    subscription_key: str = Field(primary_key=True, max_length=64)
    subscription_id: str | None = Field(default=None, max_length=64)  # the EHR's Subscription id
    heartbeat_seconds: int | None = None
    last_event_number: int | None = None  # every event up to this one arrived
    pending_numbers: str = Field(default="", max_length=400)  # numbers seen above it, comma-separated
    gap_since: datetime | None = None  # when a gap was first seen (the grace period runs from here)
    last_good_at: datetime | None = None  # when the feed was last known complete (re-sync starts before it)
    last_notification_at: datetime | None = None
    last_heartbeat_at: datetime | None = None
    last_status: str | None = Field(default=None, max_length=16)  # requested | active | error | off
    last_status_at: datetime | None = None
    recoveries: int = 0
    last_recovery_at: datetime | None = None
    last_recovery: str | None = Field(default=None, max_length=32)  # gap | heartbeat | error | off
    lease_until: datetime | None = None  # an instance is checking this feed
    updated_at: datetime
