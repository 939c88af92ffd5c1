"""Retention of the HL7 v2 feed's rows (:mod:`adapter.feeds.hl7_tables`), purged with the other
categories by :func:`adapter.maintenance.retention.run_retention`.

A processed (``done``) message lost its raw text when it was processed, as inbound WhatsApp content
does. The rest, in this order:

- **hl7_raw** (``retention_hl7_raw_days`` after receipt): a ``stale`` or ``dead`` message's encrypted
  raw text, kept that long for an operator to retry or examine it, is blanked; the row stays.
- **hl7_appointment** (each appointment's place in its history, which keeps a late, older message from
  overwriting a newer state): kept while the appointment may still change. It goes once its last
  applied message is older than ``retention_message_days`` and ended the appointment (S15, S17, S26:
  a later message about it would be a new booking), or is older than ``retention_hl7_open_days``
  (never ended by its feed, e.g. attended; long past any booking horizon). A message still waiting to
  be processed keeps it. A tap on an appointment whose row went is answered "not allowed".
- **hl7_message** (``retention_message_days`` after receipt and processing): ``done``, ``stale`` and
  ``dead`` rows go, except the latest message of an appointment whose row is still kept. The
  deduplication key (facility, MSH-10) goes with the row: by then no engine resends it.

No row here names a patient, so only a legal hold on everyone keeps them (``LegalHold`` without a
patient), like the FHIR inbox's rows.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists, not_, or_

from adapter.feeds.hl7_tables import Hl7Appointment, Hl7Message
from adapter.maintenance.purge import Category, Cutoffs, any_hold
from adapter.storage.db import table_of
from ehr.hl7.events import TERMINAL_TRIGGERS

FINISHED = ("done", "stale", "dead")  # pending is in flight
KEPT_RAW = ("stale", "dead")  # done lost its text when processed

_message = table_of(Hl7Message)
_appointment = table_of(Hl7Appointment)


def _raw_texts(c: Cutoffs) -> ColumnElement[bool]:
    return and_(_message.c.state.in_(KEPT_RAW), _message.c.raw_enc != "", _message.c.received_at < c.hl7_raw,
                not_(any_hold()))


def _appointments(c: Cutoffs) -> ColumnElement[bool]:
    settled = or_(and_(_appointment.c.trigger.in_(sorted(TERMINAL_TRIGGERS)), _appointment.c.message_time < c.messages),
                  _appointment.c.message_time < c.hl7_open)
    waiting = exists().where(_message.c.id == _appointment.c.message_id, _message.c.state == "pending")
    return and_(settled, not_(waiting), not_(any_hold()))


def _messages(c: Cutoffs) -> ColumnElement[bool]:
    latest = exists().where(_appointment.c.message_id == _message.c.id)
    return and_(_message.c.state.in_(FINISHED), _message.c.received_at < c.messages,
                or_(_message.c.processed_at.is_(None), _message.c.processed_at < c.messages),
                not_(latest), not_(any_hold()))


# Appointments before messages: a message kept as its appointment's latest can go in the same run.
HL7_CATEGORIES: tuple[Category, ...] = (
    Category("hl7_raw", _message, _raw_texts, lambda c: c.hl7_raw, clear=("raw_enc",), cleared=""),
    Category("hl7_appointment", _appointment, _appointments, lambda c: c.messages, key="resource_id"),
    Category("hl7_message", _message, _messages, lambda c: c.messages),
)
