"""WhatsApp's rules applied when the outbox is claimed, on SQLite and PostgreSQL: pacing per
patient, opted-out patients, the 24-hour window, only approved templates, and the shared pause."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.conversation.chat import ChatReplies
from adapter.ops.alerts import open_alerts
from adapter.outbox.circuit_breaker import resume_sending, sending_paused
from adapter.outbox.results import SendOutcome
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage
from adapter.outbox.templates import record_states
from adapter.recipients.consent import OPTED_OUT, set_consent
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import transaction, utcnow
from mappings.conversation import Conversation as Texts
from tests.support.bodies import body
from tests.support.stores import outbox_store

TEMPLATE = {"name": "results_ready", "language": {"code": "en_US"}, "components": []}
FALLBACK = {"name": "service_update", "language": {"code": "en_US"}}


def number(n: int) -> str:
    return f"+1201555{n:04d}"  # synthetic +1 201-555-01xx range


def enqueue(outbox: OutboxStore, key: str, patient: int, *, message: dict | None = None,
            fallback: dict | None = None, purpose: str = "notify") -> None:
    with transaction(outbox.engine) as session:
        outbox.enqueue_message(session, natural_key=key, rule_id="rule", resource_ref=f"Appointment/{key}",
                               patient_ref=f"Patient/{patient}", recipient=number(100 + patient),
                               message=message or {"type": "template", "template": TEMPLATE}, due_at=utcnow(),
                               purpose=purpose, fallback=fallback)


def rows(engine: Engine) -> dict[str, OutboxMessage]:
    with Session(engine) as session:
        return {row.natural_key: row for row in session.exec(select(OutboxMessage))}


def set_last_inbound(engine: Engine, patient: int, ago: timedelta) -> None:
    with transaction(engine) as session:
        for contact in session.exec(select(WhatsAppContact).where(col(WhatsAppContact.patient_ref)
                                                                   == f"Patient/{patient}")):
            contact.last_inbound_at = utcnow() - ago
            session.add(contact)


def test_one_message_per_patient_per_pair_interval_and_others_are_not_held(engine: Engine) -> None:
    outbox = outbox_store(engine)
    enqueue(outbox, "a1", 1)
    enqueue(outbox, "a2", 1)
    enqueue(outbox, "b1", 2)
    claimed = outbox.claim_due(10)
    assert sorted(m.request["biz_opaque_callback_data"] for m in claimed) == sorted(
        f"outbox:{rows(engine)[k].id}" for k in ("a1", "b1"))
    held = rows(engine)["a2"]
    assert held.state == "queued" and held.attempts == 0  # no attempt: it did not fail, it waits
    assert held.due_at >= utcnow() + timedelta(seconds=5)
    assert outbox.claim_due(10) == []  # patient 1's second message waits for the interval
    answered = utcnow()
    outbox.record([SendOutcome(m.outbox_id, m.attempt_id, "sent", wamid=f"wamid.{m.outbox_id}",
                               answered_at=answered) for m in claimed])  # the interval runs from Meta's answer
    assert outbox.claim_due(10, now=answered + timedelta(seconds=5.5)) == []
    [later] = outbox.claim_due(10, now=answered + timedelta(seconds=6.5))
    assert later.outbox_id == held.id


def test_opted_out_patient_gets_nothing_but_the_consent_confirmation(engine: Engine) -> None:
    outbox = outbox_store(engine)
    enqueue(outbox, "reminder", 3)
    enqueue(outbox, "consent:x", 4, purpose="consent",
            message={"type": "text", "text": {"body": "You will not receive any more messages."}})
    set_last_inbound(engine, 4, timedelta(minutes=1))
    with transaction(engine) as session:
        set_consent(session, "Patient/3", OPTED_OUT, "chat")
        set_consent(session, "Patient/4", OPTED_OUT, "chat")
    [claimed] = outbox.claim_due(10)
    assert claimed.request["type"] == "text"
    assert rows(engine)["reminder"].state == "suppressed"


def test_free_form_after_the_24_hour_window_becomes_its_template(engine: Engine) -> None:
    outbox = outbox_store(engine)
    text = {"type": "text", "text": {"body": "A reply."}}
    enqueue(outbox, "inside", 5, message=text, fallback=FALLBACK)
    enqueue(outbox, "outside", 6, message=text, fallback=FALLBACK)
    enqueue(outbox, "no-fallback", 7, message=text)
    set_last_inbound(engine, 5, timedelta(hours=23, minutes=59))
    set_last_inbound(engine, 6, timedelta(hours=24, seconds=1))
    set_last_inbound(engine, 7, timedelta(hours=25))
    by_id = {m.outbox_id: m.request for m in outbox.claim_due(10)}
    now = rows(engine)
    assert by_id[now["inside"].id or 0]["type"] == "text"
    assert by_id[now["outside"].id or 0]["type"] == "template"
    assert by_id[now["outside"].id or 0]["template"]["name"] == "service_update"
    assert now["no-fallback"].state == "dead" and "window" in (now["no-fallback"].dead_reason or "")


def test_the_window_is_read_also_with_pacing_turned_off(engine: Engine) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox, "inside", 5, message={"type": "text", "text": {"body": "A reply."}}, fallback=FALLBACK)
    set_last_inbound(engine, 5, timedelta(minutes=5))
    [claimed] = outbox.claim_due(10)
    assert claimed.request["type"] == "text"  # the patient wrote 5 minutes ago: no template needed


def test_a_reply_never_overtakes_a_message_held_back_by_pacing(engine: Engine) -> None:
    """The welcome waits for the pair interval; the reply to the patient's tap, queued later, goes after it."""
    outbox = outbox_store(engine)
    replies = ChatReplies(outbox, Texts.load(), "en_US", "service_update", ["en_US"])
    enqueue(outbox, "confirmation", 9)
    [confirmation] = outbox.claim_due(10)
    answered = utcnow()
    outbox.record([SendOutcome(confirmation.outbox_id, confirmation.attempt_id, "sent", wamid="wamid.c",
                               answered_at=answered)])
    with transaction(engine) as session:
        replies.say(session, natural_key="welcome", patient_ref="Patient/9", recipient=number(109), key="welcome",
                    language="en_US")
    assert outbox.claim_due(10) == []  # held: the confirmation went out less than 6 s ago
    with transaction(engine) as session:
        replies.say(session, natural_key="staff-ack", patient_ref="Patient/9", recipient=number(109),
                    key="staff_ack", language="en_US", when="soon")
    held = rows(engine)
    assert held["staff-ack"].due_at >= held["welcome"].due_at  # queued behind it
    [first] = outbox.claim_due(10, now=answered + timedelta(seconds=30))
    assert first.outbox_id == held["welcome"].id


def test_only_approved_templates_go_and_a_paused_one_falls_back(engine: Engine) -> None:
    outbox = outbox_store(engine)
    enqueue(outbox, "t1", 8)
    record_states(engine, [("results_ready", "en_US", "PAUSED", "1", "low quality"),
                           ("service_update", "en_US", "APPROVED", "2", None)])
    [claimed] = outbox.claim_due(10)
    assert claimed.request["template"]["name"] == "service_update"
    kinds = {alert.kind for alert in open_alerts(engine)}
    assert {"template_not_approved", "template_fallback_used"} <= kinds
    # Neither approved: the message waits instead of failing.
    enqueue(outbox, "t2", 9)
    record_states(engine, [("service_update", "en_US", "DISABLED", "2", None)])
    assert outbox.claim_due(10) == []
    held = rows(engine)["t2"]
    assert held.state == "queued" and held.due_at > utcnow() + timedelta(minutes=4)


def test_an_account_level_error_pauses_sending_until_an_admin_resumes(engine: Engine) -> None:
    outbox = outbox_store(engine)
    enqueue(outbox, "p1", 10)
    [claimed] = outbox.claim_due(10)
    outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "retry", retry_at=utcnow(),
                               error_code=190, error_class="AccountBlockedError",
                               pause_reason="AccountBlockedError code=190")])
    flag = sending_paused(engine)
    assert flag is not None and "190" in flag.reason
    assert any(alert.kind == "sending_paused" for alert in open_alerts(engine))
    assert rows(engine)["p1"].state == "queued"  # not lost: it goes once sending resumes
    assert resume_sending(engine) is True and sending_paused(engine) is None
    assert resume_sending(engine) is False


def test_a_window_closed_answer_replans_the_message_as_its_template(engine: Engine) -> None:
    outbox = outbox_store(engine)
    enqueue(outbox, "w1", 11, message={"type": "text", "text": {"body": "A reply."}}, fallback=FALLBACK)
    set_last_inbound(engine, 11, timedelta(hours=1))
    [claimed] = outbox.claim_due(10)
    outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "replan", error_code=131047,
                               error_class="WindowClosedError")])
    row = rows(engine)["w1"]
    assert row.state == "queued" and body(row)["type"] == "template"
