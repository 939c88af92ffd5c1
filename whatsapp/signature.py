"""Webhook payload signatures: ``X-Hub-Signature-256``.

Implements Meta's "Validating payloads" (https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads):
Meta signs each webhook POST with HMAC-SHA256 over the raw request body, keyed with the app secret,
and sends ``X-Hub-Signature-256: sha256=<lowercase hex>``.

The signature must be checked over the exact bytes received. Meta escapes ``/`` as ``\\/`` and non-ASCII
as ``\\uXXXX``; parsing then re-serialising the JSON produces different bytes and a different digest.
Verification fails closed: no header, a malformed header or no usable secret all mean "not from Meta".
Several secrets may be accepted at once, so an app secret can be rotated without dropping webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

HEADER = "X-Hub-Signature-256"
_PREFIX = "sha256="
_HEX_LENGTH = 64


def sign(body: bytes, secret: bytes) -> str:
    """The header value Meta would send for ``body``: ``sha256=<hex>``."""
    return _PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secrets: Sequence[bytes]) -> bool:
    """True if ``header`` is a valid signature of the raw ``body`` under any of ``secrets``."""
    if not header or not header.startswith(_PREFIX):
        return False
    received = header[len(_PREFIX):].strip().lower()
    if len(received) != _HEX_LENGTH:
        return False
    received_bytes = received.encode("ascii", errors="replace")
    matched = False
    for secret in secrets:
        if not secret:  # an empty secret would make signatures forgeable: never accept it
            continue
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode("ascii")
        # No early exit: the time taken does not depend on which secret matched.
        matched |= hmac.compare_digest(expected, received_bytes)
    return matched
