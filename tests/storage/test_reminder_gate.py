"""A reminder that comes due late (the service was down) is re-checked when claimed: never sent in
the night, never after the appointment started."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapter.outbox.tables import OutboxMessage
from adapter.scheduling.reminder_gate import ReminderGate
from adapter.scheduling.reminders import ReminderPolicy
from adapter.storage.db import transaction
from mappings.quiet_hours import QuietHours
from tests.support.stores import outbox_store

ZONE = ZoneInfo("America/New_York")
GATE = ReminderGate(ReminderPolicy(zone=ZONE, quiet=QuietHours.parse("21:00-08:00")))
TEMPLATE = {"name": "appointment_reminder", "language": {"code": "en_US"}}


def _key(start: datetime, minutes: int = 120) -> str:
    return f"reminder:Appointment/example-9:{start.astimezone(UTC):%Y%m%dT%H%MZ}:{minutes}m"


def _local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=ZONE)


def test_the_gate_sends_waits_or_suppresses() -> None:
    start = _local(3, 10)
    assert GATE(_key(start), _local(2, 20, 30)) is None  # an evening before quiet hours: send
    assert GATE(_key(start), _local(3, 2)) == _local(3, 8).astimezone(UTC)  # night: wait for 08:00
    assert GATE(_key(_local(3, 7, 30)), _local(3, 2)) == "quiet_until_start"  # 08:00 would be too late
    assert GATE(_key(start), _local(3, 10, 1)) == "appointment_started"
    assert GATE("appointment-booked-confirmation:Appointment/example-9/_history/1", _local(3, 2)) is None
    assert ReminderGate(replace(GATE.policy, quiet=None))(_key(start), _local(3, 2)) is None


def test_a_reminder_claimed_in_the_night_waits_and_one_past_its_start_is_suppressed(engine: Engine) -> None:
    store = outbox_store(engine)
    store.rules = replace(store.rules, reminder_gate=GATE)
    night, start = _local(3, 2), _local(3, 10)
    with transaction(engine) as session:
        for key in (_key(start), _key(_local(3, 1), 60)):
            store.enqueue(session, natural_key=key, rule_id="appointment-booked-confirmation-reminder",
                          resource_ref="Appointment/example-9", patient_ref="Patient/example-1",
                          recipient="+15550100123", template=TEMPLATE, due_at=night - timedelta(hours=5))
    assert store.claim_due(10, now=night.astimezone(UTC)) == []  # nothing leaves in the night
    with Session(engine) as session:
        rows = {row.natural_key: row for row in session.exec(select(OutboxMessage))}
    waiting, started = rows[_key(start)], rows[_key(_local(3, 1), 60)]
    assert waiting.state == "queued" and waiting.due_at.astimezone(UTC) == _local(3, 8).astimezone(UTC)
    assert started.state == "suppressed" and started.dead_reason == "appointment_started"
    [claimed] = store.claim_due(10, now=_local(3, 8, 1).astimezone(UTC))
    assert claimed.request["template"]["name"] == "appointment_reminder"
