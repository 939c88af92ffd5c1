"""Builds every part of the service from the settings and wires them: the one place that constructs
adapters (DESIGN.md: the composition root).

Tests build the same graph with other settings (a fresh database, the emulator's URL, a sekmet-fhir
URL), so what is tested is what runs. :func:`build_service` makes the synchronous parts and refuses
bad rules or templates; :func:`start` opens the network clients and composes the pipeline inside the
running event loop; :func:`stop` closes them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from adapter.audit.checkpoints import AuditKeeper, signer_from_settings
from adapter.audit.link_access import LINK_PORTS
from adapter.audit.signing import AuditKeyError, AuditSigner
from adapter.conversation.actions import ActionRunner
from adapter.conversation.chat import ChatPolicy, ChatReplies
from adapter.conversation.front_desk import FrontDesk
from adapter.conversation.inbound import InboundProcessor
from adapter.education.desk import Education
from adapter.education.gate import EducationGate
from adapter.education.planner import EducationPolicy
from adapter.feeds.backport_monitor import BackportFeedMonitor
from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import BackportFeed, InboxEvent
from adapter.feeds.tasks import backport_monitor, ping_specs
from adapter.hl7.writeback import appointment_writer
from adapter.maintenance.housekeeping import Housekeeping
from adapter.maintenance.retention import RetentionPolicy
from adapter.ops.instances import Leadership
from adapter.ops.liveness import LeasedTable, Liveness, LivenessConfig, default_name
from adapter.outbox.claims import ClaimRules
from adapter.outbox.dispatch import Dispatcher, RetryPolicy
from adapter.outbox.fallback_hook import FallbackHook
from adapter.outbox.store import OutboxStore
from adapter.outbox.tables import OutboxMessage
from adapter.outbox.templates import TemplateGate
from adapter.outbox.throughput import TokenBucket
from adapter.pipeline import Pipeline
from adapter.recipients.consent import consent_source
from adapter.recipients.contacts import ContactBook
from adapter.scheduling.decide import Decider
from adapter.scheduling.decide import attach as attach_reminders
from adapter.scheduling.decision import DecideConfig
from adapter.scheduling.reminder_gate import ReminderGate
from adapter.scheduling.reminders import policy_from_settings as reminder_policy
from adapter.security.crypto import BlindIndex, FieldCipher
from adapter.security.keys import service_keys
from adapter.settings import Settings, SettingsError
from adapter.storage.db import make_engine, table_of
from ehr.auth_settings import auth_from_settings
from ehr.client import FhirClient
from ehr.subscriptions import SubscriptionSpec, SubscriptionState, default_specs
from mappings.conversation import Conversation
from mappings.loader import load_rules
from mappings.rules import RuleSet
from portal_links.store import LinkStore
from portal_links.tokens import LinkSigner
from whatsapp.catalogue import TemplateCatalogue
from whatsapp.sender import CloudApiSender


@dataclass
class Service:
    """Every long-lived part of one running service."""

    settings: Settings
    engine: Engine
    catalogue: TemplateCatalogue
    rules: RuleSet
    cipher: FieldCipher
    inbox: InboxStore
    outbox: OutboxStore
    links: LinkStore
    decider: Decider
    specs: dict[str, Any]
    inbound: InboundProcessor
    replies: ChatReplies
    audit_signer: AuditSigner
    fhir: FhirClient | None = None
    sender: CloudApiSender | None = None
    pipeline: Pipeline | None = None
    dispatcher: Dispatcher | None = None
    hook: FallbackHook | None = None
    actions: ActionRunner | None = None
    leadership: Leadership | None = None  # who runs the periodic jobs when several instances share PostgreSQL
    liveness: Liveness | None = None  # this boot's heartbeat; names the owner of every lease it takes
    backport: BackportFeedMonitor | None = None
    template_sync_error: str | None = None
    subscriptions: list[SubscriptionState] = field(default_factory=list)
    subscription_error: str | None = None


def subscription_specs(settings: Settings, rules: RuleSet | None = None) -> dict[str, SubscriptionSpec]:
    """The EHR feeds the service needs: one per resource type a rule file fires on (a notice's rule file
    deleted, its resource type is no longer subscribed to or polled)."""
    if rules is None:
        rules = load_rules(settings.mappings_dir, TemplateCatalogue.load(public_base_url=settings.public_base_url),
                           settings.phi_profile)
    return {spec.key: spec for spec in default_specs(settings.ehr_notify_auth, rules.resource_types())}


def build_service(settings: Settings, *, engine: Engine | None = None) -> Service:
    """The synchronous part of the graph; refuses to build on bad rules or templates."""
    engine = engine or make_engine(settings.database_url)
    liveness = make_liveness(settings, engine)
    catalogue = TemplateCatalogue.load(public_base_url=settings.public_base_url)
    rules = load_rules(settings.mappings_dir, catalogue, settings.phi_profile)
    keys = service_keys(settings)  # a keyring file (wrapped keys) or the key settings
    cipher = FieldCipher(keys)
    contacts = ContactBook(BlindIndex(keys), cipher)
    outbox = OutboxStore(engine, contacts, ClaimRules(
        pair_interval=timedelta(seconds=settings.whatsapp_pair_interval_seconds),
        templates=TemplateGate(settings.whatsapp_fallback_template),
        send_lease=timedelta(seconds=settings.send_lease_seconds),
        owner=liveness.owner, in_doubt_grace=timedelta(seconds=settings.in_doubt_grace_seconds),
        reminder_gate=EducationGate(ReminderGate(reminder_policy(settings)), EducationPolicy.from_settings(settings))))
    links = LinkStore(LinkSigner(settings.key_bytes("link_signing_key"), previous=settings.previous_link_keys()),
                      timedelta(hours=settings.link_ttl_hours), LINK_PORTS)
    decider = Decider(
        engine, rules, catalogue, consent_source(settings.consent_source), outbox, links,
        DecideConfig(profile=settings.phi_profile, zone=settings.zone, site_labels=settings.site_labels,
                     default_site_label=settings.site_label_default, default_language=settings.default_language,
                     default_phone_region=settings.default_phone_region, report_policy=settings.report_policy),
    )
    attach_reminders(decider, settings)  # reminder rows and the satisfaction survey, planned in the decide step
    specs = subscription_specs(settings, rules)
    if settings.whatsapp_fallback_template and not catalogue.languages(settings.whatsapp_fallback_template):
        raise SettingsError([f"whatsapp_fallback_template: no template named {settings.whatsapp_fallback_template!r} "
                             f"in the catalogue (known: {', '.join(catalogue.names())})"])
    fallback = settings.whatsapp_fallback_template or None
    replies = ChatReplies(outbox, Conversation.load(settings.conversation_file), settings.default_language, fallback,
                          catalogue.languages(fallback) if fallback else [],
                          front_desk=FrontDesk.from_settings(settings), education=Education.from_settings(settings))
    opens, closes = settings.staff_times()
    inbound = InboundProcessor(engine, replies, ChatPolicy(
        handoff_timeout=timedelta(hours=settings.handoff_timeout_hours), zone=settings.zone, opens=opens,
        closes=closes, workdays=frozenset(settings.staff_workdays), remind_after_confirm=settings.remind_after_confirm))
    try:
        audit_signer = signer_from_settings(settings)
    except AuditKeyError as error:
        raise SettingsError([f"audit_signing_key_file: {error}"]) from error
    inbox = InboxStore(engine, timedelta(seconds=settings.inbox_lease_seconds))
    inbox.owner = liveness.owner
    return Service(settings, engine, catalogue, rules, cipher, inbox, outbox, links, decider, specs,
                   inbound, replies, audit_signer, liveness=liveness)


def make_liveness(settings: Settings, engine: Engine) -> Liveness:
    """This boot's identity and heartbeat, over the tables whose rows carry a lease."""
    tables = (LeasedTable("message(s)", table_of(OutboxMessage), in_doubt=True),
              LeasedTable("EHR event(s)", table_of(InboxEvent)), LeasedTable("feed check(s)", table_of(BackportFeed)))
    return Liveness(engine, settings.instance_name or default_name(settings.http_port), tables, LivenessConfig(
        heartbeat=timedelta(seconds=settings.heartbeat_seconds),
        dead_after=timedelta(seconds=settings.instance_dead_after_seconds),
        in_doubt_grace=timedelta(seconds=settings.in_doubt_grace_seconds)))


def make_fhir_client(settings: Settings) -> FhirClient:
    return FhirClient(settings.fhir_base_url, auth_from_settings(settings), settings.fhir_timeout_seconds)


def make_sender(settings: Settings) -> CloudApiSender:
    return CloudApiSender(
        base_url=settings.whatsapp_api_base_url, api_version=settings.whatsapp_api_version,
        phone_number_id=settings.whatsapp_phone_number_id,
        access_token=settings.whatsapp_access_token.get_secret_value(),
        timeout_seconds=settings.whatsapp_timeout_seconds, max_connections=settings.whatsapp_max_connections,
    )


async def start(service: Service) -> None:
    """Opens the network clients and composes the pipeline (needs a running event loop)."""
    settings = service.settings
    if service.liveness is not None:  # before any claim: a restart takes its earlier boot's leases back at once
        await asyncio.to_thread(service.liveness.start)
    name = f"{service.liveness.name}/{service.liveness.boot_id}" if service.liveness else None
    service.leadership = service.leadership or Leadership(service.engine, name=name)
    service.fhir = make_fhir_client(settings)
    service.sender = make_sender(settings)
    service.dispatcher = Dispatcher(
        service.outbox, service.sender,
        RetryPolicy(settings.dispatch_max_attempts, settings.dispatch_backoff_seconds,
                    settings.dispatch_backoff_max_seconds),
        # At most about a second of sends per claim, so each claim sees fresh pacing and consent.
        batch_size=min(settings.dispatch_batch_size,
                       max(1, settings.whatsapp_messages_per_second // settings.instance_count)),
        concurrency=settings.whatsapp_max_connections,
        # Each instance sends its share of the number's rate (settings: instance_count).
        bucket=TokenBucket(settings.whatsapp_messages_per_second / settings.instance_count),
        alive_until=service.liveness.alive_until if service.liveness else None,
    )
    if settings.undeliverable_hook_url:
        service.hook = FallbackHook(service.outbox, settings.undeliverable_hook_url, leadership=service.leadership)
    # HL7-fed appointments (adapter.hl7.writeback) are written back by FHIR identifier, SRM or a staff alert.
    writer = appointment_writer(settings, service.engine, service.fhir, confirm_mode=settings.confirm_mode,
                                reschedule_window=timedelta(days=settings.reschedule_window_days),
                                free_slot_on_cancel=settings.free_slot_on_cancel)
    service.actions = ActionRunner(service.engine, writer, service.replies, zone=settings.zone,
                                   handoff_timeout=timedelta(hours=settings.handoff_timeout_hours),
                                   staff_inbox_url=settings.staff_inbox_url)
    # Chaining steps of 200 keep each transaction short: on SQLite it shares the one writer with the webhooks.
    keeper = AuditKeeper(service.engine, service.audit_signer, settings.audit_checkpoint_every,
                         settings.audit_checkpoint_seconds, settings.audit_checkpoint_export_dir, batch=200)
    housekeeping = Housekeeping(service.engine, keeper, RetentionPolicy.from_settings(settings),
                                leadership=service.leadership)
    service.backport = backport_monitor(settings, service.engine, service.fhir,
                                        on_stored=lambda: service.pipeline.wake_inward() if service.pipeline else None)
    if service.backport is not None and service.liveness is not None:
        service.backport.owner = service.liveness.owner
    service.pipeline = Pipeline(service.engine, service.inbox, service.decider, service.fhir, service.dispatcher,
                                {**service.specs, **ping_specs(settings)}, tick_seconds=settings.tick_seconds,
                                inbound=service.inbound, hook=service.hook, actions=service.actions,
                                housekeeping=housekeeping)


async def stop(service: Service) -> None:
    if service.leadership is not None:
        await asyncio.to_thread(service.leadership.release)
    if service.liveness is not None:
        await asyncio.to_thread(service.liveness.stop)
    if service.actions is not None:
        await service.actions.aclose()
    if service.hook is not None:
        await service.hook.aclose()
    if service.sender is not None:
        await service.sender.aclose()
    if service.fhir is not None:
        await service.fhir.aclose()
