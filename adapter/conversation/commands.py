"""What a patient can ask for in words (or from the menu): an emergency, staff, STOP and START.

- an emergency word gets the emergency reply at once and an urgent hand-off, whatever else holds;
- "talk to staff" hands the conversation over (a hand-off request for the EHR writer, which opens a
  Task) and says when staff will answer: later today, or the next working day
  (:class:`~adapter.conversation.chat.ChatPolicy`);
- STOP (and its equivalents, :mod:`mappings.conversation`) or a "Stop reminders" quick reply opts
  the patients out (and out of every health-education topic), suppresses what is queued for them and
  confirms once; START opts back in (to care messages: topics are subscribed again from the menu).
"""

from __future__ import annotations

import logging

from sqlmodel import Session

from adapter.conversation.chat import start_handoff
from adapter.conversation.routing import when_text
from adapter.conversation.turn import Turn
from adapter.education.consent import stop_all
from adapter.outbox.store import OutboxStore
from adapter.recipients.consent import OPTED_IN, OPTED_OUT, set_consent
from adapter.recipients.tables import ConsentRecord
from adapter.storage.db import utcnow
from mappings.knowledge import Hours

log = logging.getLogger(__name__)


def emergency(turn: Turn) -> str:
    turn.replies.say(turn.session, natural_key=turn.next_reply_key(), patient_ref=turn.patients[0],
                     recipient=turn.recipient, key="emergency", language=turn.language, purpose="urgent")
    turn.request("handoff", turn.patients[0], urgent=True, reason="emergency-word")
    start_handoff(turn.session, turn.conversation, None, turn.policy.handoff_timeout,
                  patient_ref=turn.patients[0], agent="patient", reason="emergency-word", urgent=True)
    return "emergency"


def handoff(turn: Turn, patient_ref: str, focus_ref: str | None) -> str:
    turn.request("handoff", patient_ref, resource_ref=focus_ref, reason="patient-asked-for-staff")
    start_handoff(turn.session, turn.conversation, None, turn.policy.handoff_timeout,
                  patient_ref=patient_ref, agent="patient", reason="patient-asked-for-staff")
    turn.say("staff_ack", when=_staff_when(turn))
    return "staff"


def _staff_when(turn: Turn) -> str:
    """When staff will answer, in words: later today, or the next working day (the front desk's hours)."""
    policy = turn.policy
    return when_text(turn.texts, turn.language, turn.default_language,
                     Hours(policy.zone, policy.opens, policy.closes, policy.workdays), utcnow())


def stop(turn: Turn, patients: list[str]) -> str:
    changed = [p for p in patients if _consent_of(turn.session, p) != OPTED_OUT]
    for patient in changed:
        set_consent(turn.session, patient, OPTED_OUT, "chat")
    stop_all(turn.session, patients)  # every health-education topic too; START does not resubscribe them
    suppressed = OutboxStore.suppress_queued(turn.session, patients, "patient opted out (STOP)")
    turn.suppressed += suppressed
    log.info("STOP: %d patient(s) opted out, %d queued message(s) suppressed", len(changed), suppressed)
    if changed:  # confirm once: a second STOP changes nothing and says nothing
        _consent_reply(turn, changed[0], "stopped")
        return "opted_out"
    return "already_opted_out"


def start(turn: Turn) -> str:
    changed = [p for p in turn.patients if _consent_of(turn.session, p) != OPTED_IN]
    for patient in changed:
        set_consent(turn.session, patient, OPTED_IN, "chat")
    if changed:
        _consent_reply(turn, changed[0], "started")
        return "opted_in"
    return "already_opted_in"


def _consent_reply(turn: Turn, patient_ref: str, key: str) -> None:
    turn.replies.say(turn.session, natural_key=f"consent:{turn.row.wamid}", patient_ref=patient_ref,
                     recipient=turn.recipient, key=key, language=turn.language, purpose="consent")


def _consent_of(session: Session, patient_ref: str) -> str | None:
    record = session.get(ConsentRecord, patient_ref)
    return record.status if record else None
