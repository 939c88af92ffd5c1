"""The send path works in sets, on SQLite and PostgreSQL: claiming a batch and recording its outcomes
issue the same statements whatever the batch's size (one per table: DESIGN.md, "work in sets on the hot
path"), and a batch keeps every rule of one row at a time: pacing per recipient across the batch,
opted-out patients, template holds, attempts matched to their rows, each outcome on its own row, and
paces from Meta's answers."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.tables import AuditEvent
from adapter.ops.alerts import open_alerts
from adapter.outbox.batch_writes import take_paces
from adapter.outbox.claims import TEMPLATE_HOLD, ClaimedMessage
from adapter.outbox.results import SendOutcome
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage, RecipientPace, SendAttempt
from adapter.outbox.templates import record_states
from adapter.recipients.consent import OPTED_OUT, set_consent
from adapter.storage.db import transaction, utcnow
from tests.support.bodies import body
from tests.support.stores import outbox_store

TEMPLATE = {"name": "results_ready", "language": {"code": "en_US"}, "components": []}
FALLBACK = {"name": "service_update", "language": {"code": "en_US"}}
PAIR = timedelta(seconds=6)
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?([A-Za-z_][A-Za-z0-9_]*)', re.IGNORECASE)


def number(n: int) -> str:
    return f"+1201555{100 + n:04d}"  # synthetic +1 201-555-01xx range


def enqueue(outbox: OutboxStore, key: str, recipient: int, *, template: dict[str, Any] | None = None,
            fallback: dict[str, Any] | None = None) -> None:
    """A template message due a second ago to patient ``recipient`` at that patient's number."""
    with transaction(outbox.engine) as session:
        outbox.enqueue_message(session, natural_key=key, rule_id="rule", resource_ref=f"Appointment/{key}",
                               patient_ref=f"Patient/{recipient}", recipient=number(recipient),
                               message={"type": "template", "template": template or TEMPLATE},
                               due_at=utcnow() - timedelta(seconds=1), fallback=fallback)


def rows(engine: Engine) -> dict[str, OutboxMessage]:
    with Session(engine) as session:
        return {row.natural_key: row for row in session.exec(select(OutboxMessage))}


def attempts(engine: Engine) -> dict[int, SendAttempt]:
    with Session(engine) as session:
        return {attempt.id or 0: attempt for attempt in session.exec(select(SendAttempt))}


@contextmanager
def statements(engine: Engine) -> Iterator[Counter[str]]:
    """Counts the statements sent to the database (an executemany counts once), as "KIND table"."""
    seen: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        match = _TABLE.search(statement)
        seen[f"{statement.split(None, 1)[0].upper()} {match.group(1) if match else '-'}"] += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def outcomes_of_every_kind(claimed: list[ClaimedMessage]) -> list[SendOutcome]:
    """sent, retry, ambiguous, dead (undeliverable) and replan, in turn, each with Meta's answer time."""
    answered = utcnow()
    made: list[SendOutcome] = []
    for n, message in enumerate(claimed):
        kind = ("sent", "retry", "ambiguous", "dead", "replan")[n % 5]
        made.append(SendOutcome(
            message.outbox_id, message.attempt_id, kind, wamid=f"wamid.{message.outbox_id}" if kind == "sent" else None,
            retry_at=answered + timedelta(minutes=1) if kind in ("retry", "ambiguous") else None,
            error_code=None if kind == "sent" else 131026, error_class=None if kind == "sent" else "UndeliverableError",
            dead_reason="UndeliverableError code=131026" if kind == "dead" else None, answered_at=answered))
    return made


def claim_and_record(engine: Engine, size: int) -> tuple[Counter[str], Counter[str]]:
    """Statements of claiming ``size`` rows (distinct recipients) and of recording their outcomes."""
    outbox = outbox_store(engine)
    for n in range(size):
        enqueue(outbox, f"size{size}:{n}", n, fallback=FALLBACK)
    with statements(engine) as claiming:
        claimed = outbox.claim_due(100)
    assert len(claimed) == size
    with statements(engine) as recording:
        outbox.record(outcomes_of_every_kind(claimed))
    with transaction(engine) as session:  # the next size starts afresh: nothing due, recipients free
        session.execute(text("UPDATE outbox SET state = 'dead' WHERE state IN ('queued', 'sending')"))
        session.execute(text("DELETE FROM recipient_pace"))
    return claiming, recording


def test_a_batch_costs_the_same_statements_whatever_its_size(engine: Engine) -> None:
    claim_5, record_5 = claim_and_record(engine, 5)
    claim_20, record_20 = claim_and_record(engine, 20)
    assert claim_5 == claim_20 and record_5 == record_20
    # One statement per table: the claim, the rules' reads, then one write each.
    assert claim_20["SELECT outbox"] == 1
    assert claim_20["INSERT recipient_pace"] == claim_20["UPDATE outbox"] == claim_20["INSERT send_attempt"] == 1
    assert record_20["SELECT outbox"] == record_20["SELECT send_attempt"] == 1
    assert record_20["UPDATE send_attempt"] == record_20["INSERT recipient_pace"] == record_20["UPDATE outbox"] == 1
    assert record_20["INSERT audit_event"] == 1


def test_two_rows_to_one_number_in_a_batch_one_goes_and_one_waits(engine: Engine) -> None:
    outbox = outbox_store(engine)
    enqueue(outbox, "first", 1)
    enqueue(outbox, "second", 1)  # same number, same patient
    enqueue(outbox, "other", 2)
    now = utcnow()
    claimed = outbox.claim_due(10, now=now)
    found = rows(engine)
    assert sorted(m.outbox_id for m in claimed) == sorted([found["first"].id or 0, found["other"].id or 0])
    held = found["second"]
    assert held.state == "queued" and held.attempts == 0 and held.due_at == now + PAIR
    assert {a.outbox_id for a in attempts(engine).values()} == {found["first"].id, found["other"].id}
    with Session(engine) as session:  # provisional paces, until the sends report when they left
        paces = set(session.exec(select(RecipientPace.next_send_at)).all())
    assert paces == {now + outbox.rules.send_lease + PAIR}


def test_a_recipient_another_instance_took_meanwhile_waits_one_interval(pg_engine: Engine) -> None:
    outbox = outbox_store(pg_engine)
    enqueue(outbox, "taken", 3)
    enqueue(outbox, "free", 4)
    key = rows(pg_engine)["taken"].recipient_key or b""
    now = utcnow()
    claimed: list[ClaimedMessage] = []
    with transaction(pg_engine) as other:  # another instance is claiming this recipient
        assert key in take_paces(other, [key], now + timedelta(minutes=2), now)
        claiming = threading.Thread(target=lambda: claimed.extend(outbox.claim_due(10, now=now)))
        claiming.start()
        claiming.join(timeout=0.5)
        assert claiming.is_alive()  # its take waits for the other instance's commit
    claiming.join(timeout=10)
    found = rows(pg_engine)
    assert [m.outbox_id for m in claimed] == [found["free"].id]
    assert found["taken"].state == "queued" and found["taken"].due_at == now + PAIR
    assert found["taken"].attempts == 0


def test_opted_out_patients_are_suppressed_in_a_batch_and_others_go(engine: Engine) -> None:
    outbox = outbox_store(engine)
    for n in range(4):
        enqueue(outbox, f"p{n}", 10 + n)
    with transaction(engine) as session:
        set_consent(session, "Patient/11", OPTED_OUT, "chat")
        set_consent(session, "Patient/13", OPTED_OUT, "chat")
    claimed = outbox.claim_due(10)
    found = rows(engine)
    assert sorted(m.outbox_id for m in claimed) == sorted([found["p0"].id or 0, found["p2"].id or 0])
    for key in ("p1", "p3"):
        assert found[key].state == "suppressed" and found[key].dead_reason == "patient opted out"
        assert found[key].attempts == 0 and found[key].lease_until is None
    assert len(attempts(engine)) == 2


def test_a_template_neither_approved_nor_replaceable_waits_and_alerts(engine: Engine) -> None:
    outbox = outbox_store(engine)
    held_template = {"name": "appointment_reminder", "language": {"code": "en_US"}}
    enqueue(outbox, "held", 20, template=held_template)
    enqueue(outbox, "held-es", 21, template={**held_template, "language": {"code": "es"}})
    enqueue(outbox, "approved", 22)
    record_states(engine, [("appointment_reminder", "en_US", "PAUSED", "1", "low quality"),
                           ("appointment_reminder", "es", "PAUSED", "2", "low quality"),
                           ("results_ready", "en_US", "APPROVED", "3", None),
                           ("service_update", "en_US", "DISABLED", "4", None)])
    now = utcnow()
    claimed = outbox.claim_due(10, now=now)
    found = rows(engine)
    assert [m.outbox_id for m in claimed] == [found["approved"].id]
    for key in ("held", "held-es"):
        assert found[key].state == "queued" and found[key].due_at == now + TEMPLATE_HOLD
        assert found[key].attempts == 0
    raised = {alert.dedupe_key for alert in open_alerts(engine)}
    assert {"template:appointment_reminder/en_US is PAUSED", "template:appointment_reminder/es is PAUSED"} <= raised


def test_a_replaced_template_is_what_goes_and_what_the_row_keeps(engine: Engine) -> None:
    outbox = outbox_store(engine)
    enqueue(outbox, "paused", 23)
    enqueue(outbox, "fine", 24, template={"name": "appointment_reminder", "language": {"code": "en_US"}})
    record_states(engine, [("results_ready", "en_US", "PAUSED", "1", "low quality"),
                           ("appointment_reminder", "en_US", "APPROVED", "2", None),
                           ("service_update", "en_US", "APPROVED", "3", None)])
    by_id = {m.outbox_id: m.request["template"]["name"] for m in outbox.claim_due(10)}
    found = rows(engine)
    assert by_id == {found["paused"].id: "service_update", found["fine"].id: "appointment_reminder"}
    assert body(found["paused"])["template"]["name"] == "service_update"
    raised = {alert.dedupe_key for alert in open_alerts(engine)}
    assert any(key.startswith("template_fallback:results_ready/en_US is PAUSED") for key in raised)


def test_each_attempt_carries_its_rows_number_and_id(engine: Engine) -> None:
    outbox = outbox_store(engine)
    for n in range(20):
        enqueue(outbox, f"a{n:02d}", 30 + n)
    with transaction(engine) as session:  # earlier attempts, different per row
        session.execute(text("UPDATE outbox SET attempts = CAST(SUBSTR(natural_key, 2) AS INTEGER) % 4"))
    claimed = outbox.claim_due(100)
    found = {row.id: row for row in rows(engine).values()}
    recorded = attempts(engine)
    assert len(claimed) == 20 and len(recorded) == 20
    for message in claimed:
        row = found[message.outbox_id]
        assert message.attempt_no == int(row.natural_key[1:]) % 4 + 1 == row.attempts
        attempt = recorded[message.attempt_id]
        assert (attempt.outbox_id, attempt.attempt_no, attempt.outcome) == (row.id, row.attempts, "started")
        assert message.request["to"] == number(30 + int(row.natural_key[1:]))
        assert row.state == "sending" and row.lease_until is not None


def test_each_outcome_lands_on_its_own_row(engine: Engine) -> None:
    outbox = outbox_store(engine)
    for n in range(10):
        enqueue(outbox, f"o{n}", 60 + n, fallback=FALLBACK)
    claimed = outbox.claim_due(100)
    outcomes = outcomes_of_every_kind(claimed)
    outbox.record(outcomes)
    found = {row.id: row for row in rows(engine).values()}
    recorded = attempts(engine)
    for message, outcome in zip(claimed, outcomes, strict=True):
        row = found[message.outbox_id]
        assert recorded[message.attempt_id].outcome == outcome.result
        assert recorded[message.attempt_id].finished_at is not None
        assert row.lease_until is None
        if outcome.result == "sent":
            assert (row.state, row.wamid, row.last_error_code) == ("sent", outcome.wamid, None)
            assert row.sent_at is not None
        elif outcome.result in ("retry", "ambiguous"):
            assert (row.state, row.due_at, row.last_error_code) == ("queued", outcome.retry_at, 131026)
        elif outcome.result == "dead":
            assert (row.state, row.dead_reason, row.hook_state) == ("dead", outcome.dead_reason, "pending")
        else:  # replan: the fallback template, now
            assert row.state == "queued" and body(row)["template"] == FALLBACK
    with Session(engine) as session:
        audited = session.exec(select(AuditEvent.entity_ref).where(col(AuditEvent.kind) == "disclosure")).all()
    assert len(audited) == 10 and "message/wamid." + str(claimed[0].outbox_id) in audited


def test_a_late_or_settled_outcome_does_not_undo_the_row(engine: Engine) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    enqueue(outbox, "reclaimed", 70)
    enqueue(outbox, "settled", 71)
    first = {m.outbox_id: m for m in outbox.claim_due(10)}
    found = rows(engine)
    reclaimed, settled = found["reclaimed"].id or 0, found["settled"].id or 0
    [again] = [m for m in outbox.claim_due(10, now=utcnow() + timedelta(minutes=5)) if m.outbox_id == reclaimed]
    with transaction(engine) as session:  # a status settled this send before its answer came back
        session.execute(text(f"UPDATE outbox SET state = 'sent', wamid = 'wamid.S' WHERE id = {settled}"))
    outbox.record([SendOutcome(reclaimed, first[reclaimed].attempt_id, "retry", retry_at=utcnow(),
                               error_code=131000, error_class="RetryableError"),
                   SendOutcome(settled, first[settled].attempt_id, "sent", wamid="wamid.S")])
    found = rows(engine)
    assert found["reclaimed"].state == "sending" and found["reclaimed"].attempts == again.attempt_no == 2
    assert found["settled"].state == "sent"
    with Session(engine) as session:  # the status audited the settled send; the late retry is audited
        audited = session.exec(select(AuditEvent.entity_ref).where(col(AuditEvent.kind) == "disclosure")).all()
    assert audited == [f"outbox/{reclaimed}"]


def test_paces_follow_metas_answers_and_the_last_answer_per_number_wins(engine: Engine) -> None:
    outbox = outbox_store(engine, pair_interval_seconds=0)  # claim freely; record with an interval below
    enqueue(outbox, "x1", 80)
    enqueue(outbox, "x2", 80)  # the same number
    enqueue(outbox, "y", 81)
    enqueue(outbox, "z", 82)
    claimed = {rows(engine)[key].id: key for key in ("x1", "x2", "y", "z")}
    messages = sorted(outbox.claim_due(10), key=lambda m: m.outbox_id)
    answered = utcnow() - timedelta(seconds=2)
    result: dict[str, Callable[[ClaimedMessage], SendOutcome]] = {
        "x1": lambda m: SendOutcome(m.outbox_id, m.attempt_id, "sent", wamid="wamid.X1", answered_at=answered),
        "x2": lambda m: SendOutcome(m.outbox_id, m.attempt_id, "ambiguous", retry_at=utcnow(),
                                    answered_at=answered + timedelta(seconds=1)),
        "y": lambda m: SendOutcome(m.outbox_id, m.attempt_id, "retry", retry_at=utcnow(), error_code=131000,
                                   error_class="RetryableError", answered_at=answered),
        "z": lambda m: SendOutcome(m.outbox_id, m.attempt_id, "sent", wamid="wamid.Z"),  # no answer time
    }
    before = utcnow()
    outbox_store(engine).record([result[claimed[m.outbox_id]](m) for m in messages])
    found = rows(engine)
    with Session(engine) as session:
        paces = dict(session.exec(select(RecipientPace.recipient_key, RecipientPace.next_send_at)).all())
    assert paces[found["x1"].recipient_key or b""] == answered + timedelta(seconds=1) + PAIR  # x2's, the later one
    refused = paces[found["y"].recipient_key or b""]  # a refused request reached nobody: free at once
    assert before <= refused <= utcnow()
    assert found["z"].recipient_key not in paces
