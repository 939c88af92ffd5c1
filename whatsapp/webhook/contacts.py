"""Completing a sender's or recipient's ids from the ``contacts[]`` of the same webhook value.

Implements Meta's "Business-scoped user IDs" (2026, developers.facebook.com/documentation/business-messaging/
whatsapp/business-scoped-user-ids): ``contacts[]`` carry ``user_id`` (BSUID, e.g. ``US.1000000000000000001``)
and ``wa_id`` only when the phone number may be shared; a message may lack ``from`` and carry
``from_user_id``, a status may lack ``recipient_id`` and carry ``recipient_user_id``. The missing one of the
two is taken from the matching contact (same ``wa_id`` / ``user_id``, or the only contact when it
contradicts neither). The contact's profile name and username are deliberately not read: personal data
this service does not need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from whatsapp.webhook.fields import list_field, opt_str


@dataclass(frozen=True, slots=True)
class Contact:
    """The two ids of one ``contacts[]`` item (either may be absent)."""

    wa_id: str | None
    user_id: str | None


def read_contacts(value: dict[str, Any], where: str) -> list[Contact]:
    return [Contact(opt_str(c.get("wa_id")) or None, opt_str(c.get("user_id")) or None)
            for c in list_field(value, "contacts", where) if isinstance(c, dict)]


def complete(wa_id: str | None, user_id: str | None, contacts: list[Contact]) -> tuple[str | None, str | None]:
    """Fills the missing one of (phone id, BSUID) from the contact that names the same user."""
    if (wa_id and user_id) or not contacts:
        return wa_id, user_id
    match = next((c for c in contacts if (wa_id and c.wa_id == wa_id) or (user_id and c.user_id == user_id)),
                 None)
    if match is None and len(contacts) == 1:
        only = contacts[0]
        if (not wa_id or only.wa_id in (None, wa_id)) and (not user_id or only.user_id in (None, user_id)):
            match = only
    if match is None:
        return wa_id, user_id
    return wa_id or match.wa_id, user_id or match.user_id
