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
        "another instance retries after this time (a status already received prevents a second send). An instance "
        "seen dead by its heartbeat has its leases released sooner (instance_dead_after_seconds).",
    )
    instance_name: str = Field(
        "", max_length=100, pattern=r"^[A-Za-z0-9._:-]*$", description="This instance's stable name (letters, digits, "
        ". _ : -); empty: host name and http_port. A restart under the same name takes its earlier boot's leases "
        "back at once.",
    )
    heartbeat_seconds: float = Field(
        2.0, ge=0.5, le=60, description="How often each instance records that it is alive.",
    )
    instance_dead_after_seconds: float = Field(
        10.0, ge=2, le=600, description="An instance whose heartbeat is older than this is dead: the others release "
        "its leases (EHR events, sends, Backport feed checks) and take its work over.",
    )
    in_doubt_grace_seconds: float = Field(
        5.0, ge=0, le=600, description="A message taken over from a dead instance that may have sent it waits this "
        "long for WhatsApp's status naming it; with one, it is not sent again.",
    )
