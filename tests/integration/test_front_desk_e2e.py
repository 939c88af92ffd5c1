"""The front desk on WhatsApp, end to end over real HTTP: the real sekmet-fhir server, the emulator and
the service with the shipped knowledge file (mappings/knowledge/front_desk.yaml).

A synthetic patient's appointment is booked so that the service knows the number (the questions share one
patient; routing and "my appointments" have their own), then the test writes or taps through the emulator
as the patient would, and checks what the phone received and what the EHR holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from adapter.conversation.answers import unanswered_counts
from adapter.conversation.tables import FrontDeskEvent
from adapter.demo.stack import DemoStack, start_stack, wait_for
from adapter.storage.db import make_engine
from mappings.knowledge import KnowledgeBase
from tests.integration.test_conversation_e2e import booked, buttons, interactive_to, said, tap, tasks_for, write
from tests.support.e2e import health, read, sent_to

pytestmark = pytest.mark.fhir
KNOWLEDGE = KnowledgeBase.load()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = start_stack(tmp_path_factory.mktemp("front-desk"), dispatch_backoff_seconds=0.2,
                        whatsapp_pair_interval_seconds=1.0)
    wait_for(lambda: health(stack)["subscriptions"], 30, "subscriptions")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def asker(stack: DemoStack) -> int:
    """The phone suffix of a patient who asks questions (the bot answers them: no hand-off)."""
    return patient_with_appointment(stack)[0]


def patient_with_appointment(stack: DemoStack) -> tuple[int, str, str]:
    """A patient the service has messaged (their appointment confirmation): (phone suffix, patient, appointment).
    This module has its own emulator, so the phone suffixes may repeat another module's."""
    number, patient_ref, appointment_ref, _ = booked(stack)
    return number, patient_ref, appointment_ref


def next_interactive(stack: DemoStack, number: int, kind: str, before: int) -> dict[str, Any]:
    """The first interactive message of ``kind`` ("list", "button") sent after the first ``before`` ones."""
    def found() -> list[dict[str, Any]]:
        return [m for m in interactive_to(stack, number)[before:] if m["interactive"]["type"] == kind]
    return dict(wait_for(found, 20, f"an interactive {kind}")[0])


def bodies(stack: DemoStack, number: int) -> list[str]:
    return [m["interactive"]["body"]["text"] for m in interactive_to(stack, number)]


def answer(entry_id: str, language: str) -> str:
    entry = KNOWLEDGE.entry(entry_id)
    assert entry is not None
    return entry.texts[language].answer


def events(stack: DemoStack, kind: str) -> list[FrontDeskEvent]:
    with Session(make_engine(stack.settings.database_url)) as session:
        return list(session.exec(select(FrontDeskEvent).where(col(FrontDeskEvent.kind) == kind)
                                 .order_by(col(FrontDeskEvent.id))))


def test_an_unmatched_message_gets_the_menu_list(stack: DemoStack, asker: int) -> None:
    before = len(interactive_to(stack, asker))
    write(stack, asker, "hello")
    menu = next_interactive(stack, asker, "list", before)
    rows = menu["interactive"]["action"]["sections"][0]["rows"]
    assert [r["id"] for r in rows[:3]] == ["menu:appointments", "menu:questions", "menu:departments"]
    assert [r["title"] for r in rows] == ["My appointments", "Common questions", "Departments", "Health tips",
                                         "Talk to staff", "Stop messages"]


def test_the_menu_word_opens_the_menu_in_the_patients_language(stack: DemoStack) -> None:
    number, _, _, _ = booked(stack, language="es-MX")
    write(stack, number, "Menú")  # "menu" is an English word too: a Spanish patient keeps Spanish
    rows = next_interactive(stack, number, "list", 0)["interactive"]["action"]["sections"][0]["rows"]
    assert [r["title"] for r in rows[:3]] == ["Mis citas", "Preguntas frecuentes", "Departamentos"]


@pytest.mark.parametrize(("question", "language"), [
    ("What time does the clinic open?", "en_US"), ("¿A qué hora abre la clínica?", "es"),
    ("诊所几点开门？", "zh_CN")])  # noqa: RUF001
def test_the_approved_answer_is_sent_verbatim_in_the_language_asked(stack: DemoStack, asker: int, question: str,
                                                                     language: str) -> None:
    before, served = len(interactive_to(stack, asker)), len(events(stack, "answered"))
    write(stack, asker, question)
    reply = next_interactive(stack, asker, "button", before)
    assert reply["interactive"]["body"]["text"] == answer("clinic-hours", language)
    assert events(stack, "answered")[served:][0].entry == "clinic-hours@3"
    yes, no = buttons(reply)
    feedback = len(events(stack, "helpful")) + len(events(stack, "unhelpful"))
    tap(stack, asker, yes, kind="button_reply")
    wait_for(lambda: said(stack, asker, "helpful_thanks", language), 20, "the thanks, in the answer's language")
    tap(stack, asker, no, kind="button_reply")  # the other button of the pair: spent, not counted
    wait_for(lambda: len(events(stack, "helpful")) > 0, 10, "the feedback")
    assert len(events(stack, "helpful")) + len(events(stack, "unhelpful")) == feedback + 1
    assert events(stack, "helpful")[-1].entry == "clinic-hours@3" and events(stack, "helpful")[-1].language == language


def test_an_expired_entry_is_not_served_and_the_question_is_counted(stack: DemoStack, asker: int) -> None:
    expired = KNOWLEDGE.entry("flu-clinic-2025")
    assert expired is not None and not expired.valid_on(datetime.now(UTC).date())
    since, before = datetime.now(UTC) - timedelta(minutes=1), len(interactive_to(stack, asker))
    write(stack, asker, "is there a flu vaccine clinic")
    menu = next_interactive(stack, asker, "list", before)
    assert menu["interactive"]["body"]["text"].startswith("I could not find an approved answer")
    assert answer("flu-clinic-2025", "en_US") not in str(sent_to(stack, asker))
    with Session(make_engine(stack.settings.database_url)) as session:
        counts = unanswered_counts(session, since)
    assert sum(n for key, n in counts.items() if key.startswith("en_US/")) >= 1


def test_a_weak_match_offers_three_and_a_row_gets_its_answer(stack: DemoStack, asker: int) -> None:
    before = len(interactive_to(stack, asker))
    write(stack, asker, "hours")
    rows = buttons(next_interactive(stack, asker, "list", before))
    assert len(rows) == 3 and all(r.startswith("answer:") for r in rows)
    tap(stack, asker, rows[0], kind="list_reply")
    wanted = answer(rows[0].removeprefix("answer:"), "en_US")
    wait_for(lambda: wanted in bodies(stack, asker), 20, "the chosen answer")


def test_a_department_outside_its_hours_says_when_and_queues_a_task_it_owns(stack: DemoStack) -> None:
    number, patient_ref, _ = patient_with_appointment(stack)
    now, soon = datetime.now(UTC), datetime.now(UTC) + timedelta(minutes=10)
    closed = next(d for d in KNOWLEDGE.departments if not d.hours.is_open(now) and not d.hours.is_open(soon))
    tap(stack, number, "menu:departments", kind="list_reply")
    assert f"department:{closed.id}" in buttons(next_interactive(stack, number, "list", 0))
    tap(stack, number, f"department:{closed.id}", kind="list_reply")
    wait_for(lambda: said(stack, number, "queued_closed"), 20, "when to expect an answer")
    [task] = wait_for(lambda: tasks_for(stack, patient_ref), 20, "the department's Task")
    assert task["owner"]["reference"] == closed.owner and task["status"] == "requested"
    assert task["description"].endswith(closed.id)


def test_my_appointments_shows_the_upcoming_one_with_its_buttons(stack: DemoStack) -> None:
    number, patient_ref, appointment_ref = patient_with_appointment(stack)
    tap(stack, number, "menu:appointments", kind="list_reply")
    shown = next_interactive(stack, number, "button", 0)
    assert shown["interactive"]["body"]["text"].startswith("Your appointment on")
    assert "Synthetic" not in shown["interactive"]["body"]["text"]  # the description never reaches the chat
    confirm, _, _ = buttons(shown)
    tap(stack, number, confirm, kind="button_reply")
    wait_for(lambda: any(p["status"] == "accepted" for p in read(stack, appointment_ref)["participant"]
                         if p["actor"]["reference"] == patient_ref), 20, "the confirmation written")
