"""Settings of delivery: how often the outbox is retried and ticked, and how several service instances
share the database and the WhatsApp number (each takes a lease on the event or message it works on)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class DeliverySettings(BaseModel):
    # --- delivery
    dispatch_max_attempts: int = Field(8, ge=1, le=50, description="Send attempts before a dead letter.")
    dispatch_backoff_seconds: float = Field(2.0, gt=0, description="First retry delay; doubles, with jitter.")
    dispatch_backoff_max_seconds: float = Field(900.0, gt=0, description="Longest retry delay.")
    dispatch_batch_size: int = Field(200, ge=1, le=5000, description="Outbox rows claimed per tick.")
    tick_seconds: float = Field(1.0, gt=0, le=60, description="How often the pipeline looks for due work.")
    # --- Instances
    instance_count: int = Field(
        1, ge=1, le=64, description="How many service instances share the database and the WhatsApp number (PostgreSQL "
        "only); each sends at most whatsapp_messages_per_second / instance_count.",
    )
    inbox_lease_seconds: float = Field(
        300.0, ge=1, le=3600, description="How long an instance holds a claimed EHR event; if it dies, another "
        "instance takes the event over after this time.",
    )
    send_lease_seconds: float = Field(
        120.0, ge=1, le=3600, description="How long an instance holds a message it is sending; if it dies mid-send, "
        "another instance retries after this time (a status already received prevents a second send).",
    )
