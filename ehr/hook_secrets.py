"""Per-subscription shared secrets for rest-hook notifications.

R4 rest-hook channels can carry HTTP headers that the EHR sends with every notification
(``Subscription.channel.header``, https://hl7.org/fhir/R4/subscription.html#channels). Every EHR
supports that, unlike payload signing, so the bridge authenticates notifications with
``Authorization: Bearer <secret>``. Each subscription gets its own secret, derived from one master
secret, so a secret leaked from one Subscription resource cannot be replayed on another endpoint,
and rotating the master secret rotates them all (``ensure_subscriptions`` rewrites the headers).

Medplum can sign instead (https://www.medplum.com/docs/subscriptions/subscription-extensions#signatures):
a Subscription carrying the extension :data:`MEDPLUM_SECRET_EXTENSION` (``valueString`` = the secret)
is delivered with ``X-Signature`` = lower-case hex HMAC-SHA256 of the request body keyed with that
secret. The same derived per-key secret serves as that key; a signature also binds the body, so a
notification altered on the way is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal

NotifyAuth = Literal["header", "medplum-signature"]
"""How a subscription's notifications prove their origin: the ``Authorization`` channel header, or
Medplum's ``X-Signature`` body signature."""
NOTIFY_AUTHS: tuple[NotifyAuth, ...] = ("header", "medplum-signature")
MEDPLUM_SECRET_EXTENSION = "https://www.medplum.com/fhir/StructureDefinition/subscription-secret"  # noqa: S105 (a URL)
SIGNATURE_HEADER = "X-Signature"

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


def body_signature(secret: str, body: bytes) -> str:
    """What Medplum sends in ``X-Signature``: HMAC-SHA256 of the raw body keyed with the secret's
    UTF-8 bytes, lower-case hex (Node's ``createHmac('sha256', secret).update(body).digest('hex')``)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_signature(signature: str | None, body: bytes, secret: str) -> bool:
    """True when ``signature`` is :func:`body_signature` of ``body`` (hex case-insensitive),
    compared in constant time."""
    if not signature or not secret:
        return False
    presented = signature.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(presented, body_signature(secret, body).encode("ascii"))
