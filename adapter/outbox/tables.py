"""The outbox's tables: one row per message (the PHI-free payload, the recipient encrypted), its
send attempts and delivery statuses, per-recipient pacing, template review states, skips with
their reasons, and the opaque tokens its buttons carry (stored as SHA-256 hashes).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, String, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from adapter.storage.claimable import claimable_index

LEASED = text("lease_until IS NOT NULL")  # only leased rows: the index stays as small as the work in hand
_CALLBACK = text("callback_data IS NOT NULL")
OUTBOX_CLAIMABLE = ("queued", "sending")  # sent, dead and suppressed are final: claims never read them


class NotificationSkip(SQLModel, table=True):
    """A notification a rule wanted but the service did not send, and why (operators list these)."""

    __tablename__ = "notification_skip"
    __table_args__ = (UniqueConstraint("rule_id", "resource_ref", "version_id", "reason"),)

    id: int | None = Field(default=None, primary_key=True)
    rule_id: str = Field(max_length=100)
    resource_ref: str = Field(max_length=200)
    version_id: str | None = Field(default=None, max_length=64)
    patient_ref: str | None = Field(default=None, max_length=200)
    reason: str = Field(max_length=64)
    created_at: datetime


class OutboxMessage(SQLModel, table=True):
    """One WhatsApp message to send: the natural key makes it effectively-once.

    ``state``: queued → sending → sent, or dead (a visible dead letter, re-drivable). A retry puts
    the row back to queued with a later ``due_at``. ``delivery_status`` follows Meta's statuses.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "state", "due_at"),
                      # The claim reads in-flight rows in due order (adapter.outbox.claims).
                      claimable_index("ix_outbox_claimable", "due_at", "id", states=OUTBOX_CLAIMABLE),
                      # A batch's patients' reminders (adapter.scheduling.batch_facts), a STOP's queued rows.
                      Index("ix_outbox_patient_rule", "patient_ref", "rule_id"),
                      # A dead instance's leases are released by owner (adapter.ops.liveness).
                      Index("ix_outbox_leased", "lease_owner", postgresql_where=LEASED, sqlite_where=LEASED))

    id: int | None = Field(default=None, primary_key=True)
    natural_key: str = Field(sa_column=Column(String(300), nullable=False, unique=True))
    rule_id: str = Field(max_length=100)
    resource_ref: str = Field(max_length=200)
    patient_ref: str = Field(max_length=200)
    recipient_enc: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The message body (JSON, PHI-free), sealed under the data key: it holds the clear button tokens and
    # portal links (adapter.outbox.encoding). What it is, readable without the key, is in body_type …
    payload: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    body_type: str | None = Field(default=None, max_length=16)  # template | text | interactive
    template_name: str | None = Field(default=None, max_length=512)
    template_language: str | None = Field(default=None, max_length=16)
    state: str = Field(default="queued", max_length=16)
    due_at: datetime
    attempts: int = 0
    lease_until: datetime | None = None
    lease_owner: str | None = Field(default=None, max_length=32)  # the boot id of the instance sending it
    wamid: str | None = Field(default=None, sa_column=Column(String(128), nullable=True, unique=True))
    delivery_status: str | None = Field(default=None, max_length=16)
    delivery_status_ts: int | None = None
    last_error_code: int | None = None
    last_error_class: str | None = Field(default=None, max_length=64)
    dead_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None = None
    # Blind index of the recipient's number: paces sends per patient and finds their 24-hour window.
    recipient_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32), nullable=True, index=True))
    # notify (a rule's notification) | reply (answers the patient) | consent (STOP/START confirmation:
    # the only kind still sent to a patient who opted out).
    purpose: str = Field(default="notify", max_length=16)
    # The template to send instead when a free-form message finds the 24-hour window closed (sealed).
    fallback: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Undeliverable dead letters may be handed to a configured fallback hook: pending | done | failed.
    hook_state: str | None = Field(default=None, max_length=16)
    # The start of the appointment a message speaks of as to come: past it, the claim suppresses the message
    # (adapter.outbox.appointment_gate). None for a message that holds whenever it goes.
    appointment_start: datetime | None = None


class SendAttempt(SQLModel, table=True):
    """Each call to the Cloud API, recorded before the call (there is no idempotency key)."""

    __tablename__ = "send_attempt"

    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = Field(foreign_key="outbox.id", index=True)
    attempt_no: int
    started_at: datetime
    finished_at: datetime | None = None
    outcome: str = Field(default="started", max_length=16)  # started | sent | retry | ambiguous | dead
    error_code: int | None = None
    error_class: str | None = Field(default=None, max_length=64)


class WhatsAppStatus(SQLModel, table=True):
    """A status webhook, stored once per (message id, status) so a repeat has no second effect,
    and applied to the outbox afterwards, in batches (:mod:`adapter.outbox.statuses`)."""

    __tablename__ = "wa_status"
    # The status claim reads only unapplied statuses, in id order, whatever the applied history
    # (adapter.outbox.statuses): a partial index of exactly those rows.
    __table_args__ = (Index("ix_wa_status_unapplied", "id", postgresql_where=text("applied_at IS NULL"),
                            sqlite_where=text("applied_at IS NULL")),
                      # A message taken over in doubt looks for a status naming it (adapter.outbox.claims).
                      Index("ix_wa_status_callback", "callback_data", postgresql_where=_CALLBACK,
                            sqlite_where=_CALLBACK))

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    wamid: str = Field(max_length=128, index=True)
    status: str = Field(max_length=16)
    meta_timestamp: int
    callback_data: str | None = Field(default=None, max_length=512)
    error_code: int | None = None
    error_title: str | None = Field(default=None, max_length=200)
    pricing: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Blind index of the recipient's business-scoped user id (BSUID), learnt from the status.
    user_id_index: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32), nullable=True))
    received_at: datetime
    applied_at: datetime | None = None  # when it was applied to the outbox (stored first, applied after)


class RecipientPace(SQLModel, table=True):
    """When the next message to one recipient may go (Meta's pair rate limit: about one per 6 s)."""

    __tablename__ = "recipient_pace"

    recipient_key: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    next_send_at: datetime


class TemplateState(SQLModel, table=True):
    """A template's review status in the WhatsApp Business Account, as last synced or reported."""

    __tablename__ = "template_state"

    name: str = Field(primary_key=True, max_length=512)
    language: str = Field(primary_key=True, max_length=16)
    status: str = Field(max_length=32)
    remote_id: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=200)
    updated_at: datetime


class ActionToken(SQLModel, table=True):
    """A quick-reply payload: resolves to patient, resource, its version at send time, and action."""

    __tablename__ = "action_token"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False, unique=True))
    action: str = Field(max_length=32)
    patient_ref: str = Field(max_length=200)
    resource_ref: str = Field(max_length=200)
    version_id: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=200)  # e.g. the Slot a "pick_slot" token books
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
