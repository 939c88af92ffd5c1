"""The service's tables (SQLModel). Every schema change is an Alembic migration in
``adapter/migrations``; this module is the model the migrations are checked against.

No table holds a FHIR payload, a patient name or a phone number in clear text: the inbox keeps
references only, the outbox keeps the PHI-free template object and the recipient encrypted
(:mod:`adapter.crypto`), token tables keep SHA-256 hashes of tokens.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class InboxEvent(SQLModel, table=True):
    """A change the EHR reported, stored before the EHR gets its 200 (at-least-once in)."""

    __tablename__ = "inbox_event"
    __table_args__ = (Index("ix_inbox_due", "state", "next_attempt_at"),)

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


class ConsentRecord(SQLModel, table=True):
    """The local opt-in registry, keyed by the patient's FHIR reference."""

    __tablename__ = "consent"

    patient_ref: str = Field(primary_key=True, max_length=200)
    status: str = Field(max_length=16)  # opted_in | opted_out
    source: str = Field(max_length=32)  # admin | chat | import
    changed_at: datetime


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
    __table_args__ = (Index("ix_outbox_due", "state", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    natural_key: str = Field(sa_column=Column(String(300), nullable=False, unique=True))
    rule_id: str = Field(max_length=100)
    resource_ref: str = Field(max_length=200)
    patient_ref: str = Field(max_length=200)
    recipient_enc: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    payload: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON, PHI-free
    state: str = Field(default="queued", max_length=16)
    due_at: datetime
    attempts: int = 0
    lease_until: datetime | None = None
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
    # The template to send instead when a free-form message finds the 24-hour window closed.
    fallback: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Undeliverable dead letters may be handed to a configured fallback hook: pending | done | failed.
    hook_state: str | None = Field(default=None, max_length=16)


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


class LinkToken(SQLModel, table=True):
    """State a portal-link signature cannot carry; found by the token's SHA-256, never the token."""

    __tablename__ = "link_token"
    # Revocation by patient or by creation window is one UPDATE each: indexed, not a table scan.
    __table_args__ = (Index("ix_link_token_patient_ref", "patient_ref"),
                      Index("ix_link_token_created_at", "created_at"))

    id: int | None = Field(default=None, primary_key=True)
    token_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False, unique=True))
    purpose: str = Field(max_length=32)
    target: str = Field(max_length=32)
    patient_ref: str = Field(max_length=200)
    resource_ref: str = Field(max_length=200)
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    max_opens: int = 5
    opens: int = 0
    # The outbox natural key of the message the link was sent in (revoke "all links of a message").
    message_key: str | None = Field(default=None, max_length=300, index=True)


class LinkRequest(SQLModel, table=True):
    """One request to a portal link (GET, HEAD or POST): the link's access log.

    ``link_id`` is NULL when the token named no link (malformed, forged, unknown); the token and
    its hash are never stored here. ``ua_class`` labels the client for reading only: no decision
    depends on it.
    """

    __tablename__ = "link_request"
    __table_args__ = (Index("ix_link_request_client_at", "client", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    link_id: int | None = Field(default=None, index=True)
    outcome: str = Field(max_length=16)  # preview|opened|expired|revoked|exhausted|unknown|malformed|rate_limited
    client: str | None = Field(default=None, max_length=64)
    ua_class: str = Field(max_length=16)  # whatsapp|facebook|headless|browser|bot|other
    method: str = Field(max_length=8)
    at: datetime = Field(index=True)


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


class WhatsAppStatus(SQLModel, table=True):
    """A status webhook, stored once per (message id, status) so a repeat has no second effect,
    and applied to the outbox afterwards, in batches (:mod:`adapter.statuses`)."""

    __tablename__ = "wa_status"
    __table_args__ = (Index("ix_wa_status_pending", "applied_at", "id"),)

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


class InboundMessage(SQLModel, table=True):
    """An inbound WhatsApp message, stored once by its id before the 200 and processed afterwards
    (:mod:`adapter.inbound`). Its content is encrypted and dropped once processed."""

    __tablename__ = "wa_inbound"
    __table_args__ = (Index("ix_wa_inbound_pending", "state", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    wamid: str = Field(sa_column=Column(String(128), nullable=False, unique=True))
    message_type: str = Field(max_length=32)
    meta_timestamp: int
    received_at: datetime
    state: str = Field(default="pending", max_length=16)  # pending | done
    content_enc: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    outcome: str | None = Field(default=None, max_length=32)
    processed_at: datetime | None = None


class WhatsAppContact(SQLModel, table=True):
    """A patient's WhatsApp number (encrypted, found by its blind index), the business-scoped user
    id Meta reported for it, and when that user last wrote (the 24-hour customer service window).
    One number may serve several patients (a parent's phone), so STOP applies to all of them."""

    __tablename__ = "wa_contact"
    __table_args__ = (UniqueConstraint("patient_ref", "phone_index"),)

    id: int | None = Field(default=None, primary_key=True)
    patient_ref: str = Field(max_length=200, index=True)
    phone_index: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False, index=True))
    phone_enc: str = Field(sa_column=Column(Text, nullable=False))
    user_id_index: bytes | None = Field(default=None, sa_column=Column(LargeBinary(32), nullable=True, index=True))
    last_inbound_at: datetime | None = None
    updated_at: datetime


class RecipientPace(SQLModel, table=True):
    """When the next message to one recipient may go (Meta's pair rate limit: about one per 6 s)."""

    __tablename__ = "recipient_pace"

    recipient_key: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    next_send_at: datetime


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


class TemplateState(SQLModel, table=True):
    """A template's review status in the WhatsApp Business Account, as last synced or reported."""

    __tablename__ = "template_state"

    name: str = Field(primary_key=True, max_length=512)
    language: str = Field(primary_key=True, max_length=16)
    status: str = Field(max_length=32)
    remote_id: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=200)
    updated_at: datetime


class Conversation(SQLModel, table=True):
    """The chat with one WhatsApp number: welcomed yet, and whether staff have taken it over (the bot
    stays silent, except for emergencies and STOP, until the hand-off Task is done or times out)."""

    __tablename__ = "conversation"

    phone_index: bytes = Field(sa_column=Column(LargeBinary(32), primary_key=True))
    welcomed_at: datetime | None = None
    handoff_task: str | None = Field(default=None, max_length=200)
    handoff_until: datetime | None = None
    updated_at: datetime


class ActionRequest(SQLModel, table=True):
    """Work a patient's message asked for that needs the EHR (confirm, cancel, reschedule, hand-off):
    stored in the inbound step's transaction, carried out by the pipeline, retried if the EHR is down."""

    __tablename__ = "action_request"
    __table_args__ = (Index("ix_action_request_due", "state", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(sa_column=Column(String(200), nullable=False, unique=True))
    kind: str = Field(max_length=32)
    patient_ref: str = Field(max_length=200)
    resource_ref: str | None = Field(default=None, max_length=200)
    version_id: str | None = Field(default=None, max_length=64)
    slot_ref: str | None = Field(default=None, max_length=200)
    phone_index: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    language: str = Field(max_length=16)
    urgent: bool = False
    state: str = Field(default="pending", max_length=16)  # pending | done | failed
    attempts: int = 0
    next_attempt_at: datetime
    outcome: str | None = Field(default=None, max_length=64)
    created_at: datetime


# The audit tables live with the audit trail; importing them here registers them with the metadata.
from adapter import feed_models as _feed_models  # noqa: E402,F401
from adapter import poll_models as _poll_models  # noqa: E402,F401
from adapter import reminder_models as _reminder_models  # noqa: E402,F401
from adapter.audit import models as _audit_models  # noqa: E402,F401
