"""Graph API error bodies, as the Cloud API returns them.

Shape from Meta's "Error codes" reference: ``{"error": {"message", "type", "code", "error_data":
{"messaging_product", "details"}, "error_subcode"?, "fbtrace_id"}}``; ``message`` starts with ``(#code)``.
HTTP statuses follow the reference's table (e.g. 132001 → 404, 131000 → 500, 190 → 401). Throttling codes
(130429, 131056) are answered 400 as the table has long said; some current third-party copies of it say 429,
and the service classifies by ``code``, not by HTTP status. Graph's ``error_user_title``/``error_user_msg`` are
added where Meta sends them (template management).

:data:`DETAILS` holds the longer ``error_data.details`` Meta sends for asynchronous failures (``errors[]`` in
status webhooks: "Status messages webhook reference", "Error codes").
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

TITLES: dict[int, str] = {
    4: "Application request limit reached",
    100: "Invalid parameter",
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131026: "Message undeliverable",
    131047: "Re-engagement message",
    131051: "Unsupported message type",
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131050: "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages "
            "on WhatsApp from your business.",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132005: "Translated text too long",
    132015: "Template is Paused",
    132016: "Template is Disabled",
    132018: "There was an issue with the parameters in your template.",
    133004: "Server temporarily unavailable",
    368: "Temporarily blocked for policies violations",
    131031: "Business Account locked",
}
DETAILS: dict[int, str] = {
    130429: "Message failed to send because there were too many messages sent from this phone number in a short "
            "period of time",
    131026: "Message Undeliverable.",
    131047: "Message failed to send because more than 24 hours have passed since the customer last replied to this "
            "number.",
    131056: "Message failed to send because there were too many messages sent from this phone number to the same "
            "phone number in a short period of time.",
}
ERROR_CODES_URL = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"
HTTP_STATUS: dict[int, int] = {
    190: 401, 0: 401, 10: 403, 368: 403, 131031: 403, 132001: 404,
    131000: 500, 131016: 503, 133004: 503, 2: 503, 1: 400,
}


@dataclass(eq=False)
class GraphError(Exception):
    """A rejection the emulator answers with, in Meta's terms."""

    code: int
    details: str = ""
    message: str | None = None
    subcode: int | None = None
    type: str = "OAuthException"
    http_status: int | None = None
    user_title: str | None = None  # Graph's error_user_title, where Meta sends one
    user_msg: str | None = None

    @property
    def status(self) -> int:
        return self.http_status or HTTP_STATUS.get(self.code, 400)

    def body(self) -> bytes:
        return error_body(self.code, self.details, message=self.message, subcode=self.subcode,
                          error_type=self.type, user_title=self.user_title, user_msg=self.user_msg)


def fbtrace_id() -> str:
    return secrets.token_urlsafe(17)[:23]


def error_body(
    code: int,
    details: str = "",
    *,
    message: str | None = None,
    subcode: int | None = None,
    error_type: str = "OAuthException",
    user_title: str | None = None,
    user_msg: str | None = None,
) -> bytes:
    error: dict[str, Any] = {
        "message": message or f"(#{code}) {TITLES.get(code, 'Error')}",
        "type": error_type,
        "code": code,
    }
    if details:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if subcode is not None:
        error["error_subcode"] = subcode
    if user_title:
        error["is_transient"] = False
        error["error_user_title"] = user_title
        error["error_user_msg"] = user_msg or user_title
    error["fbtrace_id"] = fbtrace_id()
    return json.dumps({"error": error}, separators=(",", ":")).encode()


def invalid_token() -> GraphError:
    return GraphError(190, message="Invalid OAuth access token - Cannot parse access token", http_status=401)


def unknown_object(object_id: str) -> GraphError:
    """Graph's answer for an id that does not exist or the token cannot see: code 100, subcode 33."""
    return GraphError(
        100,
        message=(
            f"Unsupported post request. Object with ID '{object_id}' does not exist, cannot be loaded due "
            "to missing permissions, or does not support this operation. Please read the Graph API "
            "documentation at https://developers.facebook.com/docs/graph-api"
        ),
        subcode=33,
        type="GraphMethodException",
    )
