"""The decide step on SQLite and PostgreSQL, fed resources directly (no EHR): transitions,
effectively-once keys, skips with reasons, and the PHI guard's dead letter."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.outbox.tables import ActionToken, NotificationSkip, OutboxMessage
from adapter.recipients.consent import OPTED_IN, set_consent
from adapter.scheduling.decide import Decider
from adapter.service import build_service
from adapter.settings import load_settings
from adapter.storage.db import transaction
from portal_links.tables import LinkToken
from tests.support.bodies import body
from tests.support.synthetic import synthetic_appointment, synthetic_diagnostic_report, synthetic_patient

PATIENT_REF = "Patient/p1"


def decider(engine: Engine, **overrides: Any) -> Decider:
    return build_service(load_settings(mode="demo", **overrides), engine=engine).decider


def patient(**kw: Any) -> dict[str, Any]:
    return synthetic_patient(number=42, patient_id="p1", **kw)


def version(resource: dict[str, Any], number: int, **changes: Any) -> dict[str, Any]:
    return {**resource, **changes, "meta": {"versionId": str(number), "lastUpdated": "2026-11-25T10:00:00Z"}}


def consent(engine: Engine) -> None:
    with transaction(engine) as session:
        set_consent(session, PATIENT_REF, OPTED_IN, "admin")


# These tests are about the notification rules; the reminders a booking also plans (rule id
# "<rule>-reminder") are tested in tests/storage/test_reminders.py.
def outbox(engine: Engine) -> list[OutboxMessage]:
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))
        return [row for row in rows if not row.rule_id.endswith("-reminder")]


def skips(engine: Engine) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(select(NotificationSkip).order_by(col(NotificationSkip.id)))
        return [s.reason for s in rows if not s.rule_id.endswith("-reminder")]


@pytest.fixture
def appointment() -> dict[str, Any]:
    return synthetic_appointment(PATIENT_REF, appointment_id="a1")


def test_booked_once_per_version_and_again_after_a_cancel(engine: Engine, appointment: dict[str, Any]) -> None:
    d = decider(engine)
    consent(engine)

    def confirmations(queued: list[str]) -> list[str]:  # reminders are queued too (tests/storage/test_reminders.py)
        return [key for key in queued if key.startswith("appointment-booked-confirmation:")]

    assert len(confirmations(d.record(version(appointment, 1), patient()).queued)) == 1
    assert d.record(version(appointment, 1), patient()).duplicate  # a repeat of the same version
    assert confirmations(d.record(version(appointment, 2, description="moved room"), patient()).queued) == []
    assert d.record(version(appointment, 3, status="cancelled"), patient()).queued == []
    assert len(confirmations(d.record(version(appointment, 4), patient()).queued)) == 1  # booked again
    sent = [row for row in outbox(engine) if row.rule_id == "appointment-booked-confirmation"]
    assert [row.natural_key.rsplit("/", 1)[-1] for row in sent] == ["1", "4"]


def test_proposed_and_preliminary_send_nothing(engine: Engine, appointment: dict[str, Any]) -> None:
    d = decider(engine)
    consent(engine)
    d.record(version(appointment, 1, status="proposed"), patient())
    report = synthetic_diagnostic_report(PATIENT_REF, status="preliminary", report_id="r1")
    d.record(version(report, 1), patient())
    assert outbox(engine) == [] and skips(engine) == []


@pytest.mark.parametrize(("policy", "expected"), [("once", 1), ("every_release", 2)])
def test_report_policy_after_amendment(engine: Engine, policy: str, expected: int) -> None:
    d = decider(engine, report_policy=policy)
    consent(engine)
    report = synthetic_diagnostic_report(PATIENT_REF, status="final", report_id="r1")
    d.record(version(report, 1), patient())
    d.record(version(report, 2, status="amended"), patient())
    assert len(outbox(engine)) == expected
    with Session(engine) as session:  # no link minted for a message that is not sent
        assert len(session.exec(select(LinkToken)).all()) == expected


def test_results_ready_carries_a_link_and_tokens_are_stored_hashed(engine: Engine) -> None:
    d = decider(engine)
    consent(engine)
    report = synthetic_diagnostic_report(PATIENT_REF, status="final", report_id="r1")
    d.record(version(report, 1), patient())
    [row] = outbox(engine)
    template = body(row, cipher=d.outbox.cipher)["template"]
    token = next(c for c in template["components"] if c.get("sub_type") == "url")["parameters"][0]["text"]
    with Session(engine) as session:
        link = session.exec(select(LinkToken)).one()
        assert link.resource_ref == "DiagnosticReport/r1" and token.encode() not in link.token_hash
        assert len(session.exec(select(ActionToken)).all()) == 1  # the talk-to-staff button
    assert link.expires_at - link.created_at == timedelta(hours=72)


def test_skips_are_recorded_with_their_reason(engine: Engine, appointment: dict[str, Any]) -> None:
    d = decider(engine)
    d.record(version(appointment, 1), patient())  # no opt-in yet
    consent(engine)
    no_phone = patient()
    no_phone["telecom"] = [{"system": "email", "value": "synthetic@example.org"}]
    d.record(version(appointment, 2, status="cancelled"), no_phone)
    d.record(version(appointment, 3), no_phone)
    d.record(version(appointment, 4, status="cancelled"), None)
    d.record(version(appointment, 5), None)  # the patient could not be read
    assert skips(engine) == ["no_opt_in", "no_mobile:no_phone", "patient_not_found"]
    assert outbox(engine) == []


def test_phi_guard_blocks_as_a_dead_letter_without_payload(engine: Engine, appointment: dict[str, Any]) -> None:
    # A newborn's first appointment on their birth date: the message's date would equal the birth date.
    d = decider(engine)
    consent(engine)
    newborn = patient()
    newborn["birthDate"] = appointment["start"][:10]
    booked = version(appointment, 1, start=appointment["start"][:10] + "T15:00:00+00:00")
    decision = d.record(booked, newborn)
    assert decision.blocked[0] == "appointment-booked-confirmation" and decision.queued == []
    [row] = outbox(engine)
    assert row.state == "dead" and row.payload is None and row.recipient_enc is None
    assert row.dead_reason is not None and row.dead_reason.startswith("phi_guard:")
    with Session(engine) as session:  # tokens minted for the blocked message were not kept
        assert session.exec(select(ActionToken)).all() == []


def test_strict_profile_sends_no_date_time_or_site(engine: Engine, appointment: dict[str, Any]) -> None:
    d = decider(engine, phi_profile="strict")
    consent(engine)
    d.record(version(appointment, 1), patient())
    [row] = outbox(engine)
    template = body(row, cipher=d.outbox.cipher)["template"]
    assert template["name"] == "appointment_confirmation_minimal"
    assert all(c["type"] == "button" for c in template["components"])
