"""Decide: turn one EHR resource version into messages, skips or nothing.

A handler that reads like a recipe (cosmicpython): guard clauses, resolve, map, act, record.

1. The resource is re-read from the EHR by the caller — never trusted from a notification.
2. A version already processed is a no-op (``resource_state``).
3. Rules fire on *transitions* (status entering a set), so a booked appointment notifies once
   per booking, and a report once per report (or per release, by setting).
4. For each firing rule: patient → mobile number → opt-in → language → render (typed, allow-listed
   parameters only) → PHI guard → outbox. Every "no" is recorded as a skip with its reason.

All database effects of one version happen in one transaction, with the inbox event marked done,
and so do its audit entries (:func:`adapter.audit.fhir_access.decide_reads`): a ``patient-read`` of
the re-read resource and of the Patient read for its telecom and language (BALP PatientRead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.fhir_access import decide_reads
from adapter.audit.trail import record as audit
from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import ResourceState
from adapter.outbox.action_tokens import insert_tokens, mint_action_token
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import ActionToken, NotificationSkip
from adapter.recipients.consent import ConsentSource
from adapter.scheduling.reminders import ReminderPlanner, policy_from_settings
from adapter.scheduling.survey import queue_survey
from adapter.settings import Settings
from adapter.storage.db import transaction, utcnow
from ehr.patient import mobile_number, patient_reference, preferred_language
from mappings.phi_guard import PhiLeakError, check, identifying_strings
from mappings.policy import PhiProfile
from mappings.render import RenderContext, RenderError, render
from mappings.rules import Repeat, Rule, RuleSet
from portal_links.store import LinkStore
from whatsapp.catalogue import TemplateCatalogue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecideConfig:
    profile: PhiProfile
    zone: ZoneInfo
    site_labels: dict[str, str]
    default_site_label: str
    default_language: str
    default_phone_region: str
    report_policy: Repeat


@dataclass
class Decision:
    """What one version produced (for logs, tests and the benchmark)."""

    resource_ref: str
    duplicate: bool = False
    queued: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    # What this decision already looked up, so its confirmation and reminders read each once: opt-in
    # per patient, and the contact's number index per (patient, number). Nothing in the step changes them.
    consent: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)
    contact_keys: dict[tuple[str, str], bytes] = field(default_factory=dict, repr=False, compare=False)


def resource_ref(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def version_of(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta") or {}
    version = meta.get("versionId")
    return str(version) if version is not None else None


class Decider:
    def __init__(self, engine: Engine, rules: RuleSet, catalogue: TemplateCatalogue, consent: ConsentSource,
                 outbox: OutboxStore, links: LinkStore, config: DecideConfig) -> None:
        self.engine = engine
        self.rules = rules
        self.catalogue = catalogue
        self.consent = consent
        self.outbox = outbox
        self.links = links
        self.config = config
        self.reminders: ReminderPlanner | None = None  # set by the composition root (attach, below)
        self.surveys = False  # setting survey_enabled (adapter.scheduling.survey), set by the composition root

    # --- read-only pre-checks, so the EHR is not asked for a patient we will not need

    def last_seen(self, resource: dict[str, Any]) -> tuple[str | None, str | None]:
        """(version, status) of the resource when it was last processed; (None, None) if never."""
        with Session(self.engine) as session:
            state = session.get(ResourceState, (resource.get("resourceType"), resource.get("id")))
            return (state.version_id, state.status) if state else (None, None)

    def firing_rules(self, resource: dict[str, Any], previous_status: str | None = None) -> list[Rule]:
        """Rules whose status set the resource just entered (a new resource enters from nothing)."""
        return self.rules.firing(str(resource.get("resourceType")), previous_status, resource.get("status"))

    # --- the transactional step

    def record(self, resource: dict[str, Any], patient: dict[str, Any] | None,
               inbox_event_id: int | None = None, related: Sequence[dict[str, Any]] = ()) -> Decision:
        """Applies one version: outbox rows, skips, resource state and inbox, in one transaction.
        ``related``: the practitioners, locations, … it references, whose names the guard checks too."""
        ref, version = resource_ref(resource), version_of(resource)
        decision = Decision(resource_ref=ref)
        with transaction(self.engine) as session:
            state = session.exec(
                select(ResourceState)
                .where(col(ResourceState.resource_type) == resource["resourceType"],
                       col(ResourceState.resource_id) == resource["id"])
                .with_for_update()
            ).first()
            decision.duplicate = state is not None and version is not None and state.version_id == version
            rules = [] if decision.duplicate else self.firing_rules(resource, state.status if state else None)
            # The reads first: whatever fails later in this step rolls them back with it. The caller
            # read the Patient only when a rule fired (adapter.pipeline.handle_resource).
            audit(session, *decide_reads(resource, patient, patient_reference(resource), bool(rules)))
            if not decision.duplicate:
                for rule in rules:
                    self._apply_rule(session, rule, resource, patient, related, decision)
                self._plan_reminders(session, resource, patient, related, decision)
                if (self.surveys and resource.get("resourceType") == "Appointment"
                        and resource.get("status") == "fulfilled" and (state.status if state else None) != "fulfilled"):
                    key = queue_survey(session, self.outbox, self.outbox.contacts, self.consent, resource,
                                       patient_reference(resource), self.config.default_language)
                    decision.queued.extend([key] if key else [])
                state = state or ResourceState(resource_type=resource["resourceType"], resource_id=resource["id"],
                                               processed_at=utcnow())
                state.version_id, state.status = version, resource.get("status")
                state.last_updated = (resource.get("meta") or {}).get("lastUpdated")
                state.processed_at = utcnow()
                session.add(state)
            if inbox_event_id is not None:
                InboxStore.mark_done(session, inbox_event_id)
        return decision

    def _plan_reminders(self, session: Session, resource: dict[str, Any], patient: dict[str, Any] | None,
                        related: Sequence[dict[str, Any]], decision: Decision) -> None:
        """Keeps the Appointment's reminder rows equal to this version (:mod:`adapter.scheduling.reminders`)."""
        if self.reminders is None or resource.get("resourceType") != "Appointment":
            return

        def enqueue(session: Session, reminder: Rule, key: str, due_at: datetime) -> bool:
            if any(rule_id == reminder.id for rule_id, _ in decision.skipped):
                return False  # one skip per version says it all (and a second would repeat its key)
            # reconcile read that no row has this key, in this transaction: no second look
            self._apply_rule(session, reminder, resource, patient, related, decision, key=key, due_at=due_at,
                             known_new=True)
            return key in decision.queued

        for rule in self.rules.for_resource("Appointment"):
            if rule.reminder is not None:
                self.reminders.reconcile(session, rule, resource, patient_reference(resource),
                                         enqueue if patient is not None else None)

    def _natural_key(self, rule: Rule, resource: dict[str, Any]) -> str:
        """The outbox key that makes a message effectively-once: per resource for ``once`` rules,
        per version otherwise (each re-entry into the status is a new message)."""
        ref = resource_ref(resource)
        if rule.repeat_policy(self.config.report_policy) == "once":
            return f"{rule.id}:{ref}"
        return f"{rule.id}:{ref}/_history/{version_of(resource)}"

    def _skip(self, session: Session, rule: Rule, resource: dict[str, Any], patient_ref: str | None,
              reason: str, decision: Decision) -> None:
        session.add(NotificationSkip(rule_id=rule.id, resource_ref=resource_ref(resource),
                                     version_id=version_of(resource), patient_ref=patient_ref, reason=reason,
                                     created_at=utcnow()))
        decision.skipped.append((rule.id, reason))

    def _apply_rule(self, session: Session, rule: Rule, resource: dict[str, Any], patient: dict[str, Any] | None,
                    related: Sequence[dict[str, Any]], decision: Decision, *, key: str | None = None,
                    due_at: datetime | None = None, known_new: bool = False) -> None:
        patient_ref = patient_reference(resource)
        if patient_ref is None:
            return self._skip(session, rule, resource, None, "no_patient_reference", decision)
        if patient is None:
            return self._skip(session, rule, resource, patient_ref, "patient_not_found", decision)
        contact = mobile_number(patient, self.config.default_phone_region)
        if contact.e164 is None:
            return self._skip(session, rule, resource, patient_ref, f"no_mobile:{contact.reason}", decision)
        if patient_ref not in decision.consent:
            decision.consent[patient_ref] = self.consent.may_message(session, patient_ref)
        if not decision.consent[patient_ref]:
            return self._skip(session, rule, resource, patient_ref, "no_opt_in", decision)
        language = preferred_language(patient, rule.languages_for(self.config.profile),
                                      self.config.default_language)
        ref, version = resource_ref(resource), version_of(resource)
        minted: list[Any] = []  # token rows join the session only if the message is queued
        key = key or self._natural_key(rule, resource)  # the message's key: its links can be revoked by it
        context = RenderContext(
            language=language,
            profile=self.config.profile,
            zone=self.config.zone,
            site_labels=self.config.site_labels,
            default_site_label=self.config.default_site_label,
            mint_link=lambda target: self.links.mint(_ListSink(minted), purpose=rule.id, target=target,
                                                     patient_ref=patient_ref, resource_ref=ref,
                                                     message_key=key),
            mint_action=lambda action: mint_action_token(_ListSink(minted), action=action, patient_ref=patient_ref,
                                                         resource_ref=ref, version_id=version),
        )
        if not known_new and self.outbox.exists(session, key):
            return None  # sent (or dead-lettered) before: effectively-once, and no tokens minted for nothing
        try:
            template = render(rule, resource, context)
            check(template, identifying_strings(resource, patient, related), public=context.public_labels)
        except RenderError as error:
            return self._skip(session, rule, resource, patient_ref, f"render_error:{error.reason}", decision)
        except PhiLeakError as leak:
            log.error("PHI guard blocked a message: rule=%s resource=%s field=%s category=%s",
                      rule.id, ref, leak.field_path, leak.category)
            self.outbox.dead_on_arrival(session, natural_key=key, rule_id=rule.id, resource_ref=ref,
                                        patient_ref=patient_ref,
                                        reason=f"phi_guard:{leak.category}:{leak.field_path}")
            decision.blocked.append(rule.id)
            return None
        session.add_all([row for row in minted if not isinstance(row, ActionToken)])
        insert_tokens(session, [row for row in minted if isinstance(row, ActionToken)])
        number = (patient_ref, contact.e164)
        if number not in decision.contact_keys:
            decision.contact_keys[number] = self.outbox.contacts.remember(session, patient_ref, contact.e164)
        if self.outbox.enqueue(session, natural_key=key, rule_id=rule.id, resource_ref=ref, patient_ref=patient_ref,
                               recipient=contact.e164, template=template, due_at=due_at or self._due(),
                               recipient_key=decision.contact_keys[number]):
            decision.queued.append(key)
        return None

    @staticmethod
    def _due() -> datetime:
        return utcnow()


class _ListSink:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def add(self, instance: Any) -> None:
        self.rows.append(instance)


def _no_tokens(what: str) -> str:
    raise RenderError("reminder", "buttons", what, "reminders carry no links or buttons")


def render_contexts(config: DecideConfig) -> Callable[[str], RenderContext]:
    """Render contexts for moved reminders: the decide step's zone, profile and site labels."""
    return lambda language: RenderContext(
        language=language, profile=config.profile, zone=config.zone, site_labels=config.site_labels,
        default_site_label=config.default_site_label, mint_link=_no_tokens, mint_action=_no_tokens)


def attach(decider: Decider, settings: Settings) -> None:
    """Composition root: turns reminders (per the rules' offsets) and the survey on for ``decider``."""
    decider.reminders = ReminderPlanner(decider.outbox, policy_from_settings(settings), render_contexts(decider.config))
    decider.surveys = settings.survey_enabled
