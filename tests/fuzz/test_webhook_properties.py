"""Property: a correctly signed WhatsApp webhook (``X-Hub-Signature-256`` over the exact bytes) is never
answered with a server error, whatever its JSON holds — payloads shaped like Meta's (statuses, messages,
contacts, errors, template events; https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components)
with hostile leaves, or arbitrary bytes — and the service still stores a valid webhook afterwards.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st
from sqlmodel import Session, select

from adapter.outbox.tables import WhatsAppStatus
from tests.fuzz.conftest import FUZZ_SETTINGS, Running
from tests.fuzz.strategies import FICTIONAL_WA_IDS, encode, hostile_text, huge_ints, often, shaped, some, with_deep_part
from whatsapp.signature import HEADER, sign

wamids = st.one_of(st.builds(lambda n: f"wamid.FUZZ{n}", st.integers(0, 10**6)), hostile_text)
wa_ids = st.sampled_from(FICTIONAL_WA_IDS)
timestamps = st.one_of(st.integers(1_600_000_000, 1_900_000_000).map(str), huge_ints.map(str), huge_ints)
errors = some(shaped({"code": huge_ints, "title": hostile_text}, {"message": hostile_text,
                                                                  "error_data": shaped({"details": hostile_text})}))
status = shaped({"id": wamids, "status": st.sampled_from(["sent", "delivered", "read", "failed"]),
                 "timestamp": timestamps, "recipient_id": wa_ids},
                {"biz_opaque_callback_data": st.one_of(st.builds(lambda n: f"outbox:{n}", huge_ints), hostile_text),
                 "errors": errors, "conversation": shaped({"id": hostile_text}),
                 "pricing": shaped({"billable": st.booleans(), "category": hostile_text})})
message = shaped({"from": wa_ids, "id": wamids, "timestamp": timestamps,
                  "type": st.sampled_from(["text", "button", "interactive", "system", "image", "unsupported"])},
                 {"text": shaped({"body": hostile_text}),
                  "button": shaped({"payload": hostile_text, "text": hostile_text}),
                  "interactive": shaped({"type": st.sampled_from(["button_reply", "list_reply"]),
                                         "button_reply": shaped({"id": hostile_text, "title": hostile_text})}),
                  "system": shaped({"type": hostile_text, "wa_id": wa_ids}),
                  "context": shaped({"id": wamids}), "errors": errors})
contact = shaped({"wa_id": wa_ids}, {"profile": shaped({"name": hostile_text}), "user_id": hostile_text})
metadata = shaped({"phone_number_id": st.just("1"), "display_phone_number": st.just("15550100")})
messages_value = shaped({"messaging_product": st.just("whatsapp"), "metadata": metadata},
                        {"contacts": some(contact), "statuses": some(status), "messages": some(message),
                         "errors": errors})
template_value = shaped({"event": st.sampled_from(["APPROVED", "REJECTED", "PAUSED", "DISABLED"]),
                         "message_template_id": huge_ints, "message_template_name": hostile_text,
                         "message_template_language": st.sampled_from(["en_US", "es"])},
                        {"reason": hostile_text, "previous_quality_score": hostile_text,
                         "new_quality_score": hostile_text})
change = st.one_of(
    shaped({"field": st.just("messages"), "value": messages_value}),
    shaped({"field": st.sampled_from(["message_template_status_update", "message_template_quality_update"]),
            "value": template_value}))
envelope = shaped({"object": st.just("whatsapp_business_account"),
                   "entry": some(shaped({"id": st.just("200000000000002"), "changes": some(change)},
                                        {"time": huge_ints}))})
bodies = often(with_deep_part(envelope).map(encode), st.binary(max_size=200), 10)


def post_signed(service: Running, body: bytes) -> Any:
    return service.http.post("/whatsapp/webhook", content=body, headers={
        "Content-Type": "application/json", HEADER: sign(body, service.app_secret)})


@FUZZ_SETTINGS
@given(body=bodies)
def test_a_signed_webhook_never_gets_a_server_error(service: Running, body: bytes) -> None:
    response = post_signed(service, body)
    event(f"HTTP {response.status_code}")  # pytest --hypothesis-show-statistics: what the run reached
    # The database is up: a 503 would be a signed body the tables cannot hold, which Meta resends forever.
    assert response.status_code < 500, (response.status_code, response.text[:300])


def test_a_valid_webhook_is_stored_after_the_fuzzing(service: Running) -> None:
    wamid = f"wamid.AFTERFUZZ{uuid.uuid4().hex[:12]}"
    body = encode({"object": "whatsapp_business_account", "entry": [{"id": "200000000000002", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "1"},
                                        "statuses": [{"id": wamid, "status": "delivered", "timestamp": "1700000000",
                                                      "recipient_id": FICTIONAL_WA_IDS[0]}]}}]}]})
    assert post_signed(service, body).status_code == 200
    with Session(service.engine) as session:
        assert session.exec(select(WhatsAppStatus).where(WhatsAppStatus.wamid == wamid)).first() is not None
    service.assert_serving()


