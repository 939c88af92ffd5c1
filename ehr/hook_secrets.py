"""Per-subscription shared secrets for rest-hook notifications.

R4 rest-hook channels can carry HTTP headers that the EHR sends with every notification
(``Subscription.channel.header``, https://hl7.org/fhir/R4/subscription.html#channels). Every EHR
supports that, unlike payload signing, so the bridge authenticates notifications with
``Authorization: Bearer <secret>``. Each subscription gets its own secret, derived from one master
secret, so a secret leaked from one Subscription resource cannot be replayed on another endpoint,
and rotating the master secret rotates them all (``ensure_subscriptions`` rewrites the headers).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

# Domain separation: the master secret may be reused for other derivations later.
_CONTEXT = b"fhir-whatsapp-bridge/ehr-notify/v1\x00"
_MIN_MASTER_BYTES = 16


def derive_secret(master: bytes, subscription_key: str) -> str:
    """HMAC-SHA256(master, context || key), URL-safe base64 without padding (43 characters)."""
    if len(master) < _MIN_MASTER_BYTES:
        raise ValueError(f"the master hook secret must be at least {_MIN_MASTER_BYTES} bytes")
    digest = hmac.new(master, _CONTEXT + subscription_key.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_header(secret: str) -> str:
    """The ``Authorization`` header *value* a notification carries: ``"Bearer <secret>"``."""
    return f"Bearer {secret}"


def channel_header(secret: str) -> str:
    """The ``Subscription.channel.header`` entry that makes the EHR send it:
    ``"Authorization: Bearer <secret>"`` (R4 channel headers are whole ``Name: value`` lines)."""
    return f"Authorization: {authorization_header(secret)}"


def verify_header(header_value: str | None, expected: str) -> bool:
    """True when ``header_value`` is ``Bearer <expected>`` (scheme case-insensitive, RFC 9110
    section 11.1); the secret is compared in constant time."""
    if not header_value or not expected:
        return False
    scheme, _, credentials = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode("utf-8"), expected.encode("utf-8"))
