"""Reading an outbox row's sealed message body in tests (adapter.outbox.encoding), under the test key."""

from __future__ import annotations

import json
from typing import Any

from adapter.outbox.encoding import open_body
from adapter.outbox.tables import OutboxMessage
from adapter.security.crypto import FieldCipher
from tests.support.stores import TEST_KEY


def body(row: OutboxMessage, column: str = "payload", cipher: FieldCipher | None = None) -> dict[str, Any]:
    """The row's ``payload`` (or ``fallback``) as the message body it seals; ``{}`` for none. The
    cipher is the service's (``outbox.cipher``), by default the test stores' one."""
    return open_body(cipher or FieldCipher(TEST_KEY), row.natural_key, getattr(row, column))


def body_text(row: OutboxMessage, column: str = "payload", cipher: FieldCipher | None = None) -> str:
    """The body as compact JSON text ("" for none), for tests that look for a word in it."""
    opened = body(row, column, cipher)
    return json.dumps(opened, ensure_ascii=False) if opened else ""
