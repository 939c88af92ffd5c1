"""Webhook bodies as Meta writes them: the ``messages`` envelope, status items, template status updates.

Shapes follow Meta's webhook references (https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components):

* "Status messages webhook reference": ``statuses[]`` items with ``id``, ``status``, ``timestamp`` (string),
  ``recipient_id``, ``recipient_user_id`` (business-scoped user id, BSUID), ``biz_opaque_callback_data``,
  ``conversation`` and ``pricing`` (per-message pricing, ``pricing_model: "PMP"``) on ``sent``/``delivered``,
  and ``errors[]`` (``code``, ``title``, ``message``, ``error_data.details``, ``href``) on ``failed``.
* "message_template_status_update webhook reference": ``entry[].time`` plus ``changes[].value`` with
  ``event``, ``message_template_id`` (integer), ``message_template_name``, ``message_template_language``,
  ``reason`` (``"NONE"`` unless rejected), ``message_template_category``, and ``other_info`` (pauses) or
  ``disable_info`` (disabled).
* "Business-scoped user IDs": a BSUID is a two-letter ISO country code, a dot and up to 128 alphanumerics
  (``US.1000000000000000001``), stable per user and business; :func:`bsuid_for` derives one from the wa_id
  and the business (WABA) id, so the same user always gets the same id here.

Bodies are serialised the way Meta does it (:func:`meta_json`) and signed over exactly those bytes.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from whatsapp.emulator.config import EmulatorConfig
from whatsapp.emulator.graph_errors import DETAILS, ERROR_CODES_URL, TITLES

if TYPE_CHECKING:
    from whatsapp.emulator.state import AcceptedMessage

WINDOW_SECONDS = 24 * 3600
# Calling codes of the synthetic and demo numbers → ISO country; anything else is reported as US.
_COUNTRIES = (("1", "US"), ("44", "GB"), ("34", "ES"), ("52", "MX"), ("55", "BR"), ("49", "DE"), ("33", "FR"))


def meta_json(document: Any) -> bytes:
    """JSON bytes as Meta writes them: compact, ASCII-only, with ``\\/``.

    A ``/`` can only occur inside JSON strings, so escaping every one keeps the document equivalent.
    """
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode("ascii")


@lru_cache(maxsize=65_536)
def bsuid_for(wa_id: str, business_id: str) -> str:
    """A deterministic business-scoped user id for ``wa_id``, e.g. ``US.1000000000000000042``."""
    country = next((iso for prefix, iso in _COUNTRIES if wa_id.startswith(prefix)), "US")
    digest = int.from_bytes(hashlib.sha256(f"{business_id}:{wa_id}".encode()).digest()[:8], "big")
    return f"{country}.{10**18 + digest % (9 * 10**18)}"


def envelope(config: EmulatorConfig, phone_number_id: str, value: dict[str, Any]) -> dict[str, Any]:
    metadata = {"display_phone_number": config.phone_numbers.get(phone_number_id, ""),
                "phone_number_id": phone_number_id}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": config.waba_id, "changes": [
            {"value": {"messaging_product": "whatsapp", "metadata": metadata, **value}, "field": "messages"}
        ]}],
    }


def error_items(code: int) -> list[dict[str, Any]]:
    title = TITLES.get(code, "Message failed to send")
    return [{"code": code, "title": title, "message": title,
             "error_data": {"details": DETAILS.get(code, title)}, "href": ERROR_CODES_URL}]


def status_item(message: AcceptedMessage, status: str, *, category: str | None, free_form: bool,
                callback: str | None, error_code: int | None = None, now: float | None = None,
                user_id: str | None = None) -> dict[str, Any]:
    """One ``statuses[]`` item; ``now`` is the virtual time (defaults to the message's acceptance)."""
    stamp = int(now if now is not None else message.accepted_at)
    item: dict[str, Any] = {"id": message.message_id, "status": status, "timestamp": str(stamp),
                            "recipient_id": message.wa_id}
    if user_id is not None:
        item["recipient_user_id"] = user_id
    if callback is not None:
        item["biz_opaque_callback_data"] = callback
    if status in ("sent", "delivered"):
        kind = "service" if free_form else (category or "utility").lower()
        key = f"{message.phone_number_id}:{message.wa_id}:{kind}".encode()
        conversation: dict[str, Any] = {
            "id": hashlib.sha256(key).hexdigest()[:32],
            "origin": {"type": kind},
        }
        if status == "sent":
            conversation["expiration_timestamp"] = str(stamp + WINDOW_SECONDS)
        item["conversation"] = conversation
        # Per-message pricing (PMP): service replies inside the window are free.
        item["pricing"] = (
            {"billable": False, "pricing_model": "PMP", "type": "free_customer_service",
             "category": "service"}
            if free_form else {"billable": True, "pricing_model": "PMP", "type": "regular", "category": kind}
        )
    if error_code is not None:
        item["errors"] = error_items(error_code)
    return item


def template_status_document(config: EmulatorConfig, template: dict[str, Any], event: str, now: float,
                             reason: str | None) -> dict[str, Any]:
    """A ``message_template_status_update`` webhook for ``template`` (a registry record)."""
    value: dict[str, Any] = {
        "event": event,
        "message_template_id": int(template["id"]),
        "message_template_name": template["name"],
        "message_template_language": template["language"],
        "reason": reason if reason is not None else "NONE",
        "message_template_category": template["category"],
    }
    if event == "PAUSED":
        value["other_info"] = {"title": "FIRST_PAUSE",
                               "description": "Your WhatsApp message template has been paused for 3 hours "
                                              "because it had issues."}
    elif event == "DISABLED":
        value["disable_info"] = {"disable_date": str(int(now))}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": config.waba_id, "time": int(now),
                   "changes": [{"value": value, "field": "message_template_status_update"}]}],
    }
