"""Settings of the event feeds: how EHR changes arrive (Subscriptions, ``_lastUpdated`` polling or both)
and the topic-based Subscriptions of the Subscriptions R5 Backport IG
(https://hl7.org/fhir/uv/subscriptions-backport/): topics, payload, heartbeat and gap recovery."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator


class FeedSettings(BaseModel):
    # --- Event feeds
    feed_mode: Literal["subscriptions", "polling", "both"] = Field(
        "subscriptions", description="How EHR changes arrive: `subscriptions` (the EHR notifies), `polling` (the "
        "bridge searches `_lastUpdated` every poll interval; for EHRs without usable Subscriptions) or `both` "
        "(Subscriptions plus a polling reconcile that catches what a rest-hook failed to deliver).")
    poll_interval_seconds: float = Field(
        60.0, ge=5, le=86400, description="Seconds between two polls of the EHR (`feed_mode` `polling` or `both`).")
    poll_safety_lag_seconds: float = Field(
        120.0, ge=0, le=86400, description="How far behind the newest EHR timestamp seen each poll looks again, "
        "so changes the EHR commits late (with an older timestamp) are not missed.")
    poll_page_size: int = Field(
        100, ge=10, le=1000, description="`_count` of each polling search page (every page is followed).")
    feed_check_interval_seconds: float = Field(
        300.0, ge=30, le=86400, description="Seconds between two subscription manager runs: re-creates, "
        "re-activates or deletes EHR Subscriptions to match the configuration and refreshes feed health.")
    # --- Backport subscriptions
    backport_topics: dict[str, str] = Field(
        default_factory=dict, description="Topic-based (Subscriptions Backport IG) feeds: resource type -> the "
        "topic's canonical URL as the EHR advertises it, e.g. {\"Appointment\": \"http://sekmet.dev/fhir/"
        "SubscriptionTopic/appointment-booked\"}; empty: no Backport Subscriptions.")
    backport_payload: Literal["empty", "id-only", "full-resource"] = Field(
        "id-only", description="What the EHR puts in each Backport notification: `empty`, `id-only` or "
        "`full-resource` (the bridge re-reads the resource in every case).")
    backport_heartbeat_seconds: int = Field(
        60, ge=1, le=86400, description="Heartbeat period asked of the EHR; no notification for twice this long "
        "makes the bridge ask the EHR for the Subscription's `$status`.")
    backport_timeout_seconds: int = Field(
        30, ge=1, le=600, description="How long the EHR should wait for the bridge to answer a notification.")
    backport_max_count: int = Field(
        20, ge=1, le=1000, description="Most events the EHR should put in one notification.")
    backport_gap_detection: Literal["events-since-start", "per-bundle", "off"] = Field(
        "events-since-start", description="How the EHR numbers Backport events: `events-since-start` (per event, "
        "as the IG says), `per-bundle` (the counter counts notifications) or `off` (no gap detection; the "
        "heartbeat/`$status` re-sync still runs).")
    backport_gap_grace_seconds: float = Field(
        30.0, ge=0, le=3600, description="How long a gap in event numbers may wait for late notifications before "
        "the bridge recovers the missed events.")
    backport_resync_margin_seconds: float = Field(
        60.0, ge=0, le=86400, description="How far before the last moment the feed was complete a recovery "
        "search starts (clock differences, late commits).")

    @field_validator("backport_topics")
    @classmethod
    def _backport_topics(cls, value: dict[str, str]) -> dict[str, str]:
        for resource_type, topic in value.items():
            if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", resource_type):
                raise ValueError(f"backport_topics: '{resource_type[:40]}' is not a FHIR resource type such as "
                                 "Appointment")
            if not topic.startswith(("http://", "https://", "urn:")) or "?" in topic or " " in topic:
                raise ValueError(f"backport_topics: the topic for {resource_type} must be the canonical URL the "
                                 "EHR advertises (http(s)://... without a query), as listed by the EHR's "
                                 "SubscriptionTopic resources")
        return value
