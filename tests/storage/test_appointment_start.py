"""Nothing about an appointment to come is sent once it has started, on SQLite and PostgreSQL: the decide
step records a skip instead of queueing (a back-entered or corrected booking), and the claim suppresses a
queued message that came due after the start (quiet hours, pacing, a pause held it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.outbox.tables import ActionToken, NotificationSkip, OutboxMessage, SendAttempt
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.scheduling.decision import STARTED, start_bound
from adapter.service import Service, build_service
from adapter.settings import load_settings
from adapter.storage.db import transaction, utcnow
from tests.support.synthetic import synthetic_appointment, synthetic_diagnostic_report, synthetic_patient

PATIENT_REF = "Patient/p1"
CONFIRMATION = "appointment-booked-confirmation"
# A site's own rules for notices after a change: a cancellation speaks of a visit to come, a no-show of one
# that was missed. service_update takes no parameter, so both render whatever the appointment holds.
NOTICE_RULES = """
rules:
  - id: appointment-cancelled-notice
    resource: Appointment
    when: {status_enters: [cancelled]}
    repeat: every_release
    template: {default: service_update}
    body: []
    buttons: []
  - id: appointment-noshow-notice
    resource: Appointment
    when: {status_enters: [noshow]}
    repeat: every_release
    template: {default: service_update}
    body: []
    buttons: []
"""


def service(engine: Engine, **overrides: Any) -> Service:
    built = build_service(load_settings(mode="demo", **overrides), engine=engine)
    with transaction(engine) as session:
        set_consent(session, PATIENT_REF, OPTED_IN, "admin")
    return built


def patient() -> dict[str, Any]:
    return synthetic_patient(number=42, patient_id="p1")


def appointment(start: datetime, number: int = 1, appointment_id: str = "a1", **changes: Any) -> dict[str, Any]:
    resource = synthetic_appointment(PATIENT_REF, appointment_id=appointment_id, start=start)
    return {**resource, **changes, "meta": {"versionId": str(number), "lastUpdated": "2026-11-25T10:00:00Z"}}


def rows(engine: Engine) -> dict[str, OutboxMessage]:
    with Session(engine) as session:
        return {row.natural_key: row for row in session.exec(select(OutboxMessage))}


def skips(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        found = session.exec(select(NotificationSkip).order_by(col(NotificationSkip.id)))
        return [(skip.rule_id, skip.reason) for skip in found]


def aware(moment: datetime | None) -> datetime | None:
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def test_a_booking_entered_after_its_start_queues_nothing_and_records_why(engine: Engine) -> None:
    decider = service(engine).decider
    back_entry = appointment(utcnow().replace(microsecond=0) - timedelta(days=83))
    decision = decider.record(back_entry, patient())
    assert decision.queued == [] and decision.skipped == [(CONFIRMATION, STARTED)]
    assert rows(engine) == {}  # no confirmation with Confirm / Reschedule / Cancel, and no reminders
    with Session(engine) as session:
        assert session.exec(select(ActionToken)).all() == []  # no button token minted for nothing
    assert decider.record(back_entry, patient()).duplicate  # the same version again: no second skip
    assert skips(engine) == [(CONFIRMATION, STARTED)]


def test_a_booking_to_come_carries_its_start_to_every_row(engine: Engine) -> None:
    decider = service(engine).decider
    start = (utcnow() + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    decision = decider.record(appointment(start), patient())
    assert len(decision.queued) == 3 and decision.skipped == []  # the confirmation and two reminders
    assert {aware(row.appointment_start) for row in rows(engine).values()} == {start}
    later = start + timedelta(days=1)
    decider.record(appointment(later, 2), None)  # a reschedule moves the reminders to the new start
    moved = [row for row in rows(engine).values() if row.state == "queued" and row.rule_id.endswith("-reminder")]
    assert len(moved) == 2 and {aware(row.appointment_start) for row in moved} == {later}


def test_a_cancellation_notice_of_a_past_visit_is_skipped_and_a_no_show_notice_is_not(engine: Engine,
                                                                                     tmp_path: Path) -> None:
    (tmp_path / "notices.yaml").write_text(NOTICE_RULES, encoding="utf-8")
    decider = service(engine, mappings_dir=str(tmp_path)).decider
    past, future = utcnow() - timedelta(hours=1), utcnow() + timedelta(days=2)
    decider.record(appointment(past, 1, "gone", status="cancelled"), patient())
    decider.record(appointment(past, 1, "missed", status="noshow"), patient())
    decider.record(appointment(future, 1, "later", status="cancelled"), patient())
    assert skips(engine) == [("appointment-cancelled-notice", STARTED)]
    queued = {row.resource_ref: row for row in rows(engine).values()}
    assert set(queued) == {"Appointment/missed", "Appointment/later"}
    assert queued["Appointment/missed"].appointment_start is None  # true whenever it goes
    assert aware(queued["Appointment/later"].appointment_start) == datetime.fromisoformat(
        appointment(future)["start"])


def test_a_message_held_past_the_start_is_suppressed_at_claim_and_others_go(engine: Engine) -> None:
    built = service(engine)
    start = (utcnow() + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    built.decider.record(appointment(start), patient())
    report = synthetic_diagnostic_report(PATIENT_REF, status="final", report_id="r1")
    built.decider.record({**report, "meta": {"versionId": "1"}}, patient())
    after = start + timedelta(minutes=1)  # the service was paused, or down, until after the start
    [claimed] = built.outbox.claim_due(10, now=after)
    assert claimed.request["template"]["name"] == "results_ready"  # not about an appointment start
    held = [row for row in rows(engine).values() if row.resource_ref == "Appointment/a1"]
    assert len(held) == 3 and {(row.state, row.dead_reason) for row in held} == {("suppressed", STARTED)}
    with Session(engine) as session:  # an attempt for the report only: the rest never left the building
        assert [a.outbox_id for a in session.exec(select(SendAttempt))] == [claimed.outbox_id]


def test_before_the_start_the_confirmation_is_claimed(engine: Engine) -> None:
    built = service(engine)
    start = (utcnow() + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    built.decider.record(appointment(start), patient())
    claimed = built.outbox.claim_due(10)  # now: the reminders are not due yet
    assert [c.request["template"]["name"] for c in claimed] == ["appointment_confirmation"]


@pytest.mark.parametrize(("status", "bound"), [
    ("booked", True), ("proposed", True), ("pending", True), ("waitlist", True), ("cancelled", True),
    ("entered-in-error", True), ("arrived", False), ("checked-in", False), ("fulfilled", False),
    ("noshow", False)])
def test_which_appointment_messages_are_bound_to_the_start(status: str, bound: bool) -> None:
    start = datetime(2026, 12, 1, 15, 30, tzinfo=UTC)
    resource = appointment(start, status=status)
    assert start_bound(resource) == (start if bound else None)
    assert start_bound({**resource, "start": "2026-12-01"}) is None  # a date only: no instant to compare
    assert start_bound(synthetic_diagnostic_report(PATIENT_REF)) is None
