"""The reminder plan on SQLite and PostgreSQL, fed Appointment versions directly (the EHR side is in
tests/integration/test_reminders_e2e.py): due times, quiet hours, cancel, reschedule, confirm, one
message per day, the daily cap, and the quiet-hours arithmetic itself."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.outbox.tables import NotificationSkip, OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.scheduling.decide import Decider, attach
from adapter.scheduling.reminders import ReminderPolicy, cancel_pending, due_time, parse_key
from adapter.service import build_service
from adapter.settings import load_settings
from adapter.storage.db import transaction
from mappings.quiet_hours import QuietHours, QuietHoursError
from tests.support.bodies import body
from tests.support.synthetic import synthetic_appointment, synthetic_patient

ZONE = ZoneInfo("Europe/Madrid")
PATIENT_REF = "Patient/p1"
REMINDER_RULE = "appointment-booked-confirmation-reminder"


def decider(engine: Engine, **overrides: Any) -> Decider:
    values: dict[str, Any] = {"site_timezone": "Europe/Madrid", "quiet_hours": "21:00-08:00", **overrides}
    settings = load_settings(mode="demo", **values)
    built = build_service(settings, engine=engine).decider
    attach(built, settings)
    with transaction(engine) as session:
        set_consent(session, PATIENT_REF, OPTED_IN, "admin")
    return built


def local(day_offset: int, hour: int, minute: int = 0) -> datetime:
    """A local wall-clock time ``day_offset`` days from today in the site's zone, as UTC."""
    day = datetime.now(ZONE).date() + timedelta(days=day_offset)
    return datetime.combine(day, time(hour, minute), tzinfo=ZONE).astimezone(UTC)


def appointment(start: datetime, number: int, appointment_id: str = "a1", **changes: Any) -> dict[str, Any]:
    resource = synthetic_appointment(PATIENT_REF, appointment_id=appointment_id, start=start)
    resource["id"] = appointment_id
    return {**resource, **changes, "meta": {"versionId": str(number), "lastUpdated": "2026-11-25T10:00:00Z"}}


def patient() -> dict[str, Any]:
    return synthetic_patient(number=42, patient_id="p1")


def reminders(engine: Engine, state: str | None = "queued") -> list[OutboxMessage]:
    with Session(engine) as session:
        query = select(OutboxMessage).where(col(OutboxMessage.rule_id) == REMINDER_RULE)
        if state is not None:
            query = query.where(col(OutboxMessage.state) == state)
        return list(session.exec(query.order_by(col(OutboxMessage.due_at))))


def due_local(row: OutboxMessage) -> datetime:
    moment = row.due_at if row.due_at.tzinfo else row.due_at.replace(tzinfo=UTC)
    return moment.astimezone(ZONE)


def skip_reasons(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [s.reason for s in session.exec(select(NotificationSkip).where(
            col(NotificationSkip.rule_id) == REMINDER_RULE).order_by(col(NotificationSkip.id)))]


def test_a_booked_appointment_gets_reminders_two_days_and_two_hours_before(engine: Engine) -> None:
    d = decider(engine)
    start = local(4, 15)
    decision = d.record(appointment(start, 1), patient())
    rows = reminders(engine)
    assert [due_local(row) for row in rows] == [(start - timedelta(days=2)).astimezone(ZONE),
                                                (start - timedelta(hours=2)).astimezone(ZONE)]
    assert len(decision.queued) == 3  # the confirmation and two reminders
    payload = body(rows[0], cipher=d.outbox.cipher)
    assert payload["type"] == "template" and payload["template"]["name"] == "appointment_reminder"
    assert "components" in payload["template"] and all(c["type"] == "body" for c in payload["template"]["components"])
    # Processing the same appointment again (a new version, nothing changed) adds nothing.
    d.record(appointment(start, 2, description="room change"), None)
    assert len(reminders(engine)) == 2 and len(reminders(engine, None)) == 2


def test_quiet_hours_move_a_reminder_earlier_to_the_same_evening(engine: Engine) -> None:
    d = decider(engine)
    start = local(4, 1)  # 01:00 local: 2 h before is 23:00, 2 days before is 01:00
    d.record(appointment(start, 1), patient())
    two_days, two_hours = reminders(engine)
    assert due_local(two_hours).time() == time(21, 0)
    assert due_local(two_hours).date() == (start - timedelta(hours=2)).astimezone(ZONE).date()  # the same evening
    assert due_local(two_days).time() == time(21, 0)
    assert due_local(two_days).date() == (start - timedelta(days=2)).astimezone(ZONE).date() - timedelta(days=1)
    for row in (two_days, two_hours):
        assert not QuietHours.parse("21:00-08:00").contains(due_local(row).time())
        assert due_local(row) < start


def test_a_cancellation_removes_pending_reminders_and_they_do_not_come_back(engine: Engine) -> None:
    d = decider(engine)
    start = local(4, 15)
    d.record(appointment(start, 1), patient())
    assert len(reminders(engine)) == 2
    d.record(appointment(start, 2, status="cancelled"), None)
    assert reminders(engine) == []
    gone = reminders(engine, "suppressed")
    assert len(gone) == 2 and {row.dead_reason for row in gone} == {"reminder cancelled: appointment cancelled"}


@pytest.mark.parametrize("status", ["noshow", "entered-in-error", "fulfilled"])
def test_other_end_states_cancel_too(engine: Engine, status: str) -> None:
    d = decider(engine)
    start = local(4, 15)
    d.record(appointment(start, 1), patient())
    d.record(appointment(start, 2, status=status), None)
    assert reminders(engine) == [] and len(reminders(engine, "suppressed")) == 2


def test_a_reschedule_moves_pending_reminders(engine: Engine) -> None:
    d = decider(engine)
    start, later = local(4, 15), local(6, 10)
    d.record(appointment(start, 1), patient())
    old_bodies = [body(row, cipher=d.outbox.cipher) for row in reminders(engine)]
    d.record(appointment(later, 2), None)  # still booked, new start: no rule fires, no Patient read
    moved = reminders(engine)
    assert [due_local(row) for row in moved] == [(later - timedelta(days=2)).astimezone(ZONE),
                                                 (later - timedelta(hours=2)).astimezone(ZONE)]
    assert all(parse_key(row.natural_key) is not None and parse_key(row.natural_key)[1] == later  # type: ignore[index]
               for row in moved)
    new_bodies = [body(row, cipher=d.outbox.cipher) for row in moved]
    assert new_bodies[0]["template"]["components"] != old_bodies[0]["template"]["components"]  # the new date
    assert {row.dead_reason for row in reminders(engine, "suppressed")} == {
        "reminder cancelled: appointment rescheduled"}


def test_a_confirm_stops_reminders_and_reprocessing_does_not_restore_them(engine: Engine) -> None:
    d = decider(engine)
    start = local(4, 15)
    d.record(appointment(start, 1), patient())
    with transaction(engine) as session:
        assert cancel_pending(session, "Appointment/a1", "reminder cancelled: patient confirmed") == 2
    d.record(appointment(start, 2, description="confirmed"), patient())
    assert reminders(engine) == []


def test_two_appointments_the_same_day_give_one_reminder_per_offset(engine: Engine) -> None:
    d = decider(engine)
    d.record(appointment(local(4, 10), 1, "a1"), patient())
    d.record(appointment(local(4, 16), 1, "a2"), patient())
    rows = reminders(engine)
    assert len(rows) == 2 and {row.resource_ref for row in rows} == {"Appointment/a1"}
    assert skip_reasons(engine) == ["same_day_reminder"]


def test_the_daily_cap_skips_excess_reminders(engine: Engine) -> None:
    d = decider(engine, reminder_daily_cap=1)
    d.record(appointment(local(5, 15), 1, "a1"), patient())  # its 2-day reminder is due on day 3, 15:00
    d.record(appointment(local(3, 18), 1, "a2"), patient())  # its 2-hour reminder would be day 3, 16:00
    per_day: dict[date, int] = {}
    for row in reminders(engine):
        per_day[due_local(row).date()] = per_day.get(due_local(row).date(), 0) + 1
    assert max(per_day.values()) == 1
    assert "daily_cap" in skip_reasons(engine)


def test_no_reminder_whose_time_has_passed_or_after_the_start(engine: Engine) -> None:
    d = decider(engine, quiet_hours="")
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    d.record(appointment(soon, 1), patient())
    assert reminders(engine) == [] and skip_reasons(engine) == ["reminder_time_passed"]
    d.record(appointment(datetime.now(UTC) - timedelta(minutes=5), 2), None)  # started: nothing to plan
    assert reminders(engine) == []


@pytest.mark.parametrize(("text", "moment", "quiet"), [
    ("21:00-08:00", time(23, 0), True), ("21:00-08:00", time(7, 59), True), ("21:00-08:00", time(21, 0), False),
    ("21:00-08:00", time(8, 0), False), ("13:00-14:00", time(13, 30), True), ("13:00-14:00", time(14, 30), False),
])
def test_quiet_hours_contain(text: str, moment: time, quiet: bool) -> None:
    assert QuietHours.parse(text).contains(moment) is quiet


def test_due_time_never_later_than_plain_and_never_at_night() -> None:
    policy = ReminderPolicy(zone=ZONE, quiet=QuietHours.parse("21:00-08:00"))
    start = datetime(2026, 12, 3, 6, 30, tzinfo=ZONE).astimezone(UTC)  # 2 h before: 04:30, moved to 21:00 before
    assert due_time(start, timedelta(hours=2), policy).astimezone(ZONE) == datetime(2026, 12, 2, 21, 0, tzinfo=ZONE)
    lunch = ReminderPolicy(zone=ZONE, quiet=QuietHours.parse("13:00-14:00"))
    noon = datetime(2026, 12, 3, 15, 30, tzinfo=ZONE)
    assert due_time(noon, timedelta(hours=2), lunch).astimezone(ZONE) == datetime(2026, 12, 3, 13, 0, tzinfo=ZONE)


@pytest.mark.parametrize("text", ["9pm-8am", "21:00", "25:00-08:00", "08:00-08:00"])
def test_bad_quiet_hours_are_refused_in_words(text: str) -> None:
    with pytest.raises(QuietHoursError, match="quiet hours"):
        QuietHours.parse(text)
