"""The sending circuit breaker, shared by every instance through the database.

Account-level errors (190 token, 368 policy block, 131031 locked, 131042 payment, …) mean every
further send fails and may worsen the account's standing, so sending pauses until an admin has
fixed the cause and runs ``bridge sending resume``. The pause is visible in ``/health``.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.ops.alerts import raise_alert
from adapter.ops.tables import ServiceFlag
from adapter.storage.db import insert_ignoring_duplicates, transaction, utcnow

SENDING_PAUSED = "sending_paused"


def pause_sending(session: Session, reason: str) -> None:
    row = {"name": SENDING_PAUSED, "reason": reason[:300], "set_at": utcnow()}
    if insert_ignoring_duplicates(session, ServiceFlag, [row], "name"):  # several instances may race here
        raise_alert(session, f"{SENDING_PAUSED}:{utcnow():%Y%m%d%H%M%S}", "sending_paused", reason)


def sending_paused(engine: Engine) -> ServiceFlag | None:
    with Session(engine) as session:
        return session.get(ServiceFlag, SENDING_PAUSED)


def resume_sending(engine: Engine) -> bool:
    """Clears the pause; returns whether sending was paused."""
    with transaction(engine) as session:
        flag = session.get(ServiceFlag, SENDING_PAUSED)
        if flag is None:
            return False
        session.delete(flag)
        return True
