"""Inbound messages after the 200, on SQLite and PostgreSQL: STOP and START in three languages,
the 24-hour window, business-scoped user ids, changed numbers, and repeats with no second effect."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.conversation.chat import ChatReplies
from adapter.conversation.inbound import InboundProcessor
from adapter.conversation.tables import InboundMessage
from adapter.conversation.webhook_store import store_batch
from adapter.outbox.action_tokens import mint_action_token
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage
from adapter.recipients.consent import OPTED_IN, OPTED_OUT, set_consent
from adapter.recipients.tables import ConsentRecord, WhatsAppContact
from adapter.storage.db import transaction, utcnow
from mappings.conversation import Conversation
from tests.support.bodies import body_text
from tests.support.stores import outbox_store
from whatsapp.webhook import parse_webhook

_ids = itertools.count(1)
TEMPLATE = {"name": "results_ready", "language": {"code": "en_US"}, "components": []}


def wa_id(n: int) -> str:
    return f"1201555{n:04d}"


def inbound(item: dict[str, Any], contact: dict[str, Any] | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp",
                             "metadata": {"display_phone_number": "15550100", "phone_number_id": "1"},
                             "messages": [item]}
    if contact:
        value["contacts"] = [contact]
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "200000000000002", "changes": [{"field": "messages", "value": value}]}]}


def text_from(n: int, body: str, *, ago: timedelta = timedelta(0), wamid: str | None = None,
              user_id: str | None = None) -> dict[str, Any]:
    item = {"from": wa_id(n), "id": wamid or f"wamid.in{next(_ids)}",
            "timestamp": str(int((utcnow() - ago).timestamp())), "type": "text", "text": {"body": body}}
    if user_id:
        item["from_user_id"] = user_id
    return inbound(item, {"profile": {"name": "Synthetic"}, "wa_id": wa_id(n), **({"user_id": user_id} if user_id
                                                                                 else {})})


def setup(engine: Engine) -> tuple[OutboxStore, InboundProcessor]:
    outbox = outbox_store(engine, pair_interval_seconds=0)
    replies = ChatReplies(outbox, Conversation.load(), "en_US", "service_update", ["en_US", "es"])
    return outbox, InboundProcessor(engine, replies)


def queue_for(outbox: OutboxStore, patient: str, n: int, key: str) -> None:
    with transaction(outbox.engine) as session:
        set_consent(session, patient, OPTED_IN, "admin")
        outbox.enqueue(session, natural_key=key, rule_id="reminder", resource_ref="Appointment/1",
                       patient_ref=patient, recipient="+" + wa_id(n), template=TEMPLATE,
                       due_at=utcnow() + timedelta(hours=1))


def deliver(engine: Engine, processor: InboundProcessor, body: dict[str, Any]) -> None:
    store_batch(engine, parse_webhook(body), processor.contacts)
    processor.process_pending()


def consent(engine: Engine, patient: str) -> str | None:
    with Session(engine) as session:
        record = session.get(ConsentRecord, patient)
        return record.status if record else None


def outbox_rows(engine: Engine, rule_prefix: str = "") -> list[OutboxMessage]:
    with Session(engine) as session:
        return [r for r in session.exec(select(OutboxMessage).order_by(col(OutboxMessage.id)))
                if r.rule_id.startswith(rule_prefix)]


def test_stop_suppresses_queued_messages_confirms_once_and_start_resumes(engine: Engine) -> None:
    outbox, processor = setup(engine)
    queue_for(outbox, "Patient/1", 101, "reminder-1")
    stop = text_from(101, "STOP")
    for _ in range(3):  # the same delivery three times: one effect
        deliver(engine, processor, stop)
    deliver(engine, processor, text_from(101, "stop"))  # a second STOP: nothing new to say
    assert consent(engine, "Patient/1") == OPTED_OUT
    [reminder] = outbox_rows(engine, "reminder")
    assert reminder.state == "suppressed"
    [confirmation] = outbox_rows(engine, "chat.consent")
    assert confirmation.purpose == "consent" and "START" in body_text(confirmation)
    deliver(engine, processor, text_from(101, "Start"))
    assert consent(engine, "Patient/1") == OPTED_IN
    payloads = [body_text(r) for r in outbox_rows(engine, "chat.consent")]
    assert len(payloads) == 2 and "START" in payloads[0] and "STOP" in payloads[1]


def test_spanish_and_chinese_stop_words_reply_in_their_language(engine: Engine) -> None:
    outbox, processor = setup(engine)
    queue_for(outbox, "Patient/2", 102, "r2")
    queue_for(outbox, "Patient/3", 103, "r3")
    deliver(engine, processor, text_from(102, "Baja"))
    deliver(engine, processor, text_from(103, "退订"))
    replies = {r.patient_ref: body_text(r) for r in outbox_rows(engine, "chat.consent")}
    assert "INICIAR" in replies["Patient/2"] and "开始" in replies["Patient/3"]


def test_a_sentence_is_not_a_stop(engine: Engine) -> None:
    outbox, processor = setup(engine)
    queue_for(outbox, "Patient/4", 104, "r4")
    deliver(engine, processor, text_from(104, "please do not stop my reminders"))
    assert consent(engine, "Patient/4") == OPTED_IN and outbox_rows(engine, "chat.consent") == []


def test_a_message_opens_the_window_from_its_own_timestamp_and_content_is_dropped(engine: Engine) -> None:
    outbox, processor = setup(engine)
    queue_for(outbox, "Patient/5", 105, "r5")
    deliver(engine, processor, text_from(105, "hello", ago=timedelta(hours=3)))
    with Session(engine) as session:
        contact = session.exec(select(WhatsAppContact)).one()
        assert contact.last_inbound_at is not None
        assert abs((utcnow() - timedelta(hours=3) - contact.last_inbound_at).total_seconds()) < 5
        row = session.exec(select(InboundMessage)).one()
        assert (row.state, row.outcome, row.content_enc) == ("done", "unanswered", None)


def test_a_sender_known_only_by_business_scoped_user_id_is_found(engine: Engine) -> None:
    outbox, processor = setup(engine)
    queue_for(outbox, "Patient/6", 106, "r6")
    deliver(engine, processor, text_from(106, "hi", user_id="US.1000000000000000106"))  # links the two ids
    bsuid_only = inbound({"from_user_id": "US.1000000000000000106", "id": "wamid.bsuid1",
                          "timestamp": str(int(utcnow().timestamp())), "type": "text", "text": {"body": "STOP"}},
                         {"profile": {"name": "Synthetic"}, "user_id": "US.1000000000000000106"})
    deliver(engine, processor, bsuid_only)
    assert consent(engine, "Patient/6") == OPTED_OUT


def test_a_changed_number_moves_the_contact_and_its_queued_messages(engine: Engine) -> None:
    outbox, processor = setup(engine)
    queue_for(outbox, "Patient/7", 107, "r7")
    change = inbound({"from": wa_id(107), "id": "wamid.sys1", "timestamp": str(int(utcnow().timestamp())),
                      "type": "system", "system": {"body": "User changed number", "wa_id": wa_id(117),
                                                   "type": "user_changed_number"}})
    deliver(engine, processor, change)
    [claimed] = outbox.claim_due(10, now=utcnow() + timedelta(hours=2))
    assert claimed.request["to"] == "+" + wa_id(117)
    deliver(engine, processor, text_from(117, "STOP"))  # the new number is the patient's now
    assert consent(engine, "Patient/7") == OPTED_OUT


def test_a_stop_button_of_another_patient_is_refused(engine: Engine) -> None:
    outbox, processor = setup(engine)
    queue_for(outbox, "Patient/8", 108, "r8")
    queue_for(outbox, "Patient/9", 109, "r9")
    with transaction(engine) as session:
        token = mint_action_token(session, action="stop", patient_ref="Patient/9", resource_ref="Appointment/1",
                                  version_id="1")
    tap = inbound({"from": wa_id(108), "id": "wamid.tap1", "timestamp": str(int(utcnow().timestamp())),
                   "type": "button", "button": {"payload": token, "text": "Stop reminders"}})
    deliver(engine, processor, tap)
    assert consent(engine, "Patient/9") == OPTED_IN and consent(engine, "Patient/8") == OPTED_IN
    with Session(engine) as session:
        assert session.exec(select(InboundMessage.outcome)).one() == "token_refused"
    own = inbound({"from": wa_id(109), "id": "wamid.tap2", "timestamp": str(int(utcnow().timestamp())),
                   "type": "button", "button": {"payload": token, "text": "Stop reminders"}})
    deliver(engine, processor, own)  # the "Stop reminders" quick reply, no context needed
    assert consent(engine, "Patient/9") == OPTED_OUT
    assert [r.state for r in outbox_rows(engine, "reminder")] == ["queued", "suppressed"]


def test_a_message_that_cannot_be_read_does_not_block_the_others(engine: Engine) -> None:
    outbox, processor = setup(engine)
    queue_for(outbox, "Patient/10", 110, "r10")
    store_batch(engine, parse_webhook(text_from(110, "hello")), processor.contacts)
    with transaction(engine) as session:  # e.g. encrypted under a key that is no longer configured
        row = session.exec(select(InboundMessage)).one()
        row.content_enc = "v1.otherkey.AAAA.BBBB"
        session.add(row)
    deliver(engine, processor, text_from(110, "STOP"))
    with Session(engine) as session:
        outcomes = sorted((r.state, r.outcome or "") for r in session.exec(select(InboundMessage)))
    assert outcomes == [("done", "opted_out"), ("failed", "error:UnknownKeyError")]  # a DecryptionError naming the key
    assert consent(engine, "Patient/10") == OPTED_OUT
