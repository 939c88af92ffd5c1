"""Decide: turn one EHR resource version into messages, skips or nothing.

A handler that reads like a recipe (cosmicpython): guard clauses, resolve, map, act, record.

1. The resource is re-read from the EHR by the caller — never trusted from a notification.
2. A version already processed is a no-op (``resource_state``).
3. Rules fire on *transitions* (status entering a set), so a booked appointment notifies once
   per booking, and a report once per report (or per release, by setting).
4. For each firing rule: patient → mobile number → opt-in → language → render (typed, allow-listed
   parameters only) → PHI guard → outbox. Every "no" is recorded as a skip with its reason.
5. A message about an appointment to come (:func:`~adapter.scheduling.decision.start_bound`) whose start
   has passed is the skip ``appointment_started``; a queued one carries its start, so the claim
   suppresses it if it comes due after the start (:mod:`adapter.outbox.appointment_gate`).
6. A notice (documents ready, statement available, an operator's site notice, :meth:`Decider.record_notice`)
   is due at the end of the quiet hours it falls in (:mod:`adapter.scheduling.notices`).

All database effects of a batch of versions happen in one transaction, with their inbox events
marked done, and so do their audit entries (:func:`adapter.audit.fhir_access.decide_reads`): a
``patient-read`` of the re-read resource and of the Patient read for its telecom and language (BALP
PatientRead). The batch reads each table once and writes each once
(:class:`adapter.scheduling.batch_facts.DecideFacts`); one version is a batch of one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from adapter.audit.fhir_access import decide_reads, read_entry
from adapter.feeds.tables import ResourceState
from adapter.outbox.action_tokens import mint_action_token
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import NotificationSkip
from adapter.recipients.consent import ConsentSource
from adapter.scheduling.batch_facts import DecideFacts, StateKey, Wanted, processed_states
from adapter.scheduling.decision import STARTED, DecideConfig, DecideItem, Decision, resource_ref, state_key, version_of
from adapter.scheduling.notices import is_notice, notice_due, notice_key
from adapter.scheduling.reminders import ReminderPlanner, appointment_start, policy_from_settings, reminder_key
from adapter.scheduling.subject import ListSink, Subject, render_contexts
from adapter.scheduling.survey import queue_survey
from adapter.settings import Settings
from adapter.storage.db import transaction, utcnow
from ehr.patient import patient_reference, preferred_language
from mappings.phi_guard import PhiLeakError, check
from mappings.quiet_hours import QuietHours
from mappings.render import RenderContext, RenderError, render
from mappings.rules import Rule, RuleSet
from portal_links.store import LinkStore
from whatsapp.catalogue import TemplateCatalogue

log = logging.getLogger(__name__)


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
        self.quiet: QuietHours | None = None  # setting quiet_hours: notices wait them out (adapter.scheduling.notices)

    # --- read-only pre-checks, so the EHR is not asked for a patient we will not need

    def last_seen(self, resource: dict[str, Any]) -> tuple[str | None, str | None]:
        """(version, status) of the resource when it was last processed; (None, None) if never."""
        return self.last_seen_many([resource]).get(state_key(resource), (None, None))

    def last_seen_many(self, resources: Sequence[dict[str, Any]]) -> dict[StateKey, tuple[str | None, str | None]]:
        """:meth:`last_seen` for a batch, in one read."""
        return processed_states(self.engine, {state_key(resource) for resource in resources})

    def firing_rules(self, resource: dict[str, Any], previous_status: str | None = None) -> list[Rule]:
        """Rules whose status set the resource just entered (a new resource enters from nothing)."""
        return self.rules.firing(str(resource.get("resourceType")), previous_status, resource.get("status"))

    # --- the transactional step

    def record(self, resource: dict[str, Any], patient: dict[str, Any] | None,
               inbox_event_id: int | None = None, related: Sequence[dict[str, Any]] = ()) -> Decision:
        """Applies one version (:meth:`record_batch` of one)."""
        return self.record_batch([DecideItem(resource, patient, inbox_event_id, related)])[0]

    def record_batch(self, items: Sequence[DecideItem], done_events: Sequence[int] = ()) -> list[Decision]:
        """Applies a batch of versions in one transaction, in order: outbox rows, skips, resource
        state, audit entries, and the inbox events (``done_events`` too: events that led to nothing)
        marked done. A second version of one resource in the batch sees the first's state."""
        subjects = [Subject(item, self.config.default_phone_region) for item in items]
        with transaction(self.engine) as session:
            facts = DecideFacts.load(session, self._wanted(subjects), self.consent,
                                     self.outbox.contacts.index.phone_candidates)
            facts.done_events.extend(done_events)
            decisions = [self._decide(session, facts, subject) for subject in subjects]
            inserted = facts.write(session)
        for decision in decisions:  # a key another instance queued first is not this batch's
            decision.queued = [key for key in decision.queued if key in inserted]
        return decisions

    def record_notice(self, rule: Rule, items: Sequence[tuple[DecideItem, str]],
                      new_site_label: str | None = None) -> list[Decision]:
        """An operator's notice (:mod:`adapter.scheduling.site_notices`): ``rule`` applied to each (version,
        outbox key) in one transaction, with the same checks, skips and audit as an EHR change, and no
        processing state (the versions are not changes). A key queued before is not queued again."""
        subjects = [Subject(item, self.config.default_phone_region) for item, _ in items]
        wanted = Wanted(patients={ref for s in subjects if (ref := patient_reference(s.item.resource))},
                        numbers={n for s in subjects if s.item.patient and (n := s.contact.e164)},
                        keys={key for _, key in items}, appointments={resource_ref(s.item.resource) for s in subjects},
                        reminder_rules={rule.id})  # loads the skips recorded before, so none is repeated
        with transaction(self.engine) as session:
            facts = DecideFacts.load(session, wanted, self.consent, self.outbox.contacts.index.phone_candidates)
            decisions = []
            for subject, (item, key) in zip(subjects, items, strict=True):
                decision = Decision(resource_ref=resource_ref(item.resource))
                facts.audit.extend(decide_reads(item.resource, item.patient, patient_reference(item.resource), True))
                self._apply_rule(session, facts, rule, subject, decision, key=key, new_site_label=new_site_label)
                decisions.append(decision)
            inserted = facts.write(session)
        for decision in decisions:
            decision.queued = [key for key in decision.queued if key in inserted]
        return decisions

    def _wanted(self, subjects: Sequence[Subject]) -> Wanted:
        """Every row the batch may read, from the resources alone (before the transaction)."""
        wanted = Wanted()
        for subject in subjects:
            item, resource = subject.item, subject.item.resource
            wanted.states.add(state_key(resource))
            patient_ref = patient_reference(resource)
            if patient_ref is not None:
                wanted.patients.add(patient_ref)
            if item.patient is not None:
                number = subject.contact.e164
                wanted.numbers.update([number] if number else [])
            start = appointment_start(resource)
            for rule in self.rules.for_resource(str(resource.get("resourceType"))):
                wanted.keys.add(self._natural_key(rule, resource))
                if rule.reminder is None or resource.get("resourceType") != "Appointment":
                    continue
                wanted.appointments.add(resource_ref(resource))
                wanted.reminder_rules.add(rule.reminder.id)
                if start is not None:
                    wanted.keys.update(reminder_key(resource_ref(resource), start, offset)
                                       for offset in rule.reminder_offsets)
        return wanted

    def _decide(self, session: Session, facts: DecideFacts, subject: Subject) -> Decision:
        item = subject.item
        resource, patient = item.resource, item.patient
        ref, version, key = resource_ref(resource), version_of(resource), state_key(resource)
        patient_ref = patient_reference(resource)
        decision = Decision(resource_ref=ref)
        state = facts.states.get(key)
        decision.duplicate = state is not None and version is not None and state.version_id == version
        if item.inbox_event_id is not None:
            facts.done_events.append(item.inbox_event_id)
        if decision.duplicate:  # the reads happened all the same: audit them
            facts.audit.append(read_entry(resource, patient_ref=patient_ref, step="decide", detail={"duplicate": True}))
            facts.audit.extend(decide_reads(resource, patient, patient_ref, False)[1:])
            return decision
        previous = state.status if state else None
        rules = self.firing_rules(resource, previous)
        # The reads first: whatever fails later in this step rolls them back with it. The caller
        # read the Patient only when a rule fired (adapter.pipeline).
        facts.audit.extend(decide_reads(resource, patient, patient_ref, bool(rules)))
        for rule in rules:
            self._apply_rule(session, facts, rule, subject, decision)
        self._plan_reminders(session, facts, subject, decision)
        if (self.surveys and resource.get("resourceType") == "Appointment"
                and resource.get("status") == "fulfilled" and previous != "fulfilled"):
            facts.write_contacts(session)  # the survey finds the patient's number on file
            queued = queue_survey(session, self.outbox, self.outbox.contacts, self.consent, resource,
                                  patient_ref, self.config.default_language)
            decision.queued.extend([queued] if queued else [])
            facts.direct.update([queued] if queued else [])
        now = utcnow()
        state = state or ResourceState(resource_type=key[0], resource_id=key[1], processed_at=now)
        state.version_id, state.status = version, resource.get("status")
        state.last_updated = (resource.get("meta") or {}).get("lastUpdated")
        state.processed_at = now
        session.add(state)
        facts.states[key] = state
        return decision

    def _plan_reminders(self, session: Session, facts: DecideFacts, subject: Subject, decision: Decision) -> None:
        """Keeps the Appointment's reminder rows equal to this version (:mod:`adapter.scheduling.reminders`)."""
        item, resource = subject.item, subject.item.resource
        if self.reminders is None or resource.get("resourceType") != "Appointment":
            return

        def enqueue(session: Session, reminder: Rule, key: str, due_at: datetime) -> bool:
            if any(rule_id == reminder.id for rule_id, _ in decision.skipped):
                return False  # one skip per version says it all (and a second would repeat its key)
            self._apply_rule(session, facts, reminder, subject, decision, key=key, due_at=due_at)
            return key in decision.queued

        for rule in self.rules.for_resource("Appointment"):
            if rule.reminder is not None:
                self.reminders.reconcile(session, facts, rule, resource, patient_reference(resource),
                                         enqueue if item.patient is not None else None)

    def _natural_key(self, rule: Rule, resource: dict[str, Any]) -> str:
        """The outbox key that makes a message effectively-once: per resource for ``once`` rules,
        per version otherwise (each re-entry into the status is a new message)."""
        ref = resource_ref(resource)
        subject = ref if rule.repeat_policy(self.config.report_policy) == "once" else (
            f"{ref}/_history/{version_of(resource)}")
        return notice_key(rule.id, subject) if is_notice(rule) else f"{rule.id}:{subject}"

    @staticmethod
    def _skip(session: Session, facts: DecideFacts, rule: Rule, resource: dict[str, Any], patient_ref: str | None,
              reason: str, decision: Decision) -> None:
        ref, version = resource_ref(resource), version_of(resource)
        if not facts.skip_recorded((rule.id, ref, version, reason)):  # an operator's notice may be run twice
            session.add(NotificationSkip(rule_id=rule.id, resource_ref=ref, version_id=version,
                                         patient_ref=patient_ref, reason=reason, created_at=utcnow()))
        decision.skipped.append((rule.id, reason))

    def _apply_rule(self, session: Session, facts: DecideFacts, rule: Rule, subject: Subject, decision: Decision,
                    *, key: str | None = None, due_at: datetime | None = None,
                    new_site_label: str | None = None) -> None:
        resource, patient = subject.item.resource, subject.item.patient
        patient_ref = patient_reference(resource)
        if subject.start is not None and subject.start <= utcnow():
            return self._skip(session, facts, rule, resource, patient_ref, STARTED, decision)
        if patient_ref is None:
            return self._skip(session, facts, rule, resource, None, "no_patient_reference", decision)
        if patient is None:
            return self._skip(session, facts, rule, resource, patient_ref, "patient_not_found", decision)
        contact = subject.contact
        if contact.e164 is None:
            return self._skip(session, facts, rule, resource, patient_ref, f"no_mobile:{contact.reason}", decision)
        if patient_ref not in facts.consent:
            facts.consent[patient_ref] = self.consent.may_message(session, patient_ref)
        if not facts.consent[patient_ref]:
            return self._skip(session, facts, rule, resource, patient_ref, "no_opt_in", decision)
        key = key or self._natural_key(rule, resource)  # the message's key: its links can be revoked by it
        if key in facts.taken:
            return None  # sent (or dead-lettered) before: effectively-once, and no tokens minted for nothing
        language = preferred_language(patient, rule.languages_for(self.config.profile),
                                      self.config.default_language)
        ref, version = resource_ref(resource), version_of(resource)
        minted: list[Any] = []  # token rows go into the database only if the message is queued
        context = RenderContext(
            language=language,
            profile=self.config.profile,
            zone=self.config.zone,
            site_labels=self.config.site_labels,
            default_site_label=self.config.default_site_label,
            mint_link=lambda target: self.links.mint(ListSink(minted), purpose=rule.id, target=target,
                                                     patient_ref=patient_ref, resource_ref=ref,
                                                     message_key=key),
            mint_action=lambda action: mint_action_token(ListSink(minted), action=action, patient_ref=patient_ref,
                                                         resource_ref=ref, version_id=version),
            new_site_label=new_site_label,
        )
        try:
            template = render(rule, resource, context)
            check(template, subject.identifying, public=context.public_labels)
        except RenderError as error:
            return self._skip(session, facts, rule, resource, patient_ref, f"render_error:{error.reason}", decision)
        except PhiLeakError as leak:
            log.error("PHI guard blocked a message: rule=%s resource=%s field=%s category=%s",
                      rule.id, ref, leak.field_path, leak.category)
            self.outbox.dead_on_arrival(session, natural_key=key, rule_id=rule.id, resource_ref=ref,
                                        patient_ref=patient_ref,
                                        reason=f"phi_guard:{leak.category}:{leak.field_path}")
            facts.taken.add(key)
            decision.blocked.append(rule.id)
            return None
        if subject.recipient_key is None:
            subject.recipient_key = facts.remember(self.outbox.contacts, patient_ref, contact.e164)
        row = self.outbox.message_row(natural_key=key, rule_id=rule.id, resource_ref=ref, patient_ref=patient_ref,
                                      recipient=contact.e164, message={"type": "template", "template": template},
                                      due_at=due_at or self._due(rule), recipient_key=subject.recipient_key)
        row["appointment_start"] = subject.start  # the claim suppresses it once that start has passed
        if facts.enqueue(row, minted):
            decision.queued.append(key)
        return None

    def _due(self, rule: Rule) -> datetime:  # a notice waits out the quiet hours
        return notice_due(utcnow(), self.config.zone, self.quiet) if is_notice(rule) else utcnow()


def attach(decider: Decider, settings: Settings) -> None:
    """Composition root: turns reminders (per the rules' offsets), the survey and the notices' quiet hours on."""
    decider.reminders = ReminderPlanner(decider.outbox, policy_from_settings(settings), render_contexts(decider.config))
    decider.surveys = settings.survey_enabled
    decider.quiet = decider.reminders.policy.quiet
