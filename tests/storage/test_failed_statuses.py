"""A ``failed`` status (Meta accepted, then could not deliver) is classified like a synchronous
error, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.conversation.webhook_store import store_batch
from adapter.ops.alerts import open_alerts
from adapter.outbox.circuit_breaker import sending_paused
from adapter.outbox.results import SendOutcome
from adapter.outbox.statuses import apply_pending
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.tables import WhatsAppContact
from adapter.storage.db import transaction, utcnow
from tests.support.bodies import body
from tests.support.stores import outbox_store
from whatsapp.webhook import parse_webhook

TEMPLATE = {"name": "results_ready", "language": {"code": "en_US"}, "components": []}


def sent_message(outbox: OutboxStore, *, free_form: bool = False) -> OutboxMessage:
    with transaction(outbox.engine) as session:
        message = {"type": "text", "text": {"body": "A reply."}} if free_form else {
            "type": "template", "template": TEMPLATE}
        outbox.enqueue_message(session, natural_key="k", rule_id="rule", resource_ref="Appointment/1",
                               patient_ref="Patient/1", recipient="+12015550131", message=message, due_at=utcnow(),
                               fallback={"name": "service_update", "language": {"code": "en_US"}})
        for contact in session.exec(select(WhatsAppContact)):
            contact.last_inbound_at = utcnow() - timedelta(hours=1)
            session.add(contact)
    [claimed] = outbox.claim_due(1)
    outbox.record([SendOutcome(claimed.outbox_id, claimed.attempt_id, "sent", wamid="wamid.F1")])
    return row(outbox.engine)


def row(engine: Engine) -> OutboxMessage:
    with Session(engine) as session:
        return session.exec(select(OutboxMessage).where(col(OutboxMessage.natural_key) == "k")).one()


def fail(outbox: OutboxStore, code: int, title: str = "failed") -> OutboxMessage:
    item: dict[str, Any] = {"id": "wamid.F1", "status": "failed", "timestamp": str(int(utcnow().timestamp())),
                            "recipient_id": "12015550131", "errors": [{"code": code, "title": title}]}
    body = {"object": "whatsapp_business_account", "entry": [{"id": "2", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": "1"}, "statuses": [item]}}]}]}
    store_batch(outbox.engine, parse_webhook(body), outbox.contacts)
    apply_pending(outbox.engine)
    return row(outbox.engine)


@pytest.mark.parametrize(("code", "state", "seconds"), [(130429, "queued", 0.9), (131000, "queued", 0.9),
                                                        (131056, "queued", 6.0)])
def test_transient_failures_are_retried_later(engine: Engine, code: int, state: str, seconds: float) -> None:
    outbox = outbox_store(engine)
    sent_message(outbox)
    failed = fail(outbox, code)
    assert failed.state == state and failed.wamid is None  # the retry gets a new message id
    assert failed.due_at >= utcnow() + timedelta(seconds=seconds - 1)


def test_undeliverable_is_a_dead_letter_for_the_fallback_hook(engine: Engine) -> None:
    outbox = outbox_store(engine)
    sent_message(outbox)
    failed = fail(outbox, 131026, "Message undeliverable")
    assert (failed.state, failed.hook_state, failed.delivery_status) == ("dead", "pending", "failed")
    assert [r.id for r in outbox.pending_hooks()] == [failed.id]


@pytest.mark.parametrize("code", [132000, 132001, 100])
def test_configuration_errors_are_dead_and_alert(engine: Engine, code: int) -> None:
    outbox = outbox_store(engine)
    sent_message(outbox)
    assert fail(outbox, code).state == "dead"
    assert [a.kind for a in open_alerts(engine)] == ["configuration_error"]


def test_window_closed_becomes_the_template(engine: Engine) -> None:
    outbox = outbox_store(engine)
    sent_message(outbox, free_form=True)
    failed = fail(outbox, 131047, "Re-engagement message")
    assert failed.state == "queued" and body(failed)["template"]["name"] == "service_update"


@pytest.mark.parametrize("code", [190, 368, 131031, 131042])
def test_account_level_failure_pauses_sending(engine: Engine, code: int) -> None:
    outbox = outbox_store(engine)
    sent_message(outbox)
    assert fail(outbox, code).state == "queued"
    flag = sending_paused(engine)
    assert flag is not None and str(code) in flag.reason


def test_failed_after_delivered_changes_nothing(engine: Engine) -> None:
    outbox = outbox_store(engine)
    sent_message(outbox)
    with transaction(engine) as session:
        message = session.exec(select(OutboxMessage)).one()
        message.delivery_status = "delivered"
        session.add(message)
    assert fail(outbox, 131026).state == "sent"
