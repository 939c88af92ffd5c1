"""Health tips in the chat, on SQLite and PostgreSQL (adapter/conversation/tips.py, adapter/education/*):
a topic's list row subscribes to that topic only and queues its series within the weekly cap; "STOP
<topic>" in English, Spanish and Chinese stops that topic only; a sentence is not a topic stop; STOP stops
every topic; a topic's row does not override STOP; the quiet hours hold an item at claim time."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.conversation.chat import ChatReplies
from adapter.conversation.inbound import InboundProcessor
from adapter.education.desk import Education
from adapter.education.gate import EducationGate
from adapter.education.planner import WINDOW, EducationPolicy
from adapter.education.tables import TopicConsent
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.storage.db import transaction, utcnow
from mappings.conversation import Conversation
from mappings.quiet_hours import QuietHours
from tests.storage.test_inbound import deliver, inbound, text_from, wa_id
from tests.support.stores import outbox_store

_ids = itertools.count(1)


def setup(engine: Engine, cap: int = 2) -> InboundProcessor:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    replies = ChatReplies(outbox, Conversation.load(), "en_US", "service_update", ["en_US", "es"],
                          education=Education.load(policy=EducationPolicy(weekly_cap=cap)))
    return InboundProcessor(engine, replies)


def known(engine: Engine, processor: InboundProcessor, patient: str, n: int) -> None:
    """A patient opted in to care messages whose number the service knows."""
    with transaction(engine) as session:
        set_consent(session, patient, OPTED_IN, "admin")
        processor.contacts.remember(session, patient, "+" + wa_id(n))


def row_tap(n: int, row_id: str) -> dict[str, Any]:
    return inbound({"from": wa_id(n), "id": f"wamid.tips{next(_ids)}", "timestamp": str(int(utcnow().timestamp())),
                    "type": "interactive", "interactive": {"type": "list_reply",
                                                           "list_reply": {"id": row_id, "title": "row"}}},
                   {"profile": {"name": "Synthetic"}, "wa_id": wa_id(n)})


def topics_of(engine: Engine, patient: str) -> dict[str, str]:
    with Session(engine) as session:
        return {r.topic: r.status for r in session.exec(select(TopicConsent).where(
            col(TopicConsent.patient_ref) == patient))}


def tips(engine: Engine, patient: str) -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxMessage).where(
            col(OutboxMessage.patient_ref) == patient, col(OutboxMessage.rule_id).startswith("education."))
            .order_by(col(OutboxMessage.due_at))))


def test_a_row_subscribes_to_one_topic_and_queues_its_series_within_the_cap(engine: Engine) -> None:
    processor = setup(engine, cap=1)
    known(engine, processor, "Patient/e1", 201)
    known(engine, processor, "Patient/e2", 202)  # care messages only
    deliver(engine, processor, row_tap(201, "tips:on:diabetes"))
    deliver(engine, processor, row_tap(201, "tips:on:diabetes"))  # again: nothing new is queued
    deliver(engine, processor, row_tap(201, "tips:on:pregnancy"))
    assert topics_of(engine, "Patient/e1") == {"diabetes": OPTED_IN, "pregnancy": OPTED_IN}
    rows = tips(engine, "Patient/e1")
    assert len(rows) == 6 and all(r.template_name == "education_tip" and r.purpose == "education" for r in rows)
    gaps = [b.due_at - a.due_at for a, b in itertools.pairwise(rows)]
    assert all(gap >= WINDOW for gap in gaps)  # one a week, all topics together
    assert rows[0].rule_id == "education.diabetes" and rows[0].due_at <= utcnow() + timedelta(seconds=5)
    assert topics_of(engine, "Patient/e2") == {} and tips(engine, "Patient/e2") == []


def audited(engine: Engine, patient: str) -> list[tuple[str | None, str | None]]:
    """(topic, topic consent) of the patient's inbound audit entries that changed a topic."""
    with Session(engine) as session:
        details = [json.loads(e.detail or "{}") for e in session.exec(select(AuditEvent).where(
            col(AuditEvent.kind) == "inbound", col(AuditEvent.patient_ref) == patient).order_by(col(AuditEvent.id)))]
    return [(d.get("topic"), d.get("topic_consent")) for d in details if d.get("topic_consent")]


def test_stop_and_a_topic_in_three_languages_stops_that_topic_only(engine: Engine) -> None:
    processor = setup(engine)
    for patient, n in (("Patient/e3", 203), ("Patient/e4", 204), ("Patient/e5", 205)):
        known(engine, processor, patient, n)
        deliver(engine, processor, row_tap(n, "tips:on:diabetes"))
        deliver(engine, processor, row_tap(n, "tips:on:active-living"))
    deliver(engine, processor, text_from(203, "STOP DIABETES"))
    deliver(engine, processor, text_from(204, "Alto diabetes"))
    deliver(engine, processor, text_from(205, "退订糖尿病"))
    for patient in ("Patient/e3", "Patient/e4", "Patient/e5"):
        assert topics_of(engine, patient) == {"diabetes": "opted_out", "active-living": OPTED_IN}
        states = {(r.rule_id, r.state) for r in tips(engine, patient)}
        assert ("education.diabetes", "queued") not in states and ("education.active-living", "queued") in states
        assert audited(engine, patient) == [("diabetes", OPTED_IN), ("active-living", OPTED_IN),
                                            ("diabetes", "opted_out")]


def test_a_sentence_is_not_a_topic_stop_and_stop_stops_every_topic(engine: Engine) -> None:
    processor = setup(engine)
    known(engine, processor, "Patient/e6", 206)
    deliver(engine, processor, row_tap(206, "tips:on:pregnancy"))
    deliver(engine, processor, row_tap(206, "tips:on:diabetes"))
    deliver(engine, processor, text_from(206, "please do not stop diabetes"))
    assert topics_of(engine, "Patient/e6") == {"pregnancy": OPTED_IN, "diabetes": OPTED_IN}
    deliver(engine, processor, text_from(206, "STOP"))
    assert topics_of(engine, "Patient/e6") == {"pregnancy": "opted_out", "diabetes": "opted_out"}
    assert all(r.state == "suppressed" for r in tips(engine, "Patient/e6") if r.state != "sent")
    deliver(engine, processor, text_from(206, "START"))  # care messages again; the topics stay stopped
    assert topics_of(engine, "Patient/e6") == {"pregnancy": "opted_out", "diabetes": "opted_out"}


def test_a_topic_row_does_not_override_stop(engine: Engine) -> None:
    processor = setup(engine)
    known(engine, processor, "Patient/e7", 207)
    deliver(engine, processor, text_from(207, "STOP"))
    deliver(engine, processor, row_tap(207, "tips:on:diabetes"))
    assert topics_of(engine, "Patient/e7") == {} and tips(engine, "Patient/e7") == []


def test_an_item_that_comes_due_in_the_quiet_hours_waits_for_their_end() -> None:
    zone = ZoneInfo("America/New_York")
    gate = EducationGate(lambda key, now: "inner", EducationPolicy(2, zone, QuietHours(time(21, 0), time(8, 0))))
    night = datetime(2026, 12, 7, 23, 0, tzinfo=zone).astimezone(UTC)
    assert gate("education:diabetes:diabetes-1@1:x:Patient/1", night) == datetime(2026, 12, 8, 8, 0, tzinfo=zone)
    assert gate("education:diabetes:diabetes-1@1:x:Patient/1", night + timedelta(hours=10)) is None
    assert gate("reminder:Appointment/1:x:60m", night) == "inner"
