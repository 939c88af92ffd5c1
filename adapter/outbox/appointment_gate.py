"""Nothing about an appointment to come goes out once that appointment has started.

The decide step queues a confirmation, a reminder or a change or cancellation notice only before the
start (:func:`adapter.scheduling.decision.start_bound`), and writes that start in
``outbox.appointment_start``. A row can still come due after it: held by quiet hours or pacing, during a
sending pause or an outage. At claim (:func:`adapter.outbox.claims.claim_due`) such a row is suppressed
with the reason ``appointment_started``, the reason the decide step records as a skip. Messages without
a start (results ready, the satisfaction survey, chat replies) are not concerned.
"""

from __future__ import annotations

from datetime import UTC, datetime

from adapter.outbox.tables import OutboxMessage

STARTED = "appointment_started"


def started(row: OutboxMessage, now: datetime) -> bool:
    """True if ``row`` speaks of an appointment whose start is ``now`` or earlier."""
    start = row.appointment_start
    if start is None:
        return False
    return (start if start.tzinfo is not None else start.replace(tzinfo=UTC)) <= now
