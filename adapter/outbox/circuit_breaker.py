"""The sending circuit breaker, shared by every instance through the database.

Account-level errors (190 token, 368 policy block, 131031 locked, 131042 payment, …) mean every
further send fails and may worsen the account's standing, so sending pauses until an admin has
fixed the cause and runs ``bridge sending resume`` (or ``POST /admin/sending/resume``). The pause is
visible in ``/health``.

Resuming makes every message the pause held due at once, in the resume's transaction: the message Meta
refused with the account-level error and those of its batch left unsent (both put back a minute later by
:mod:`adapter.outbox.dispatch`, or by a ``failed`` status in :mod:`adapter.outbox.statuses`). Messages
that came due during the pause were never claimed and are due already. Nothing else moves: a row waiting
for quiet hours, pacing, template review or a transient error's backoff keeps its time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.ops.alerts import raise_alert
from adapter.ops.tables import ServiceFlag
from adapter.outbox.tables import OutboxMessage
from adapter.storage.db import insert_ignoring_duplicates, table_of, transaction, utcnow
from whatsapp.errors import AccountBlockedError

log = logging.getLogger(__name__)
SENDING_PAUSED = "sending_paused"
# The ``last_error_class`` of a row the pause held: the account-level error itself, or "SendingPaused"
# (a row of that error's batch, not sent: adapter.outbox.dispatch).
HELD_CLASSES = ("SendingPaused", AccountBlockedError.__name__,
                *(cls.__name__ for cls in AccountBlockedError.__subclasses__()))
# Such a row was put back one minute after the error or status (PAUSED_RECHECK, adapter.outbox.dispatch),
# at the latest just before the resume; twice that covers instances' clocks. A row of an earlier pause
# that the claim later deferred further (quiet hours, template review) is not moved.
HELD_WITHIN = timedelta(minutes=2)


def pause_sending(session: Session, reason: str) -> None:
    row = {"name": SENDING_PAUSED, "reason": reason[:300], "set_at": utcnow()}
    if insert_ignoring_duplicates(session, ServiceFlag, [row], "name"):  # several instances may race here
        raise_alert(session, f"{SENDING_PAUSED}:{utcnow():%Y%m%d%H%M%S}", "sending_paused", reason)


def sending_paused(engine: Engine) -> ServiceFlag | None:
    with Session(engine) as session:
        return session.get(ServiceFlag, SENDING_PAUSED)


def resume_sending(engine: Engine) -> bool:
    """Clears the pause and makes the messages it held due now (:func:`release_held`); returns whether
    sending was paused."""
    with transaction(engine) as session:
        flag = session.get(ServiceFlag, SENDING_PAUSED)
        if flag is None:
            return False
        session.delete(flag)
        released = release_held(session, utcnow())
    log.info("sending resumed; %d held message(s) due now", released)
    return True


def release_held(session: Session, now: datetime) -> int:
    """One UPDATE: queued rows the pause held (:data:`HELD_CLASSES`, due within :data:`HELD_WITHIN`)
    become due ``now``; returns how many."""
    outbox = table_of(OutboxMessage).c
    result = session.execute(update(table_of(OutboxMessage)).where(
        outbox.state == "queued", outbox.last_error_class.in_(HELD_CLASSES),
        outbox.due_at > now, outbox.due_at <= now + HELD_WITHIN).values(due_at=now, updated_at=now))
    return int(getattr(result, "rowcount", 0) or 0)
