"""Graph API error bodies, as the Cloud API returns them.

Shape from Meta's "Error codes" reference: ``{"error": {"message", "type", "code", "error_data":
{"messaging_product", "details"}, "error_subcode"?, "fbtrace_id"}}``; ``message`` starts with ``(#code)``.
HTTP statuses follow the reference's table (e.g. 132001 → 404, 131000 → 500, 190 → 401).
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
    131056: "(Business, Consumer) pair rate limit hit",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132005: "Translated text too long",
    133004: "Server temporarily unavailable",
    368: "Temporarily blocked for policies violations",
    131031: "Business Account locked",
}
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

    @property
    def status(self) -> int:
        return self.http_status or HTTP_STATUS.get(self.code, 400)

    def body(self) -> bytes:
        return error_body(self.code, self.details, message=self.message, subcode=self.subcode,
                          error_type=self.type)


def fbtrace_id() -> str:
    return secrets.token_urlsafe(17)[:23]


def error_body(
    code: int,
    details: str = "",
    *,
    message: str | None = None,
    subcode: int | None = None,
    error_type: str = "OAuthException",
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
