"""The outbox state machine on SQLite and PostgreSQL: effectively-once enqueue, claims that
record an attempt first, retries, dead letters and re-drive, and encrypted recipients."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapter.outbox.encoding import outbox_id_from_callback
from adapter.outbox.results import SendOutcome
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage, SendAttempt
from adapter.storage.db import transaction, utcnow
from tests.support.bodies import body
from tests.support.stores import outbox_store

RECIPIENT = "+12015550123"
TEMPLATE = {"name": "results_ready", "language": {"code": "en_US"}, "components": []}


def store(engine: Engine) -> OutboxStore:
    return outbox_store(engine, pair_interval_seconds=0)  # pacing has its own tests


def enqueue(outbox: OutboxStore, key: str = "rule:Appointment/1/_history/1", due_in: float = 0) -> bool:
    with transaction(outbox.engine) as session:
        return outbox.enqueue(session, natural_key=key, rule_id="rule", resource_ref="Appointment/1",
                              patient_ref="Patient/1", recipient=RECIPIENT, template=TEMPLATE,
                              due_at=utcnow() + timedelta(seconds=due_in))


def test_same_natural_key_is_queued_once(engine: Engine) -> None:
    outbox = store(engine)
    assert enqueue(outbox) is True
    assert enqueue(outbox) is False
    with Session(engine) as session:
        assert len(session.exec(select(OutboxMessage)).all()) == 1


def test_existing_names_the_keys_that_have_a_row_in_any_state(engine: Engine) -> None:
    outbox = store(engine)
    enqueue(outbox, key="a")
    enqueue(outbox, key="b")
    with transaction(engine) as session:
        session.execute(text("UPDATE outbox SET state = 'suppressed' WHERE natural_key = 'b'"))
    with Session(engine) as session:
        assert OutboxStore.existing(session, ["a", "b", "c"]) == {"a", "b"}
        assert OutboxStore.existing(session, []) == set()


def test_a_known_recipient_key_is_stored_as_given(engine: Engine) -> None:
    outbox = store(engine)
    enqueue(outbox, key="first")  # remembers the contact and returns its index
    with Session(engine) as session:
        known = session.exec(select(OutboxMessage.recipient_key)).one()
    with transaction(engine) as session:
        assert outbox.enqueue(session, natural_key="second", rule_id="rule", resource_ref="Appointment/1",
                              patient_ref="Patient/1", recipient=RECIPIENT, template=TEMPLATE, due_at=utcnow(),
                              recipient_key=known)
    with Session(engine) as session:
        assert set(session.exec(select(OutboxMessage.recipient_key)).all()) == {known}


def test_recipient_is_encrypted_at_rest_and_bound_to_its_row(engine: Engine) -> None:
    outbox = store(engine)
    enqueue(outbox)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT recipient_enc FROM outbox")).scalar_one()
    assert RECIPIENT not in stored and "2015550123" not in stored
    claimed = outbox.claim_due(10)
    assert claimed[0].request["to"] == RECIPIENT


def test_claim_records_an_attempt_before_the_call_and_sets_callback_data(engine: Engine) -> None:
    outbox = store(engine)
    enqueue(outbox)
    [message] = outbox.claim_due(10)
    assert outbox_id_from_callback(message.request["biz_opaque_callback_data"]) == message.outbox_id
    assert message.request["template"] == TEMPLATE and message.request["messaging_product"] == "whatsapp"
    with Session(engine) as session:
        attempt = session.get(SendAttempt, message.attempt_id)
        assert attempt is not None and attempt.outcome == "started" and attempt.finished_at is None
        assert session.get(OutboxMessage, message.outbox_id).state == "sending"  # type: ignore[union-attr]
    assert outbox.claim_due(10) == []  # leased: nobody else takes it


def test_future_rows_are_not_due(engine: Engine) -> None:
    outbox = store(engine)
    enqueue(outbox, due_in=3600)
    assert outbox.claim_due(10) == []


def test_sent_retry_and_dead_outcomes(engine: Engine) -> None:
    outbox = store(engine)
    for n in range(3):
        enqueue(outbox, key=f"k{n}")
    a, b, c = outbox.claim_due(10)
    outbox.record([
        SendOutcome(a.outbox_id, a.attempt_id, "sent", wamid="wamid.A"),
        SendOutcome(b.outbox_id, b.attempt_id, "retry", retry_at=utcnow() - timedelta(seconds=1),
                    error_code=131000, error_class="RetryableError"),
        SendOutcome(c.outbox_id, c.attempt_id, "dead", error_code=131026, error_class="UndeliverableError",
                    dead_reason="UndeliverableError code=131026"),
    ])
    with Session(engine) as session:
        rows = {r.id: r for r in session.exec(select(OutboxMessage))}
    assert rows[a.outbox_id].state == "sent" and rows[a.outbox_id].wamid == "wamid.A"
    assert rows[b.outbox_id].state == "queued" and rows[b.outbox_id].last_error_code == 131000
    assert rows[c.outbox_id].state == "dead"
    [again] = outbox.claim_due(10)  # the retry is due again, with a second attempt recorded
    assert again.outbox_id == b.outbox_id and again.attempt_no == 2
    assert [d.id for d in outbox.dead_letters()] == [c.outbox_id]
    assert "queued again" in outbox.redrive(c.outbox_id)
    assert "not a dead letter" in outbox.redrive(a.outbox_id)


def test_expired_sending_lease_is_claimed_again(engine: Engine) -> None:
    outbox = store(engine)
    enqueue(outbox)
    [first] = outbox.claim_due(10)
    later = utcnow() + timedelta(minutes=10)
    [second] = outbox.claim_due(10, now=later)
    assert second.outbox_id == first.outbox_id and second.attempt_no == 2


def test_dead_on_arrival_keeps_no_payload_and_cannot_be_redriven_blindly(engine: Engine) -> None:
    outbox = store(engine)
    with transaction(engine) as session:
        outbox.dead_on_arrival(session, natural_key="k", rule_id="r", resource_ref="Appointment/9",
                               patient_ref="Patient/9", reason="phi_guard:name:body.1")
    [row] = outbox.dead_letters()
    assert row.payload is None and row.recipient_enc is None
    assert "bridge replay Appointment/9" in outbox.redrive(row.id or 0)


def test_payload_is_compact_json(engine: Engine) -> None:
    outbox = store(engine)
    enqueue(outbox)
    with Session(engine) as session:
        row = session.exec(select(OutboxMessage)).one()
    assert body(row)["template"] == TEMPLATE


def test_concurrent_claims_never_share_a_row(engine: Engine) -> None:
    # Several dispatchers (threads here, instances on PostgreSQL) claim at once: SKIP LOCKED on
    # PostgreSQL, the single writer on SQLite; either way each row goes to exactly one of them.
    from concurrent.futures import ThreadPoolExecutor

    outbox = store(engine)
    for n in range(60):
        enqueue(outbox, key=f"k{n}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        batches = list(pool.map(lambda _: outbox.claim_due(20), range(4)))
    claimed = [m.outbox_id for batch in batches for m in batch]
    assert len(claimed) == 60 and len(set(claimed)) == 60
