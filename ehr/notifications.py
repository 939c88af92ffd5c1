"""What the EHR told us, reduced to references: the unit the intake stores in the inbox.

A notification is never trusted as current state (DESIGN.md, invariants): the intake keeps only
*which* resource changed (and the version the EHR claimed), never the payload, so no PHI from a
notification body is ever persisted. The pipeline re-reads the resource by id before acting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

NotificationKind = Literal["ping", "resource"]
# FHIR's ``id`` datatype (https://hl7.org/fhir/R4/datatypes.html#id): [A-Za-z0-9\-\.]{1,64}, matched
# whole (``re.fullmatch``: ``$`` alone would let a trailing newline through).
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def is_fhir_id(value: str) -> bool:
    """Whether ``value`` is a FHIR ``id`` that can name a resource: the grammar, but not ``.`` or ``..``,
    which the grammar allows and which, in a URL, name no resource (``Appointment/..`` is the base)."""
    return value not in (".", "..") and _FHIR_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class IncomingNotification:
    """One change the EHR reported on one of our subscriptions.

    ``kind="ping"``: an empty-body rest-hook notification; the pipeline queries what changed.
    ``kind="resource"``: a resource reference (from a PUT/POST body, a Bundle entry or the URL).
    ``version_id`` is the version the EHR claimed, if any; it is only used for dedupe. Both are
    FHIR ids (:func:`is_fhir_id`); the intake refuses a notification naming anything else.
    """

    subscription_key: str
    kind: NotificationKind
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: str | None = None


class NotificationSink(Protocol):
    """Port: durable storage for incoming notifications (the inbox).

    ``accept`` must persist every item (deduplicated) before it returns, so that the HTTP
    answer to the EHR is only sent once nothing can be lost. Returns how many were new.
    """

    def accept(self, items: list[IncomingNotification]) -> int: ...
