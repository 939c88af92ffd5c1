"""Pushing chained audit records to the EHR's FHIR server as BALP AuditEvents (when
``audit_push_to_ehr``), so the hospital's central audit repository holds them too (IHE BALP,
https://profiles.ihe.net/ITI/BALP/; FHIR R4 update, https://hl7.org/fhir/R4/http.html#update).

Records go in chain order. Each is written with ``PUT AuditEvent/bridge-<id>`` (update as create):
a record pushed twice, e.g. after a crash between the write and remembering it, or by two
instances at once, lands on the same resource instead of duplicating. The highest pushed ``seq`` is
kept in the ``service_flag`` row ``audit_pushed_seq`` (the audit tables are insert-only, and this
is service state, not an audit record), advanced after every batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.balp import to_audit_event
from adapter.audit.tables import AuditChain, AuditEvent
from adapter.ops.tables import ServiceFlag
from adapter.storage.db import transaction, upsert, utcnow

PUSHED_FLAG = "audit_pushed_seq"
log = logging.getLogger(__name__)


class AuditSink(Protocol):
    """What a push needs of :class:`ehr.client.FhirClient`."""

    async def update(self, resource: dict[str, Any], if_match: str | None = None) -> dict[str, Any]: ...


def pushed_seq(engine: Engine) -> int:
    """The highest seq pushed so far (0 before the first push)."""
    with Session(engine) as session:
        flag = session.get(ServiceFlag, PUSHED_FLAG)
    return int(flag.reason) if flag is not None else 0


def _remember(engine: Engine, seq: int) -> None:
    with transaction(engine) as session:
        current = session.get(ServiceFlag, PUSHED_FLAG)
        if current is not None and int(current.reason) >= seq:  # another instance got further: never go back
            return
        upsert(session, ServiceFlag, {"name": PUSHED_FLAG, "reason": str(seq), "set_at": utcnow()}, "name",
               ["reason", "set_at"])


def _batch(engine: Engine, after: int, size: int) -> list[tuple[AuditEvent, int]]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent, AuditChain.seq)
                            .join(AuditChain, col(AuditChain.event_id) == col(AuditEvent.id))
                            .where(col(AuditChain.seq) > after).order_by(col(AuditChain.seq)).limit(size)).all()
    return [(event, int(seq)) for event, seq in rows]


async def push_audit_events(engine: Engine, fhir_client: AuditSink, *, batch: int = 100,
                            observer: str = "fhir-whatsapp-bridge") -> int:
    """Pushes every chained record not pushed yet; returns how many were pushed. A failure raises
    the client's error after remembering the records pushed before it."""
    pushed = 0
    after = await asyncio.to_thread(pushed_seq, engine)
    while True:
        rows = await asyncio.to_thread(_batch, engine, after, batch)
        if not rows:
            return pushed
        done = after
        try:
            for event, seq in rows:
                await fhir_client.update(to_audit_event(event, seq, source_observer=observer))
                done, pushed = seq, pushed + 1
        finally:
            if done > after:
                await asyncio.to_thread(_remember, engine, done)
        after = done


async def keep_pushing(engine: Engine, fhir_client: AuditSink, stop_event: asyncio.Event, *,
                       every_seconds: float = 30.0, observer: str = "fhir-whatsapp-bridge",
                       is_leader: Callable[[], bool] | None = None) -> None:
    """Pushes new records every ``every_seconds`` until ``stop_event``; an unreachable EHR is logged
    (error type only) and retried next round, from the last record it accepted."""
    while not stop_event.is_set():
        try:  # several instances: only the leader pushes, so each record is PUT once per round
            leading = is_leader is None or await asyncio.to_thread(is_leader)
            count = await push_audit_events(engine, fhir_client, observer=observer) if leading else 0
            if count:
                log.info("pushed %d audit records to the EHR", count)
        except Exception as error:  # the EHR being down must not stop the service; the next round resumes
            log.warning("could not push audit records to the EHR (%s); retrying in %ss", type(error).__name__,
                        int(every_seconds))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), every_seconds)
