"""Retention purges: keep operational data no longer than needed (45 CFR 164.316 retention, HIPAA
"minimum necessary"). The audit trail is NOT purged here: its purge
(:mod:`adapter.audit.purge`) needs a maintenance database role, because the application role cannot
delete audit rows. The audit trail keeps the access history (who opened which link, what was
disclosed to whom), so the operational rows below can go.

Categories, each with its own age:

- **links** (``link_days`` after a link expired or was revoked): ``link_token`` rows, then their
  ``link_request`` access-log rows, plus access-log rows older than the period that name no live link
  (malformed or forged tokens, links already gone).
- **messages** (``message_days``): outbox rows in a final state (``sent``, ``dead``, ``suppressed``)
  last changed before the period lose ``payload``, ``fallback`` and ``recipient_enc``; the row itself
  (ids, state, delivery status) stays so reports still count. Their ``send_attempt`` rows go;
  ``wa_status`` rows applied before the period go; ``action_token`` rows expired before it; processed
  ``wa_inbound`` rows (their content was dropped when processed); ``notification_skip`` rows;
  ``action_request`` rows that are ``done`` or ``failed``; ``inbox_event`` rows ``done`` or ``dead``
  (references only; a repeat is still a no-op: ``resource_state`` keeps the version). Rows still in
  flight (queued, sending, pending, a pending fallback hook) stay whatever their age.
- **contacts on opt-out**: once a patient has been ``opted_out`` for :data:`OPT_OUT_GRACE` and has no
  message in flight (the STOP confirmation must still reach them), their ``wa_contact`` rows (the
  encrypted number AND its blind index) are deleted and their final outbox rows lose ``recipient_enc``.

Why the blind index goes too: STOP stays honoured without it. Consent is keyed by the patient's FHIR
reference (``consent`` row, kept), every send path checks it by that reference (when deciding and again
when claiming, :mod:`adapter.outbox.claims`), and a new message's number comes from the EHR, so nothing can
reach an opted-out patient whether or not we remember the number. The price: a later START typed from that
number is an unknown sender; re-enrolment goes through the hospital (``bridge consent``).
The blind index stored on old outbox rows (``recipient_key``) stays: a keyed HMAC, useless without the
index key, and those rows are payload-free after ``message_days``.

The HL7 v2 feed's rows (:mod:`adapter.maintenance.hl7_retention`): a stale or dead message's raw text
goes after ``hl7_raw_days``, an appointment's ordering row once it can no longer change, message rows
after ``message_days`` except an appointment's latest while its ordering row is kept.

Legal holds (``legal_hold``, active while ``released_at`` is NULL) also keep operational rows that
name a held patient (or everything, for a hold without a patient).

Batches and audit (:mod:`adapter.maintenance.purge`): each batch is one transaction with ONE audit entry
(``Kind.RETENTION``, ``Action.DELETE``) for the rows it removed; a big backlog writes one entry per batch,
all with the same ``run`` value. A second run writes nothing (idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, not_, or_, select
from sqlalchemy.engine import Engine

from adapter.conversation.tables import ActionRequest, InboundMessage
from adapter.feeds.tables import InboxEvent
from adapter.maintenance.hl7_retention import HL7_CATEGORIES
from adapter.maintenance.purge import Category, Cutoffs, any_hold, basic_iso, count, held, purge
from adapter.outbox.tables import ActionToken, NotificationSkip, OutboxMessage, SendAttempt, WhatsAppStatus
from adapter.recipients.consent import OPTED_OUT
from adapter.recipients.tables import ConsentRecord, WhatsAppContact
from adapter.settings import Settings
from adapter.storage.db import table_of, utcnow
from portal_links.tables import LinkRequest, LinkToken

FINAL_STATES = ("sent", "dead", "suppressed")  # adapter.outbox.store: queued and sending are in flight
PROCESSED_INBOUND = ("done", "failed")  # adapter.conversation.inbound: pending is in flight
FINISHED_REQUESTS = ("done", "failed")  # adapter.conversation.actions: pending is in flight
FINISHED_EVENTS = ("done", "dead")  # adapter.feeds.inbox: pending is in flight
# How long after STOP the number stays: the confirmation and a hand-off in progress may still need it.
OPT_OUT_GRACE = timedelta(days=1)

_outbox = table_of(OutboxMessage)
_link = table_of(LinkToken)
_link_request = table_of(LinkRequest)
_attempt = table_of(SendAttempt)
_status = table_of(WhatsAppStatus)
_action_token = table_of(ActionToken)
_inbound = table_of(InboundMessage)
_skip = table_of(NotificationSkip)
_request = table_of(ActionRequest)
_event = table_of(InboxEvent)
_contact = table_of(WhatsAppContact)
_consent = table_of(ConsentRecord)


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of operational data is kept (settings ``retention_*``)."""

    link_days: int = 30
    message_days: int = 90
    batch_size: int = 500
    hl7_raw_days: int = 14
    hl7_open_days: int = 400

    def __post_init__(self) -> None:
        if min(self.link_days, self.message_days, self.batch_size, self.hl7_raw_days, self.hl7_open_days) < 1:
            raise ValueError("retention periods and batch size must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(link_days=settings.retention_link_days, message_days=settings.retention_message_days,
                   batch_size=settings.retention_batch_size, hl7_raw_days=settings.retention_hl7_raw_days,
                   hl7_open_days=settings.retention_hl7_open_days)


@dataclass
class RetentionReport:
    """Rows removed (or, in a dry run, that would be) per category, in the order they ran."""

    counts: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _old_link(c: Cutoffs) -> ColumnElement[bool]:
    return and_(or_(_link.c.expires_at < c.links, _link.c.revoked_at < c.links), not_(held(_link.c.patient_ref)))


def _old_final_outbox(c: Cutoffs) -> ColumnElement[bool]:
    return and_(_outbox.c.state.in_(FINAL_STATES), _outbox.c.updated_at < c.messages,
                or_(_outbox.c.hook_state.is_(None), _outbox.c.hook_state != "pending"),
                not_(held(_outbox.c.patient_ref)))


def _link_requests(c: Cutoffs) -> ColumnElement[bool]:
    inner = _link.alias("l")
    of_old_link = _link_request.c.link_id.in_(select(_link.c.id).where(_old_link(c)))
    no_link = and_(_link_request.c.at < c.links, not_(any_hold()), or_(
        _link_request.c.link_id.is_(None), not_(exists().where(inner.c.id == _link_request.c.link_id))))
    return or_(of_old_link, no_link)


def _outbox_payloads(c: Cutoffs) -> ColumnElement[bool]:
    return and_(_old_final_outbox(c), or_(_outbox.c.payload.is_not(None), _outbox.c.fallback.is_not(None),
                                          _outbox.c.recipient_enc.is_not(None)))


def _send_attempts(c: Cutoffs) -> ColumnElement[bool]:
    return _attempt.c.outbox_id.in_(select(_outbox.c.id).where(_old_final_outbox(c)))


def _statuses(c: Cutoffs) -> ColumnElement[bool]:
    in_flight = exists().where(_outbox.c.wamid == _status.c.wamid, _outbox.c.state.not_in(FINAL_STATES))
    return and_(_status.c.applied_at.is_not(None), _status.c.received_at < c.messages, not_(in_flight),
                not_(any_hold()))


def _action_tokens(c: Cutoffs) -> ColumnElement[bool]:
    return and_(_action_token.c.expires_at < c.messages, not_(held(_action_token.c.patient_ref)))


def _inbound_rows(c: Cutoffs) -> ColumnElement[bool]:
    return and_(_inbound.c.state.in_(PROCESSED_INBOUND), _inbound.c.received_at < c.messages, not_(any_hold()))


def _inbox_events(c: Cutoffs) -> ColumnElement[bool]:
    return and_(_event.c.state.in_(FINISHED_EVENTS), _event.c.received_at < c.messages,
                or_(_event.c.processed_at.is_(None), _event.c.processed_at < c.messages), not_(any_hold()))


def _skips(c: Cutoffs) -> ColumnElement[bool]:
    return and_(_skip.c.created_at < c.messages, not_(held(_skip.c.patient_ref)))


def _requests(c: Cutoffs) -> ColumnElement[bool]:
    return and_(_request.c.state.in_(FINISHED_REQUESTS), _request.c.created_at < c.messages,
                not_(held(_request.c.patient_ref)))


def _opted_out_long_enough(patient_ref: Any, c: Cutoffs) -> ColumnElement[bool]:
    """Opted out for the grace period, nothing in flight for them, and no legal hold."""
    opted_out = exists().where(_consent.c.patient_ref == patient_ref, _consent.c.status == OPTED_OUT,
                               _consent.c.changed_at < c.opt_out)
    pending = _outbox.alias("pending")  # an alias: the outbox purge itself selects from ``outbox``
    in_flight = exists().where(pending.c.patient_ref == patient_ref, pending.c.state.not_in(FINAL_STATES))
    return and_(opted_out, not_(in_flight), not_(held(patient_ref)))


def _opted_out_contacts(c: Cutoffs) -> ColumnElement[bool]:
    return _opted_out_long_enough(_contact.c.patient_ref, c)


def _opted_out_recipients(c: Cutoffs) -> ColumnElement[bool]:
    return and_(_outbox.c.state.in_(FINAL_STATES), _outbox.c.recipient_enc.is_not(None),
                _opted_out_long_enough(_outbox.c.patient_ref, c))


# Order matters: access-log rows go before their links (they are found through them).
CATEGORIES: tuple[Category, ...] = (
    Category("link_request", _link_request, _link_requests, lambda c: c.links),
    Category("link_token", _link, _old_link, lambda c: c.links),
    Category("outbox_payload", _outbox, _outbox_payloads, lambda c: c.messages,
              clear=("payload", "fallback", "recipient_enc")),
    Category("send_attempt", _attempt, _send_attempts, lambda c: c.messages),
    Category("wa_status", _status, _statuses, lambda c: c.messages),
    Category("action_token", _action_token, _action_tokens, lambda c: c.messages),
    Category("wa_inbound", _inbound, _inbound_rows, lambda c: c.messages),
    Category("inbox_event", _event, _inbox_events, lambda c: c.messages),
    Category("notification_skip", _skip, _skips, lambda c: c.messages),
    Category("action_request", _request, _requests, lambda c: c.messages),
    Category("opt_out_contact", _contact, _opted_out_contacts, lambda c: c.opt_out),
    Category("opt_out_recipient", _outbox, _opted_out_recipients, lambda c: c.opt_out,
              clear=("recipient_enc",)),
    *HL7_CATEGORIES,
)
CATEGORY_NAMES = tuple(category.name for category in CATEGORIES)


def run_retention(engine: Engine, policy: RetentionPolicy, *, now: datetime | None = None, actor: str = "system",
                  dry_run: bool = False, progress: Callable[[int, int | None], None] | None = None) -> RetentionReport:
    """Purges every category in batches; returns the rows removed per category. ``dry_run`` counts what
    would go without changing anything (and audits nothing). ``progress`` gets (categories done,
    categories) after each category: a count, never a row's content."""
    now = now or utcnow()
    cut = Cutoffs(links=now - timedelta(days=policy.link_days), messages=now - timedelta(days=policy.message_days),
                  opt_out=now - OPT_OUT_GRACE, hl7_raw=now - timedelta(days=policy.hl7_raw_days),
                  hl7_open=now - timedelta(days=policy.hl7_open_days))
    report = RetentionReport(dry_run=dry_run)
    run_id = basic_iso(now)
    for done, category in enumerate(CATEGORIES, start=1):
        if dry_run:
            report.counts[category.name] = count(engine, category, cut)
        else:
            report.counts[category.name] = purge(engine, category, cut, policy.batch_size, actor, run_id)
        if progress is not None:
            progress(done, len(CATEGORIES))
    return report
