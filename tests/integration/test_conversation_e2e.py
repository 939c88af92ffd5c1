"""Patients' taps and words, end to end over real HTTP: the real sekmet-fhir server (seeded with a
Schedule and free Slots, its simulator off), the emulator and the service.

Each test books its own synthetic patient's appointment; the service sends the confirmation; the
test taps its buttons through the emulator, as the patient would, and checks the EHR.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from adapter.conversation.tables import ActionRequest, InboundMessage
from adapter.demo.stack import DemoStack, start_stack, wait_for
from adapter.storage.db import make_engine
from mappings.conversation import Conversation
from tests.support.e2e import create, ehr_client, health, patient, read, sent_to
from tests.support.synthetic import SYNTHETIC_TAG

pytestmark = pytest.mark.fhir
_numbers = itertools.count(40)
CARD = "4111 1111 1111 1111"  # the standard test card number


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoStack]:
    stack = start_stack(tmp_path_factory.mktemp("chat"), dispatch_backoff_seconds=0.2,
                        whatsapp_pair_interval_seconds=1.0)
    wait_for(lambda: health(stack)["subscriptions"], 30, "subscriptions")
    yield stack
    stack.stop()


def schedule_with_slots(stack: DemoStack, count: int = 4) -> tuple[str, list[str]]:
    schedule = create(stack, {"resourceType": "Schedule", "meta": {"tag": [SYNTHETIC_TAG]}, "active": True,
                              "actor": [{"reference": "Location/synthetic-clinic", "display": "Synthetic clinic"}]})
    schedule_ref = f"Schedule/{schedule['id']}"
    start = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    slots = []
    for n in range(count):
        begin = start + timedelta(hours=n)
        slot = create(stack, {"resourceType": "Slot", "meta": {"tag": [SYNTHETIC_TAG]},
                              "schedule": {"reference": schedule_ref}, "status": "free",
                              "start": begin.isoformat(timespec="seconds"),
                              "end": (begin + timedelta(minutes=30)).isoformat(timespec="seconds")})
        slots.append(f"Slot/{slot['id']}")
    return schedule_ref, slots


def booked(stack: DemoStack, **patient_kw: Any) -> tuple[int, str, str, list[str]]:
    """A patient with a booked appointment on the first of four slots, awaiting their confirmation;
    returns (phone suffix, patient, appointment, slots) once the confirmation reached the emulator."""
    number = next(_numbers)
    patient_ref = patient(stack, number, **patient_kw)
    _, slots = schedule_with_slots(stack)
    with ehr_client(stack) as client:
        first = client.get(f"/{slots[0]}").json()
        client.put(f"/{slots[0]}", json=dict(first, status="busy")).raise_for_status()
    appointment = create(stack, {
        "resourceType": "Appointment", "meta": {"tag": [SYNTHETIC_TAG]}, "status": "booked",
        "description": "Synthetic test appointment", "start": first["start"], "end": first["end"],
        "slot": [{"reference": slots[0]}],
        "participant": [{"actor": {"reference": patient_ref}, "required": "required", "status": "needs-action"},
                        {"actor": {"reference": "Location/synthetic-clinic"}, "required": "required",
                         "status": "accepted"}]})
    wait_for(lambda: sent_to(stack, number), 20, "the confirmation")
    return number, patient_ref, f"Appointment/{appointment['id']}", slots


def buttons(message: dict[str, Any]) -> list[str]:
    """The quick-reply payloads of a template, or the reply/row ids of an interactive message."""
    if message["type"] == "template":
        return [c["parameters"][0]["payload"] for c in message["template"]["components"]
                if c.get("sub_type") == "quick_reply"]
    action = message["interactive"]["action"]
    if "buttons" in action:
        return [b["reply"]["id"] for b in action["buttons"]]
    return [row["id"] for section in action["sections"] for row in section["rows"]]


def tap(stack: DemoStack, number: int, payload: str, *, kind: str = "button") -> None:
    phone = f"+1 201-555-01{number:02d}"
    body: dict[str, Any] = {"from": phone}
    if kind == "button":
        body["button"] = {"payload": payload, "text": "tap"}
    elif kind == "button_reply":
        body["button_reply"] = {"id": payload, "title": "tap"}
    else:
        body["list_reply"] = {"id": payload, "title": "tap"}
    httpx.post(f"{stack.emulator.base_url}/_emulator/inbound", json=body, timeout=10).raise_for_status()


def write(stack: DemoStack, number: int, text: str) -> None:
    httpx.post(f"{stack.emulator.base_url}/_emulator/inbound", json={"from": f"+1 201-555-01{number:02d}",
                                                                     "text": text}, timeout=10).raise_for_status()


def texts_to(stack: DemoStack, number: int) -> list[str]:
    return [m["text"]["body"] for m in sent_to(stack, number) if m["type"] == "text"]


TEXTS = Conversation.load()


def said(stack: DemoStack, number: int, key: str, language: str = "en_US") -> bool:
    """Whether the patient got the reply ``key`` in ``language``: its text up to the first placeholder."""
    prefix = TEXTS.text(key, language, "en_US")[0].split("{")[0]
    return any(text.startswith(prefix) for text in texts_to(stack, number))


def interactive_to(stack: DemoStack, number: int) -> list[dict[str, Any]]:
    return [m for m in sent_to(stack, number) if m["type"] == "interactive"]


def history(stack: DemoStack, reference: str) -> int:
    with ehr_client(stack) as client:
        return int(client.get(f"/{reference}/_history").json().get("total", 0))


def patient_status(appointment: dict[str, Any], patient_ref: str) -> str:
    return next(p["status"] for p in appointment["participant"] if p["actor"]["reference"] == patient_ref)


def tasks_for(stack: DemoStack, patient_ref: str) -> list[dict[str, Any]]:
    with ehr_client(stack) as client:
        found = client.get("/Task", params={"patient": patient_ref}).json()
    tasks = [e["resource"] for e in found.get("entry", [])]
    if not tasks:  # servers differ on Task search parameters: fall back on reading all of them
        with ehr_client(stack) as client:
            found = client.get("/Task", params={"_count": "500"}).json()
        tasks = [e["resource"] for e in found.get("entry", [])
                 if (e["resource"].get("for") or {}).get("reference") == patient_ref]
    return tasks


def test_confirm_writes_accepted_once(stack: DemoStack) -> None:
    number, patient_ref, appointment_ref, _ = booked(stack)
    confirm, *_ = buttons(sent_to(stack, number)[0])
    versions = history(stack, appointment_ref)
    tap(stack, number, confirm)
    wait_for(lambda: patient_status(read(stack, appointment_ref), patient_ref) == "accepted", 20, "accepted")
    wait_for(lambda: said(stack, number, "confirmed"), 20, "the confirmation reply")
    assert history(stack, appointment_ref) == versions + 1
    tap(stack, number, confirm)  # a replayed tap: nothing more is written
    wait_for(lambda: _outcomes(stack).count("token_replayed") >= 1, 20, "the replay to be processed")
    assert history(stack, appointment_ref) == versions + 1


def test_replies_come_in_the_language_of_the_patients_notifications(stack: DemoStack) -> None:
    number, *_ = booked(stack, language="es-MX")
    assert sent_to(stack, number)[0]["template"]["language"]["code"] == "es"
    confirm, *_ = buttons(sent_to(stack, number)[0])
    tap(stack, number, confirm)
    wait_for(lambda: said(stack, number, "confirmed", "es"), 20, "the Spanish confirmation reply")
    assert said(stack, number, "welcome", "es") and not said(stack, number, "confirmed")


def test_cancel_asks_once_then_writes_cancelled_with_pat_crs_once(stack: DemoStack) -> None:
    number, _, appointment_ref, slots = booked(stack)
    _, _, cancel, _ = buttons(sent_to(stack, number)[0])
    tap(stack, number, cancel)
    [question] = wait_for(lambda: interactive_to(stack, number), 20, "are you sure?")
    yes, _no = buttons(question)
    assert read(stack, appointment_ref)["status"] == "booked"  # nothing written before the answer
    tap(stack, number, yes, kind="button_reply")
    appointment = wait_for(lambda: (a := read(stack, appointment_ref))["status"] == "cancelled" and a, 20,
                           "the cancellation")
    codes = [c["code"] for c in appointment["cancelationReason"]["coding"]]
    assert codes == ["pat-crs"]
    wait_for(lambda: read(stack, slots[0])["status"] == "free", 10, "the slot freed")
    versions = history(stack, appointment_ref)
    tap(stack, number, yes, kind="button_reply")  # a second tap
    wait_for(lambda: _outcomes(stack).count("token_replayed") >= 1, 20, "the replay")
    assert history(stack, appointment_ref) == versions


def test_reschedule_moves_the_booking_never_two_or_none(stack: DemoStack) -> None:
    number, patient_ref, appointment_ref, slots = booked(stack)
    _, reschedule, _, _ = buttons(sent_to(stack, number)[0])
    tap(stack, number, reschedule)
    [offer] = wait_for(lambda: interactive_to(stack, number), 20, "the free slots")
    rows = buttons(offer)
    assert 1 <= len(rows) <= 10
    tap(stack, number, rows[0], kind="list_reply")
    wait_for(lambda: read(stack, appointment_ref)["status"] == "cancelled", 20, "the old booking cancelled")
    with ehr_client(stack) as client:
        found = client.get("/Appointment", params={"patient": patient_ref}).json()
    appointments = [e["resource"] for e in found.get("entry", [])]
    live = [a for a in appointments if a["status"] == "booked"]
    assert len(live) == 1 and live[0]["slot"][0]["reference"] in slots[1:]
    assert read(stack, live[0]["slot"][0]["reference"])["status"] == "busy"
    assert read(stack, slots[0])["status"] == "free"


def test_a_stale_tap_changes_nothing_and_says_what_changed(stack: DemoStack) -> None:
    number, patient_ref, appointment_ref, _ = booked(stack)
    confirm, *_ = buttons(sent_to(stack, number)[0])
    moved = read(stack, appointment_ref)
    later = datetime.fromisoformat(moved["start"]) + timedelta(days=1)
    moved.update(start=later.isoformat(), end=(later + timedelta(minutes=30)).isoformat())
    with ehr_client(stack) as client:  # the clinic moved it after the message went out
        client.put(f"/{appointment_ref}", json=moved).raise_for_status()
    versions = history(stack, appointment_ref)
    tap(stack, number, confirm)
    wait_for(lambda: said(stack, number, "changed"), 20, "the 'changed' reply")
    assert history(stack, appointment_ref) == versions
    assert patient_status(read(stack, appointment_ref), patient_ref) == "needs-action"


def test_another_patients_token_changes_nothing(stack: DemoStack) -> None:
    number, _, appointment_ref, _ = booked(stack)
    other = next(_numbers)
    other_ref = patient(stack, other)
    soon = datetime.now(UTC) + timedelta(days=5)
    create(stack, {"resourceType": "Appointment", "meta": {"tag": [SYNTHETIC_TAG]}, "status": "booked",
                   "start": soon.isoformat(timespec="seconds"),
                   "end": (soon + timedelta(minutes=30)).isoformat(timespec="seconds"),
                   "participant": [{"actor": {"reference": other_ref}, "status": "accepted"}]})
    wait_for(lambda: sent_to(stack, other), 20, "the other patient's confirmation")  # the service knows them
    confirm, *_ = buttons(sent_to(stack, number)[0])
    versions = history(stack, appointment_ref)
    tap(stack, other, confirm)  # the first patient's button, sent from the other patient's phone
    wait_for(lambda: "token_refused" in _outcomes(stack), 20, "the refusal")
    assert history(stack, appointment_ref) == versions


def test_talk_to_staff_creates_a_task_and_silences_the_bot_until_it_is_done(stack: DemoStack) -> None:
    number, patient_ref, appointment_ref, _ = booked(stack)
    *_, staff = buttons(sent_to(stack, number)[0])
    tap(stack, number, staff)
    [task] = wait_for(lambda: tasks_for(stack, patient_ref), 20, "the front-desk Task")
    assert task["focus"]["reference"] == appointment_ref and task["status"] == "requested"
    # The tap is the patient's first message: the welcome goes too, and may reach the emulator after the answer.
    wait_for(lambda: said(stack, number, "staff_ack") and said(stack, number, "welcome"), 20,
             "the welcome and when to expect an answer")
    before = len(sent_to(stack, number))
    write(stack, number, "hello, is anyone there?")
    wait_for(lambda: "handoff_silent" in _outcomes(stack), 20, "the message to be processed")
    wait_for(lambda: _actions_done(stack, "handoff_check"), 20, "the Task check")
    assert len(sent_to(stack, number)) == before  # silent while staff have it
    with ehr_client(stack) as client:
        client.put(f"/Task/{task['id']}", json=dict(task, status="completed")).raise_for_status()
    menus = len(interactive_to(stack, number))
    write(stack, number, "thanks")
    wait_for(lambda: len(interactive_to(stack, number)) > menus, 20, "the bot to answer again, with its menu")


def test_an_emergency_word_gets_the_emergency_reply_and_an_urgent_task(stack: DemoStack) -> None:
    number, patient_ref, _, _ = booked(stack)
    write(stack, number, "I have chest pain")
    wait_for(lambda: said(stack, number, "emergency"), 20, "the emergency reply")
    tasks = wait_for(lambda: tasks_for(stack, patient_ref), 20, "the urgent Task")
    assert tasks[0]["priority"] in ("urgent", "asap", "stat")


def test_a_card_number_never_reaches_the_database_or_the_logs(stack: DemoStack,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    number, _, _, _ = booked(stack)
    caplog.set_level(logging.DEBUG)
    write(stack, number, f"my card is {CARD} thanks")
    wait_for(lambda: said(stack, number, "sensitive"), 20, "the reply")
    database = Path(stack.settings.database_url.removeprefix("sqlite:///"))
    digits = CARD.replace(" ", "")
    for path in database.parent.glob(database.name + "*"):  # the file, its WAL and shared memory
        raw = path.read_bytes()
        assert digits.encode() not in raw and CARD.encode() not in raw
    assert digits not in caplog.text and CARD not in caplog.text


def _outcomes(stack: DemoStack) -> list[str]:
    with Session(make_engine(stack.settings.database_url)) as session:
        return [o or "" for o in session.exec(select(InboundMessage.outcome))]


def _actions_done(stack: DemoStack, kind: str) -> bool:
    with Session(make_engine(stack.settings.database_url)) as session:
        rows = session.exec(select(ActionRequest).where(col(ActionRequest.kind) == kind,
                                                        col(ActionRequest.state) == "done")).all()
    return bool(rows)
