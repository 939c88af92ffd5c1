"""The state changes the operator pages make, each audited as the admin API audits its own
(:mod:`adapter.http.admin_api`: kind ``admin``, the principal as agent with its role, the client's address,
``detail.op``), and each made by the module that owns the state, as the CLI makes it:

- alert ack: :func:`adapter.ops.alerts.acknowledge`;
- dead-letter retry: :meth:`adapter.outbox.store.OutboxStore.redrive` (``bridge dead-letters retry``);
- resume / pause: :mod:`adapter.outbox.circuit_breaker` (``POST /admin/sending/resume|pause``);
- template sync: :func:`adapter.outbox.template_sync.sync` (``bridge templates sync``);
- replay: the EHR's current version decided again (``bridge replay``): what was already sent is not sent
  twice, the outbox's natural keys still hold it.

A change that ends in a refusal (no such alert, not a dead letter) is still audited, with its outcome, so
the trail shows what was tried. Patient references reach the audit entry's patient field only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.trail import Action, AuditEntry, DetailValue, Kind, Outcome, record
from adapter.feeds.replay import forget_decisions
from adapter.ops.alerts import acknowledge
from adapter.ops.tables import ServiceFlag
from adapter.outbox.circuit_breaker import SENDING_PAUSED, pause_sending, resume_sending
from adapter.outbox.tables import OutboxMessage
from adapter.outbox.template_sync import sync
from adapter.scheduling.decision import Decision
from adapter.security.roles import Principal
from adapter.service import Service
from adapter.storage.db import transaction
from ehr.errors import FhirError, FhirNotFoundError
from whatsapp.errors import WhatsAppError
from whatsapp.template_sync import SyncReport

MAX_ROW_ID = 2**31 - 1  # row ids are 4-byte integer keys (PostgreSQL ``integer``), as adapter.http.admin_api
# FHIR's resource type and id grammar (http://hl7.org/fhir/R4/datatypes.html#id): a reference that cannot
# name a resource is refused before any EHR call.
REFERENCE = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")
PATIENT_REFERENCE = re.compile(r"Patient/[A-Za-z0-9\-.]{1,64}")


class ReplayError(Exception):
    """The replay could not run: the reference names nothing the EHR holds, or the EHR did not answer."""


@dataclass(frozen=True)
class Actor:
    """Who changes something from the console, and from where (the audit entry's agent and source)."""

    principal: Principal
    source: str | None


def audit(engine: Engine, actor: Actor, action: Action, op: str, *, entity: str | None = None,
          patient: str | None = None, outcome: Outcome = Outcome.SUCCESS, **detail: DetailValue) -> None:
    with transaction(engine) as session:
        record(session, entry(actor, action, op, entity=entity, patient=patient, outcome=outcome, **detail))


def entry(actor: Actor, action: Action, op: str, *, entity: str | None = None, patient: str | None = None,
          outcome: Outcome = Outcome.SUCCESS, **detail: DetailValue) -> AuditEntry:
    return AuditEntry(Kind.ADMIN, action, outcome=outcome, agent=actor.principal.agent,
                      agent_role=actor.principal.role.value, source=actor.source, patient_ref=patient,
                      entity_ref=entity, detail={"op": op, "via": "console", **detail})


def ack_alert(engine: Engine, actor: Actor, alert_id: int) -> bool:
    """Acknowledges one open alert; False when none is open with this id."""
    done = acknowledge(engine, alert_id) if 1 <= alert_id <= MAX_ROW_ID else 0
    audit(engine, actor, Action.UPDATE, "alert-ack", entity=f"alert/{alert_id}",
          outcome=Outcome.SUCCESS if done else Outcome.MINOR_FAILURE)
    return bool(done)


def retry_dead_letter(service: Service, actor: Actor, outbox_id: int) -> tuple[bool, str]:
    """Queues a dead letter again and wakes the sender; (queued, what happened in words)."""
    if not 1 <= outbox_id <= MAX_ROW_ID:
        said, queued = f"no outbox message {outbox_id}", False
    else:
        before = _state(service.engine, outbox_id)
        said = service.outbox.redrive(outbox_id)
        # The sender's tick may already have claimed it: anything but "dead" now means it left the dead letters.
        queued = before == "dead" and _state(service.engine, outbox_id) not in (None, "dead")
    audit(service.engine, actor, Action.UPDATE, "dead-letter-retry", entity=f"outbox/{outbox_id}",
          outcome=Outcome.SUCCESS if queued else Outcome.MINOR_FAILURE)
    if queued and service.pipeline is not None:
        service.pipeline.wake()
    return queued, said


def _state(engine: Engine, outbox_id: int) -> str | None:
    with Session(engine) as session:
        row = session.get(OutboxMessage, outbox_id)
        return row.state if row is not None else None


def resume(service: Service, actor: Actor) -> bool:
    """Resumes sending (held messages go at once); returns whether it was paused."""
    changed = resume_sending(service.engine)
    audit(service.engine, actor, Action.UPDATE, "resume", entity=f"service_flag/{SENDING_PAUSED}", changed=changed)
    if service.pipeline is not None:
        service.pipeline.wake()
    return changed


def pause(engine: Engine, actor: Actor, reason: str) -> bool:
    """Pauses all sending with a stated reason, in the audit entry's transaction; whether it changed."""
    with transaction(engine) as session:
        already = session.get(ServiceFlag, SENDING_PAUSED) is not None
        pause_sending(session, f"paused by {actor.principal.agent}: {reason}")
        record(session, entry(actor, Action.UPDATE, "pause", entity=f"service_flag/{SENDING_PAUSED}"))
    return not already


async def sync_templates(service: Service, actor: Actor) -> SyncReport:
    """Creates the catalogue's templates the WABA lacks and records every review state. Raises
    :class:`whatsapp.errors.WhatsAppError` when the WABA cannot be reached (audited as a failure)."""
    try:
        report = await sync(service.settings, service.engine, service.catalogue)
    except WhatsAppError:
        audit(service.engine, actor, Action.EXECUTE, "templates-sync", outcome=Outcome.SERIOUS_FAILURE)
        raise
    audit(service.engine, actor, Action.EXECUTE, "templates-sync", templates=len(report.items),
          failed=len(report.failed))
    return report


async def replay(service: Service, actor: Actor, reference: str) -> Decision:
    """Re-reads ``reference`` from the EHR and decides it again, as ``bridge replay`` does: the resource's
    remembered version is forgotten, and so are its dead letters that never had a payload (blocked before
    one was built) and its skips (recorded again if they still hold), so the rules fire anew."""
    if not REFERENCE.fullmatch(reference):
        raise ReplayError("give a reference such as Appointment/123")
    if service.fhir is None or service.pipeline is None:
        raise ReplayError("the service is not running")
    resource_type, _, resource_id = reference.partition("/")
    try:
        resource = await service.fhir.read(resource_type, resource_id)
    except FhirNotFoundError:
        audit(service.engine, actor, Action.EXECUTE, "replay", entity=reference, outcome=Outcome.MINOR_FAILURE)
        raise ReplayError(f"the EHR holds no {reference}") from None
    except FhirError as error:
        audit(service.engine, actor, Action.EXECUTE, "replay", entity=reference, outcome=Outcome.SERIOUS_FAILURE)
        raise ReplayError(f"the EHR did not answer ({type(error).__name__})") from error
    with transaction(service.engine) as session:
        record(session, entry(actor, Action.EXECUTE, "replay", entity=reference))
        forget_decisions(session, resource_type, resource_id)
    decision = await service.pipeline.handle_resource(resource)
    service.pipeline.wake()
    return decision
