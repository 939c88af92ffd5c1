"""Settings of the event feeds: how EHR changes arrive (Subscriptions, ``_lastUpdated`` polling or both),
the reconcile and catch-up that fetch what a rest-hook failed to deliver, and the topic-based
Subscriptions of the Subscriptions R5 Backport IG (https://hl7.org/fhir/uv/subscriptions-backport/):
topics, payload, heartbeat and gap recovery."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator


class FeedSettings(BaseModel):
    # --- Event feeds
    feed_mode: Literal["subscriptions", "polling", "both"] = Field(
        "subscriptions", description="How EHR changes arrive: `subscriptions` (the EHR notifies; a reconcile poll "
        "every `reconcile_interval_seconds` fetches what it failed to deliver), `polling` (the bridge searches "
        "`_lastUpdated` every poll interval and creates no Subscription; for EHRs without usable Subscriptions) "
        "or `both` (Subscriptions plus a polling reconcile every poll interval).")
    poll_interval_seconds: float = Field(
        60.0, ge=5, le=86400, description="Seconds between two polls of the EHR (`feed_mode` `polling` or `both`).")
    reconcile_interval_seconds: float = Field(
        300.0, ge=0, le=86400, description="`feed_mode=subscriptions`: seconds between two reconcile polls, which "
        "fetch what the EHR failed to deliver (e.g. while the bridge was down) from the last change seen; the "
        "first runs at start-up. 0 turns the reconcile and the catch-up at start-up off.")
    catchup_max_hours: float = Field(
        72.0, ge=1, le=2160, description="Furthest back a poll (catch-up at start-up, reconcile, polling) reaches; "
        "a feed with no cursor yet starts at the last change processed, at most this far back, or at the EHR's "
        "current time when nothing was processed yet (a fresh install).")
    poll_safety_lag_seconds: float = Field(
        120.0, ge=0, le=86400, description="How far behind the newest EHR timestamp seen each poll looks again, "
        "so changes the EHR commits late (with an older timestamp) are not missed.")
    poll_page_size: int = Field(
        100, ge=10, le=1000, description="`_count` of each polling search page (pages are stored one at a time, "
        "up to 50 per round; a longer catch-up continues at the next tick).")
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

    @field_validator("reconcile_interval_seconds")
    @classmethod
    def _reconcile_interval(cls, value: float) -> float:
        if 0 < value < 30:
            raise ValueError("give 0 to turn the reconcile off, or at least 30 seconds (each reconcile searches "
                             "the EHR once per feed)")
        return value

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
