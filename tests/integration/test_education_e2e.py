"""Health education end to end over real HTTP: the real sekmet-fhir server, the emulator and the service with
the shipped topics (mappings/education/topics.yaml).

Two synthetic patients are booked, so the service knows their numbers and they are opted in to care
messages. One subscribes from the menu and stops topics, the other never subscribes. Time passes by moving
the subscriber's education rows (and what was sent) a week back in the outbox, the database being the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from adapter.demo.stack import DemoStack, start_stack, wait_for
from adapter.education.planner import DEFAULT_CAP, RULE_PREFIX, WINDOW, fits
from adapter.education.tables import TopicConsent
from adapter.outbox.tables import OutboxMessage
from adapter.storage.db import make_engine, transaction, utcnow
from mappings.education_content import EducationContent
from tests.integration.test_conversation_e2e import booked, buttons, interactive_to, tap, texts_to, write
from tests.support.e2e import health, sent_to

pytestmark = pytest.mark.fhir
CONTENT = EducationContent.load()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = start_stack(tmp_path_factory.mktemp("education"), dispatch_backoff_seconds=0.2,
                        whatsapp_pair_interval_seconds=1.0, quiet_hours="")
    wait_for(lambda: health(stack)["subscriptions"], 30, "subscriptions")
    yield stack
    stack.stop()


def tips_to(stack: DemoStack, number: int) -> list[tuple[str, str, str]]:
    """(topic title, item text, stop payload) of each education_tip template the phone received."""
    found = []
    for message in sent_to(stack, number):
        if message["type"] == "template" and message["template"]["name"] == "education_tip":
            body = next(c for c in message["template"]["components"] if c["type"] == "body")
            found.append((body["parameters"][0]["text"], body["parameters"][1]["text"], buttons(message)[0]))
    return found


def item(topic_id: str, n: int, language: str = "en_US") -> str:
    topic = CONTENT.topic(topic_id)
    assert topic is not None
    return topic.items[n].texts[language]


def rows(stack: DemoStack, patient_ref: str) -> list[OutboxMessage]:
    with Session(make_engine(stack.settings.database_url)) as session:
        return list(session.exec(select(OutboxMessage).where(
            col(OutboxMessage.patient_ref) == patient_ref, col(OutboxMessage.rule_id).startswith(RULE_PREFIX))
            .order_by(col(OutboxMessage.id))))


def consents(stack: DemoStack, patient_ref: str) -> dict[str, str]:
    with Session(make_engine(stack.settings.database_url)) as session:
        return {row.topic: row.status for row in session.exec(
            select(TopicConsent).where(col(TopicConsent.patient_ref) == patient_ref))}


def subscribe(stack: DemoStack, number: int, topic_id: str) -> None:
    """Opens the menu's "Health tips" list and taps the topic's row, as the patient would."""
    before = len(interactive_to(stack, number))
    tap(stack, number, "menu:tips", kind="list_reply")
    lists = wait_for(lambda: [m for m in interactive_to(stack, number)[before:]
                              if m["interactive"]["type"] == "list"], 20, "the topics list")
    row = next(r for r in buttons(lists[0]) if r.endswith(f":{topic_id}"))
    assert row == f"tips:on:{topic_id}"
    tap(stack, number, row, kind="list_reply")


def time_passes(stack: DemoStack, patient_ref: str, by: timedelta) -> None:
    """The patient's education messages, sent and planned, all ``by`` earlier: as if ``by`` had passed."""
    with transaction(make_engine(stack.settings.database_url)) as session:
        for row in session.exec(select(OutboxMessage).where(
                col(OutboxMessage.patient_ref) == patient_ref, col(OutboxMessage.rule_id).startswith(RULE_PREFIX))):
            row.due_at -= by
            row.sent_at = row.sent_at - by if row.sent_at else None
            session.add(row)


def planned_times(stack: DemoStack, patient_ref: str) -> list[Any]:
    return [row.due_at for row in rows(stack, patient_ref) if row.state in ("queued", "sent")]


def within_cap(times: list[Any]) -> bool:
    return all(fits(times[:i] + times[i + 1:], t, DEFAULT_CAP) for i, t in enumerate(times))


def test_topics_go_only_to_their_subscribers_within_the_cap_and_stop_per_topic_and_for_all(
        stack: DemoStack) -> None:
    reader, reader_ref, _, _ = booked(stack)
    bystander, bystander_ref, _, _ = booked(stack)  # opted in to care messages; never subscribes

    # The menu's list subscribes to that topic only; the first item goes at once, with "Stop these tips".
    subscribe(stack, reader, "diabetes")
    wait_for(lambda: tips_to(stack, reader), 20, "the first diabetes tip")
    assert consents(stack, reader_ref) == {"diabetes": "opted_in"}
    wait_for(lambda: any(t.startswith("You are subscribed to Diabetes tips") for t in texts_to(stack, reader)), 20,
             "the subscription's confirmation")
    [(title, text, _)] = tips_to(stack, reader)
    assert (title, text) == ("Diabetes tips", item("diabetes", 0))

    # Two more topics: the cap (2 a week) lets the pregnancy tip through now, the active-living tip waits.
    subscribe(stack, reader, "pregnancy")
    wait_for(lambda: len(tips_to(stack, reader)) == 2, 20, "the first pregnancy tip")
    subscribe(stack, reader, "active-living")
    wait_for(lambda: consents(stack, reader_ref).get("active-living") == "opted_in", 20, "the third subscription")
    [waiting] = [r for r in rows(stack, reader_ref) if r.rule_id == "education.active-living" and r.state == "queued"
                 and r.resource_ref.endswith("active-living-1@1")]
    assert waiting.due_at >= utcnow() + WINDOW - timedelta(minutes=5)
    assert [t[1] for t in tips_to(stack, reader)] == [item("diabetes", 0), item("pregnancy", 0)]
    assert within_cap(planned_times(stack, reader_ref))

    # "STOP DIABETES": that topic stops and its queued items are suppressed; the others stay queued.
    write(stack, reader, "STOP DIABETES")
    wait_for(lambda: consents(stack, reader_ref)["diabetes"] == "opted_out", 20, "the topic stop")
    wait_for(lambda: any(t.startswith("You will get no more Diabetes tips") for t in texts_to(stack, reader)), 20,
             "the topic stop's confirmation")
    states = {(r.rule_id, r.state) for r in rows(stack, reader_ref)}
    assert ("education.diabetes", "queued") not in states and ("education.diabetes", "suppressed") in states
    assert ("education.pregnancy", "queued") in states and ("education.active-living", "queued") in states
    assert consents(stack, reader_ref) == {"diabetes": "opted_out", "pregnancy": "opted_in",
                                           "active-living": "opted_in"}

    # A week passes: the second pregnancy tip goes; no diabetes tip; the cap still holds.
    time_passes(stack, reader_ref, WINDOW)
    wait_for(lambda: len(tips_to(stack, reader)) >= 3, 20, "the second pregnancy tip")
    assert [t[1] for t in tips_to(stack, reader)][2] == item("pregnancy", 1)
    assert not any(text in {item("diabetes", 1), item("diabetes", 2)} for _, text, _ in tips_to(stack, reader))
    assert within_cap(planned_times(stack, reader_ref))

    # "Stop these tips" on the pregnancy tip stops pregnancy only.
    tap(stack, reader, tips_to(stack, reader)[2][2])
    wait_for(lambda: consents(stack, reader_ref)["pregnancy"] == "opted_out", 20, "the quick reply's stop")
    assert not [r for r in rows(stack, reader_ref) if r.rule_id == "education.pregnancy" and r.state == "queued"]
    assert [r for r in rows(stack, reader_ref) if r.rule_id == "education.active-living" and r.state == "queued"]

    # STOP stops everything: every topic, every queued tip; a topic's row does not override it.
    write(stack, reader, "STOP")
    wait_for(lambda: consents(stack, reader_ref)["active-living"] == "opted_out", 20, "the global stop")
    assert not [r for r in rows(stack, reader_ref) if r.state == "queued"]
    tap(stack, reader, "tips:on:pregnancy", kind="list_reply")
    time_passes(stack, reader_ref, 3 * WINDOW)
    wait_for(lambda: not [r for r in rows(stack, reader_ref) if r.state == "queued"], 5, "nothing queued")
    assert consents(stack, reader_ref)["pregnancy"] == "opted_out"

    # The care-opted-in patient who never subscribed got no tip at all.
    assert sent_to(stack, bystander) and not tips_to(stack, bystander)
    assert consents(stack, bystander_ref) == {} and not rows(stack, bystander_ref)
