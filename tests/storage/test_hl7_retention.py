"""Retention of the HL7 v2 feed's rows on SQLite and PostgreSQL: a stale or dead message's encrypted
text goes after its period and a processed one keeps none; finished messages go after the inbox's
period, except the latest of an appointment that may still change; an appointment's ordering row goes
once its feed ended it and the period passed, or after the open-appointment horizon; pending rows
stay whatever their age; every purge is audited, a second run removes nothing, a hold on everyone
keeps everything."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from adapter.audit.tables import LegalHold
from adapter.feeds.hl7_store import Hl7MessageStore
from adapter.feeds.hl7_tables import Hl7Appointment, Hl7Message
from adapter.maintenance.retention import CATEGORY_NAMES, RetentionPolicy, run_retention
from adapter.security.crypto import FieldCipher
from adapter.storage.db import table_of, transaction, utcnow
from ehr.hl7.config import load_config
from ehr.hl7.messages import parse_message
from tests.ehr.hl7.conftest import siu
from tests.storage.test_retention import retention_events, rows_by_category

NOW = utcnow()
POLICY = RetentionPolicy(message_days=90, hl7_raw_days=14, hl7_open_days=400)
RAW_EDGE = NOW - timedelta(days=POLICY.hl7_raw_days)
MESSAGE_EDGE = NOW - timedelta(days=POLICY.message_days)
OPEN_EDGE = NOW - timedelta(days=POLICY.hl7_open_days)
HOUR = timedelta(hours=1)
CIPHER = FieldCipher(os.urandom(32))


def fed(engine: Engine, control: str, *, state: str, received: datetime, filler: str | None = None,
        trigger: str = "S12", appointment_time: datetime | None = None) -> int:
    """A message stored by the real store, then aged: ``state`` (processed ones without their text)
    received and processed at ``received``; its appointment's last message at ``appointment_time``."""
    filler = filler or f"APT-{control}"
    Hl7MessageStore(engine, CIPHER).store_now(parse_message(siu(trigger, control_id=control, filler=filler),
                                                            load_config({})))
    messages, appointments = table_of(Hl7Message), table_of(Hl7Appointment)
    with transaction(engine) as session:
        message_id = int(session.execute(select(messages.c.id).where(messages.c.control_id == control)).scalar_one())
        session.execute(update(messages).where(messages.c.id == message_id).values(
            state=state, received_at=received, processed_at=None if state == "pending" else received,
            **({"raw_enc": ""} if state == "done" else {})))
        session.execute(update(appointments).where(appointments.c.filler_id == filler)
                        .values(message_time=appointment_time or received))
    return message_id


def kept(engine: Engine) -> dict[str, tuple[str, bool]]:
    """Per MSH-10: (state, whether its encrypted text is still there)."""
    with Session(engine) as session:
        return {row.control_id: (row.state, bool(row.raw_enc))
                for row in session.execute(select(Hl7Message)).scalars()}


def appointments(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(session.execute(select(col(Hl7Appointment.filler_id))).scalars())


def world(engine: Engine) -> None:
    # Texts kept for the operator: stale and dead ones lose theirs after hl7_raw_days.
    fed(engine, "STALE-OLD", state="stale", received=RAW_EDGE - HOUR)
    fed(engine, "DEAD-NEW", state="dead", received=RAW_EDGE + HOUR)
    fed(engine, "DEAD-ANCIENT", state="dead", received=MESSAGE_EDGE - HOUR, filler="APT-SHARED")
    # In flight, whatever its age.
    fed(engine, "PENDING", state="pending", received=OPEN_EDGE - HOUR, trigger="S15")
    # Finished: an appointment's earlier message goes, its latest stays while the appointment may change.
    fed(engine, "OPEN-1", state="done", received=MESSAGE_EDGE - HOUR, filler="APT-OPEN")
    fed(engine, "OPEN-2", state="done", received=MESSAGE_EDGE - HOUR, filler="APT-OPEN", trigger="S13")
    fed(engine, "RECENT", state="done", received=MESSAGE_EDGE + HOUR)
    # Ended by its feed (S15) before the period: no longer changes, its rows go.
    fed(engine, "ENDED", state="done", received=MESSAGE_EDGE - HOUR, trigger="S15")
    # Ended, but recently: an S12 sent before the S15 and resent late must still be recognised as stale.
    fed(engine, "ENDED-RECENT", state="done", received=MESSAGE_EDGE - HOUR, trigger="S15",
        appointment_time=MESSAGE_EDGE + HOUR)
    # Never ended by its feed, last heard of past the open-appointment horizon.
    fed(engine, "FORGOTTEN", state="done", received=OPEN_EDGE - HOUR)


def test_hl7_rows_go_after_their_periods_and_ordering_rows_stay_while_needed(engine: Engine) -> None:
    world(engine)
    report = run_retention(engine, POLICY, now=NOW, actor="cli:tester")
    assert kept(engine) == {
        "STALE-OLD": ("stale", False), "DEAD-NEW": ("dead", True), "PENDING": ("pending", True),
        # the latest message of an appointment that may still change (an S12 heard of within the horizon)
        "DEAD-ANCIENT": ("dead", False), "OPEN-2": ("done", False),
        "RECENT": ("done", False), "ENDED-RECENT": ("done", False)}
    assert appointments(engine) == {"APT-STALE-OLD", "APT-DEAD-NEW", "APT-SHARED", "APT-PENDING", "APT-OPEN",
                                    "APT-RECENT", "APT-ENDED-RECENT"}
    assert report.counts["hl7_raw"] == 2  # STALE-OLD and DEAD-ANCIENT
    assert report.counts["hl7_appointment"] == 2  # APT-ENDED, APT-FORGOTTEN
    assert report.counts["hl7_message"] == 3  # OPEN-1, ENDED, FORGOTTEN
    assert rows_by_category(retention_events(engine)) == {"hl7_raw": 2, "hl7_appointment": 2, "hl7_message": 3}
    assert run_retention(engine, POLICY, now=NOW, actor="cli:tester").total == 0


def test_a_dry_run_counts_and_a_hold_on_everyone_keeps_everything(engine: Engine) -> None:
    world(engine)
    before = kept(engine), appointments(engine)
    counted = run_retention(engine, POLICY, now=NOW, actor="cli:tester", dry_run=True)
    assert tuple(counted.counts) == CATEGORY_NAMES
    assert counted.counts["hl7_raw"] == 2 and counted.counts["hl7_appointment"] == 2
    assert (kept(engine), appointments(engine)) == before and retention_events(engine) == []
    with transaction(engine) as session:
        session.execute(insert(table_of(LegalHold)).values(patient_ref=None, reason="litigation", created_by="x",
                                                           created_at=NOW))
    assert run_retention(engine, POLICY, now=NOW, actor="cli:tester").total == 0
    assert (kept(engine), appointments(engine)) == before
