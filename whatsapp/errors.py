"""Cloud API errors, classified by what the caller must do next.

Implements Meta's "Error codes" reference for the WhatsApp Cloud API
(https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes) and the Graph API error
object it builds on (https://developers.facebook.com/docs/graph-api/guides/error-handling):
``{"error": {"message", "type", "code", "error_subcode"?, "error_data": {"details"}, "fbtrace_id"}}``.
Meta recommends branching on ``code`` (titles will be deprecated), so this module does exactly that.

The tree::

    WhatsAppError                   base: code, subcode, title, http_status, fbtrace_id, details
    ├── RetryableError              transient; the request was rejected or never left: retry with backoff
    │   ├── RecipientThrottledError 131056 pair rate limit: retry only this recipient, after ≥ 6 s
    │   └── AmbiguousSendError      timeout after sending, dropped connection, 5xx without a body:
    │                               the message MAY have been sent; reconcile before resending
    ├── WindowClosedError           131047: outside the 24-hour window; re-plan as a template
    ├── UndeliverableError          131026 and kin: this recipient cannot get it; dead letter + fallback
    ├── ConfigurationError          100, 132xxx, 131008/9, 133010 …: our request or setup is wrong;
    │                               dead letter and alert, never retry as is
    └── AccountBlockedError         190, 368, 131031, 131042 …: every send will fail; stop all sending
                                    (circuit breaker) until a person acts

Exception messages carry the code, title and trace id only: never the recipient, the message text or
Meta's ``details`` verbatim (details can quote parameter values). ``details`` is kept on the object,
with long digit runs (phone numbers) masked, for the dead-letter record.
"""

from __future__ import annotations

import re
from typing import Any

_DIGIT_RUN = re.compile(r"\+?\d[\d \-]{5,}\d")
_CODE_PREFIX = re.compile(r"^\(#\d+\)\s*")
PAIR_RATE_LIMIT_RETRY_SECONDS = 6.0  # Meta: about one message every 6 s to the same user


def _mask_digits(text: str) -> str:
    """Masks runs of 7+ digits, so a phone number quoted by Meta never reaches a log or a record."""
    return _DIGIT_RUN.sub("<number>", text)


class WhatsAppError(Exception):
    """A failed Cloud API call, with Meta's identifiers and nothing about the recipient."""

    def __init__(
        self,
        title: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        http_status: int | None = None,
        fbtrace_id: str | None = None,
        details: str | None = None,
    ) -> None:
        self.code = code
        self.subcode = subcode
        self.title = title
        self.http_status = http_status
        self.fbtrace_id = fbtrace_id
        self.details = _mask_digits(details) if details else None
        super().__init__(self._summary())

    def _summary(self) -> str:
        parts = [self.title]
        if self.code is not None:
            parts.append(f"code={self.code}" + (f"/{self.subcode}" if self.subcode is not None else ""))
        if self.http_status is not None:
            parts.append(f"http={self.http_status}")
        if self.fbtrace_id:
            parts.append(f"fbtrace_id={self.fbtrace_id}")
        return " ".join(parts)


class RetryableError(WhatsAppError):
    """Transient: throughput limits, Meta-side outages, or a request that never left this process."""


class RecipientThrottledError(RetryableError):
    """131056: too many messages to this one recipient; back off this recipient only."""

    def __init__(self, title: str, *, retry_after_seconds: float = PAIR_RATE_LIMIT_RETRY_SECONDS,
                 **kwargs: Any) -> None:
        self.retry_after_seconds = retry_after_seconds
        super().__init__(title, **kwargs)


class AmbiguousSendError(RetryableError):
    """The request left, but no verdict came back: Meta may have accepted and will deliver it.

    The Cloud API has no idempotency key, so resending blindly can message the patient twice. Reconcile
    first (status webhooks carry ``biz_opaque_callback_data``), then resend if nothing arrived.
    """


class WindowClosedError(WhatsAppError):
    """131047: more than 24 hours since the user last wrote; only a template can reach them now."""


class UndeliverableError(WhatsAppError):
    """This recipient cannot receive the message (not on WhatsApp, opted out of this kind, …)."""


class ConfigurationError(WhatsAppError):
    """The request or our setup is wrong (template, parameters, ids); retrying the same call fails again."""


class AccountBlockedError(WhatsAppError):
    """Credentials, policy, payment or registration: every send from this number will fail."""


# Code → class, per Meta's error-codes reference. Grouped by the action, with Meta's titles in comments.
ERROR_CLASSES: dict[int, type[WhatsAppError]] = {
    # Transient: Meta-side problems and throughput limits (app, WABA, phone-number level).
    1: RetryableError,  # API Unknown
    2: RetryableError,  # API Service (temporary downtime)
    4: RetryableError,  # API Too Many Calls (app rate limit)
    17: RetryableError,  # User request limit reached
    341: RetryableError,  # Application limit reached
    613: RetryableError,  # Calls to this API have exceeded the rate limit
    80007: RetryableError,  # Rate limit issues (WABA)
    130429: RetryableError,  # Rate limit hit (Cloud API throughput)
    131000: RetryableError,  # Something went wrong
    131016: RetryableError,  # Service unavailable
    131057: RetryableError,  # Account in maintenance mode (e.g. throughput upgrade)
    133004: RetryableError,  # Server temporarily unavailable
    133016: RetryableError,  # Account register/deregister rate limit exceeded
    # Pair rate limit.
    131056: RecipientThrottledError,  # (Business, Consumer) pair rate limit hit
    # 24-hour customer service window.
    131047: WindowClosedError,  # Re-engagement message
    # This recipient, this message: dead letter and fall back (SMS, staff call).
    131026: UndeliverableError,  # Message undeliverable (not on WhatsApp, old app, ToS not accepted)
    131049: UndeliverableError,  # Not delivered to maintain healthy ecosystem engagement
    131050: UndeliverableError,  # User stopped marketing messages
    130472: UndeliverableError,  # User's number is part of an experiment
    130497: UndeliverableError,  # Business restricted from messaging users in this country
    # Our request or setup: dead letter, alert a person, no retries.
    33: ConfigurationError,  # Parameter value is not valid (business phone number deleted)
    100: ConfigurationError,  # Invalid parameter
    131008: ConfigurationError,  # Required parameter is missing
    131009: ConfigurationError,  # Parameter value is not valid
    131021: ConfigurationError,  # Recipient cannot be sender
    131030: ConfigurationError,  # Recipient not in allowed list (test number)
    131051: ConfigurationError,  # Unsupported message type
    131052: ConfigurationError,  # Media download error
    131053: ConfigurationError,  # Media upload error
    131055: ConfigurationError,  # Method not allowed
    132000: ConfigurationError,  # Template param count mismatch
    132001: ConfigurationError,  # Template does not exist (name or language)
    132005: ConfigurationError,  # Template hydrated text too long
    132007: ConfigurationError,  # Template format character policy violated
    132008: ConfigurationError,  # Template parameter value invalid
    132012: ConfigurationError,  # Template parameter format mismatch
    132018: ConfigurationError,  # Template parameter issue (new-line, tab, > 4 spaces)
    132015: ConfigurationError,  # Template is paused (low quality)
    132016: ConfigurationError,  # Template is disabled
    132068: ConfigurationError,  # Flow is blocked
    132069: ConfigurationError,  # Flow is throttled
    133000: ConfigurationError,  # Incomplete deregistration
    133005: ConfigurationError,  # Two-step verification PIN mismatch
    133006: ConfigurationError,  # Phone number re-verification needed
    133008: ConfigurationError,  # Too many two-step verification PIN guesses
    133009: ConfigurationError,  # Two-step verification PIN guessed too fast
    133010: ConfigurationError,  # Phone number not registered on the platform
    133015: ConfigurationError,  # Wait before registering this phone number
    135000: ConfigurationError,  # Generic user error
    # Every send will fail: open the circuit breaker.
    0: AccountBlockedError,  # AuthException
    3: AccountBlockedError,  # API Method (capability or permissions)
    10: AccountBlockedError,  # Permission denied
    190: AccountBlockedError,  # Access token has expired / invalid
    368: AccountBlockedError,  # Temporarily blocked for policy violations
    131005: AccountBlockedError,  # Access denied
    131031: AccountBlockedError,  # Account has been locked
    131037: AccountBlockedError,  # Display name needs approval
    131042: AccountBlockedError,  # Business eligibility payment issue
    131045: AccountBlockedError,  # Incorrect certificate (registration)
    131048: AccountBlockedError,  # Spam rate limit hit: quality-based limit; more sends make it worse
}
# 200-299: API Permission (permission not granted or removed).
ERROR_CLASSES.update(dict.fromkeys(range(200, 300), AccountBlockedError))

_TITLES: dict[int, str] = {
    1: "API unknown", 2: "API service unavailable", 4: "Application rate limit",
    100: "Invalid parameter", 190: "Access token invalid or expired", 368: "Temporarily blocked for policy",
    130429: "Throughput rate limit hit", 131000: "Something went wrong", 131008: "Required parameter missing",
    131009: "Parameter value not valid", 131016: "Service unavailable", 131026: "Message undeliverable",
    131031: "Account locked", 131042: "Business payment issue", 131047: "Re-engagement window closed",
    131048: "Spam rate limit hit", 131049: "Not delivered for ecosystem engagement",
    131050: "User stopped marketing messages", 131056: "Pair rate limit hit",
    132000: "Template parameter count mismatch", 132001: "Template does not exist",
    132005: "Template text too long", 132007: "Template character policy violated",
    132012: "Template parameter format mismatch", 132015: "Template paused", 132016: "Template disabled",
    133004: "Server temporarily unavailable", 133010: "Phone number not registered",
}


def error_class_for(code: int | None, http_status: int | None) -> type[WhatsAppError]:
    """The class for a Meta error code; unknown codes fall back on the HTTP status."""
    if code is not None and code in ERROR_CLASSES:
        return ERROR_CLASSES[code]
    if http_status is None:
        return ConfigurationError
    if http_status == 429 or http_status >= 500:
        return RetryableError
    if http_status in (401, 403):
        return AccountBlockedError
    # An unknown 4xx is a request Meta refused on purpose: retrying the same bytes cannot help.
    return ConfigurationError


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def classify(http_status: int, body: dict[str, Any] | None) -> WhatsAppError:
    """Turns a non-2xx Cloud API response into the exception the caller should handle.

    ``body`` is the parsed JSON response, or ``None`` when there was no JSON body. A 5xx with no error
    body is ambiguous: a proxy or load balancer may have failed after Meta accepted the message.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        if http_status >= 500:
            return AmbiguousSendError("Server error without an error body", http_status=http_status)
        cls = error_class_for(None, http_status)
        return cls(f"HTTP {http_status} without an error body", http_status=http_status)
    code = _int_or_none(error.get("code"))
    subcode = _int_or_none(error.get("error_subcode"))
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    fbtrace_id = error.get("fbtrace_id")
    return from_error_fields(
        code=code,
        subcode=subcode,
        message=str(error.get("message") or ""),
        details=str(details) if details is not None else None,
        http_status=http_status,
        fbtrace_id=str(fbtrace_id) if fbtrace_id else None,
    )


def from_error_fields(
    *,
    code: int | None,
    message: str = "",
    subcode: int | None = None,
    details: str | None = None,
    http_status: int | None = None,
    fbtrace_id: str | None = None,
) -> WhatsAppError:
    """Builds the classified error from Meta's fields; also used for a ``failed`` status webhook's errors."""
    cls = error_class_for(code, http_status)
    title = _TITLES.get(code, "") if code is not None else ""
    if not title:
        title = _mask_digits(_CODE_PREFIX.sub("", message))[:160] or "Cloud API error"
    return cls(title, code=code, subcode=subcode, http_status=http_status, fbtrace_id=fbtrace_id,
               details=details)
