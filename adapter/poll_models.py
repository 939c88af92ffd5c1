"""The event-feed state table (SQLModel; migration 0009): one row per feed the bridge runs.

A feed is a classic rest-hook Subscription (``kind="rest-hook"``) or a polling search
(``kind="poll"``), keyed by its subscription key. Polling rows hold the watermark: the EHR's own
``meta.lastUpdated`` (never the local clock) up to which changes were seen, and ``start_at``, the
EHR's clock when polling began (changes before it are history, not events). Every row holds what
``bridge feeds status`` and ``/health`` report: status, last run, last success, last error class.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


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
