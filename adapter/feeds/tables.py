"""The event feeds' tables: the inbox of EHR notifications (references only, never a payload), the
last processed version of each resource, the ping look-back watermark, each feed's state (polling
watermark, health) and each Backport subscription's event numbers and heartbeats.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, String, text
from sqlmodel import Field, SQLModel

from adapter.storage.claimable import claimable_index

LEASED = text("lease_until IS NOT NULL")  # only leased rows: the index stays as small as the work in hand
INBOX_CLAIMABLE = ("pending",)  # done and dead are finished: the claim never reads them


class InboxEvent(SQLModel, table=True):
    """A change the EHR reported, stored before the EHR gets its 200 (at-least-once in)."""

    __tablename__ = "inbox_event"
    __table_args__ = (Index("ix_inbox_due", "state", "next_attempt_at"),
                      # The claim reads pending events in id order (adapter.feeds.inbox).
                      claimable_index("ix_inbox_claimable", "id", states=INBOX_CLAIMABLE),
                      # A dead instance's leases are released by owner (adapter.ops.liveness).
                      Index("ix_inbox_leased", "lease_owner", postgresql_where=LEASED, sqlite_where=LEASED))

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(sa_column=Column(String(400), nullable=False, unique=True))
    kind: str = Field(max_length=16)  # ping | resource
    subscription_key: str = Field(max_length=64)
    resource_type: str | None = Field(default=None, max_length=64)
    resource_id: str | None = Field(default=None, max_length=128)
    version_id: str | None = Field(default=None, max_length=64)
    state: str = Field(default="pending", max_length=16)  # pending | done | dead
    attempts: int = 0
    next_attempt_at: datetime
    lease_until: datetime | None = None
    lease_owner: str | None = Field(default=None, max_length=32)  # the boot id of the instance holding it
    last_error: str | None = Field(default=None, max_length=200)
    received_at: datetime
    processed_at: datetime | None = None


class ResourceState(SQLModel, table=True):
    """The last version of each EHR resource we acted on, and its status then.

    It makes processing idempotent (a version already processed is a no-op) and turns statuses
    into transitions ("entered booked"), which is what the rules fire on.
    """

    __tablename__ = "resource_state"

    resource_type: str = Field(primary_key=True, max_length=64)
    resource_id: str = Field(primary_key=True, max_length=128)
    version_id: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, max_length=32)
    last_updated: str | None = Field(default=None, max_length=40)
    processed_at: datetime


class FeedWatermark(SQLModel, table=True):
    """Per subscription: the EHR's ``meta.lastUpdated`` up to which a ping query has looked."""

    __tablename__ = "feed_watermark"

    subscription_key: str = Field(primary_key=True, max_length=64)
    last_updated: str = Field(max_length=40)


class FeedState(SQLModel, table=True):
    """What one feed last did. No payloads, no search values: references and error class names."""

    __tablename__ = "feed_state"

    feed: str = Field(primary_key=True, max_length=80)  # "<kind>:<key>"
    kind: str = Field(max_length=16)  # rest-hook | poll
    key: str = Field(max_length=64)
    status: str = Field(max_length=32)
    fhir_id: str | None = Field(default=None, max_length=64)
    watermark: str | None = Field(default=None, max_length=40)
    start_at: str | None = Field(default=None, max_length=40)
    last_found: int = 0
    last_run_at: datetime | None = None
    last_ok_at: datetime | None = None
    last_error: str | None = Field(default=None, max_length=200)


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
    lease_owner: str | None = Field(default=None, max_length=32)  # the boot id of that instance
    updated_at: datetime
