"""The composition root: builds every part from the settings, wires them, serves HTTP.

Nothing else constructs adapters; tests build the same graph with other settings (a fresh
database, the emulator's URL, a sekmet-fhir URL), so what is tested is what runs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.audit.checkpoints import AuditKeeper, audit_status, signer_from_settings
from adapter.audit.push import keep_pushing
from adapter.audit.signing import AuditKeyError, AuditSigner
from adapter.conversation.actions import ActionRunner
from adapter.conversation.chat import ChatReplies
from adapter.conversation.inbound import ChatPolicy, InboundProcessor
from adapter.conversation.tables import InboundMessage
from adapter.feeds.backport_monitor import BackportFeedMonitor
from adapter.feeds.inbox import InboxStore
from adapter.feeds.tables import InboxEvent
from adapter.feeds.tasks import backport_monitor, feeds_health, keep_backport, keep_feeds, ping_specs
from adapter.http.admin_api import build_admin_router
from adapter.http.audit_api import FhirPatientDirectory, build_audit_router
from adapter.http.whatsapp_webhook import build_webhook_router
from adapter.maintenance.housekeeping import Housekeeping
from adapter.maintenance.retention import RetentionPolicy
from adapter.ops.alerts import count_open
from adapter.ops.instances import Leadership, hold_instance
from adapter.outbox.circuit_breaker import sending_paused
from adapter.outbox.dispatch import Dispatcher, RetryPolicy
from adapter.outbox.fallback_hook import FallbackHook
from adapter.outbox.store import ClaimRules, OutboxStore
from adapter.outbox.tables import OutboxMessage, TemplateState
from adapter.outbox.templates import TemplateGate
from adapter.outbox.throughput import TokenBucket
from adapter.pipeline import Pipeline
from adapter.recipients.consent import consent_source
from adapter.recipients.contacts import ContactBook
from adapter.scheduling.decide import DecideConfig, Decider
from adapter.scheduling.reminder_gate import ReminderGate
from adapter.scheduling.reminders import attach as attach_reminders
from adapter.scheduling.reminders import policy_from_settings as reminder_policy
from adapter.security.crypto import BlindIndex, FieldCipher
from adapter.security.keys import service_keys
from adapter.security.roles import AccessControl
from adapter.settings import Settings, SettingsError
from adapter.storage.db import make_engine, upgrade
from ehr.auth import auth_from_settings
from ehr.client import FhirClient
from ehr.errors import FhirError
from ehr.intake import build_intake_router
from ehr.subscriptions import DEFAULT_SUBSCRIPTION_SPECS, SubscriptionState, ensure_subscriptions
from ehr.writeback import AppointmentWriter
from mappings.conversation import Conversation
from mappings.rules import RuleSet, load_rules
from portal_links.assertions import AssertionIssuer, AssertionKeyRing
from portal_links.guard import ProbeGuard
from portal_links.jwks import build_jwks_router
from portal_links.redact import install_log_redaction
from portal_links.routes import build_link_router
from portal_links.store import LinkStore
from portal_links.tokens import LinkSigner
from whatsapp.catalogue import TemplateCatalogue
from whatsapp.sender import CloudApiSender

log = logging.getLogger(__name__)
SUBSCRIPTION_RETRY = timedelta(seconds=30)


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
    backport: BackportFeedMonitor | None = None
    template_sync_error: str | None = None
    subscriptions: list[SubscriptionState] = field(default_factory=list)
    subscription_error: str | None = None


def build_service(settings: Settings, *, engine: Engine | None = None) -> Service:
    """The synchronous part of the graph; refuses to build on bad rules or templates."""
    engine = engine or make_engine(settings.database_url)
    catalogue = TemplateCatalogue.load(public_base_url=settings.public_base_url)
    rules = load_rules(settings.mappings_dir, catalogue, settings.phi_profile)
    keys = service_keys(settings)  # a keyring file (wrapped keys) or the key settings
    cipher = FieldCipher(keys)
    contacts = ContactBook(BlindIndex(keys), cipher)
    outbox = OutboxStore(engine, contacts, ClaimRules(
        pair_interval=timedelta(seconds=settings.whatsapp_pair_interval_seconds),
        templates=TemplateGate(settings.whatsapp_fallback_template),
        send_lease=timedelta(seconds=settings.send_lease_seconds),
        reminder_gate=ReminderGate(reminder_policy(settings))))
    links = LinkStore(LinkSigner(settings.key_bytes("link_signing_key"), previous=settings.previous_link_keys()),
                      timedelta(hours=settings.link_ttl_hours))
    decider = Decider(
        engine, rules, catalogue, consent_source(settings.consent_source), outbox, links,
        DecideConfig(profile=settings.phi_profile, zone=settings.zone, site_labels=settings.site_labels,
                     default_site_label=settings.site_label_default, default_language=settings.default_language,
                     default_phone_region=settings.default_phone_region, report_policy=settings.report_policy),
    )
    attach_reminders(decider, settings)  # reminder rows and the satisfaction survey, planned in the decide step
    specs = {spec.key: spec for spec in DEFAULT_SUBSCRIPTION_SPECS}
    if settings.whatsapp_fallback_template and not catalogue.languages(settings.whatsapp_fallback_template):
        raise SettingsError([f"whatsapp_fallback_template: no template named {settings.whatsapp_fallback_template!r} "
                             f"in the catalogue (known: {', '.join(catalogue.names())})"])
    fallback = settings.whatsapp_fallback_template or None
    replies = ChatReplies(outbox, Conversation.load(settings.conversation_file), settings.default_language, fallback,
                          catalogue.languages(fallback) if fallback else [])
    opens, closes = settings.staff_times()
    inbound = InboundProcessor(engine, replies, ChatPolicy(
        handoff_timeout=timedelta(hours=settings.handoff_timeout_hours), zone=settings.zone, opens=opens,
        closes=closes, workdays=frozenset(settings.staff_workdays), remind_after_confirm=settings.remind_after_confirm))
    try:
        audit_signer = signer_from_settings(settings)
    except AuditKeyError as error:
        raise SettingsError([f"audit_signing_key_file: {error}"]) from error
    inbox = InboxStore(engine, timedelta(seconds=settings.inbox_lease_seconds))
    return Service(settings, engine, catalogue, rules, cipher, inbox, outbox, links, decider, specs,
                   inbound, replies, audit_signer)


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
    service.leadership = service.leadership or Leadership(service.engine)
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
    )
    if settings.undeliverable_hook_url:
        service.hook = FallbackHook(service.outbox, settings.undeliverable_hook_url, leadership=service.leadership)
    writer = AppointmentWriter(service.fhir, confirm_mode=settings.confirm_mode,
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
    service.pipeline = Pipeline(service.engine, service.inbox, service.decider, service.fhir, service.dispatcher,
                                {**service.specs, **ping_specs(settings)}, tick_seconds=settings.tick_seconds,
                                inbound=service.inbound, hook=service.hook, actions=service.actions,
                                housekeeping=housekeeping)


async def stop(service: Service) -> None:
    if service.leadership is not None:
        await asyncio.to_thread(service.leadership.release)
    if service.actions is not None:
        await service.actions.aclose()
    if service.hook is not None:
        await service.hook.aclose()
    if service.sender is not None:
        await service.sender.aclose()
    if service.fhir is not None:
        await service.fhir.aclose()


async def keep_subscriptions(service: Service, stop_event: asyncio.Event) -> None:
    """Creates or verifies the EHR Subscriptions; while the EHR is unreachable, tries again."""
    assert service.fhir is not None
    while not stop_event.is_set():
        try:
            service.subscriptions = await ensure_subscriptions(
                service.fhir, list(service.specs.values()), service.settings.public_base_url,
                service.settings.ehr_hook_secret.get_secret_value().encode())
            service.subscription_error = None
            return
        except FhirError as error:
            service.subscription_error = f"{type(error).__name__}: {error}"
            log.warning("could not ensure EHR subscriptions (%s); retrying in %ss", type(error).__name__,
                        int(SUBSCRIPTION_RETRY.total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), SUBSCRIPTION_RETRY.total_seconds())


async def keep_template_states(service: Service, stop_event: asyncio.Event) -> None:
    """Reads the templates' review states from the WABA; while Meta is unreachable, tries again."""
    from adapter.outbox.template_sync import read_states
    from whatsapp.errors import WhatsAppError

    while not stop_event.is_set():
        try:
            count = await read_states(service.settings, service.engine)
            service.template_sync_error = None
            log.info("read the review state of %d templates", count)
            return
        except WhatsAppError as error:
            service.template_sync_error = f"{type(error).__name__}: {error}"
            log.warning("could not read template states (%s); retrying in %ss", type(error).__name__,
                        int(SUBSCRIPTION_RETRY.total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), SUBSCRIPTION_RETRY.total_seconds())


def health(service: Service) -> dict[str, Any]:
    """Counts and states only: no identifiers, no PHI."""
    with Session(service.engine) as session:
        outbox = dict(session.exec(select(OutboxMessage.state, func.count()).group_by(col(OutboxMessage.state))).all())
        inbox = dict(session.exec(select(InboxEvent.state, func.count()).group_by(col(InboxEvent.state))).all())
        inbound = dict(session.exec(select(InboundMessage.state, func.count())
                                    .group_by(col(InboundMessage.state))).all())
        alerts = count_open(session)
        templates = dict(session.exec(select(TemplateState.status, func.count())
                                      .group_by(col(TemplateState.status))).all())
        audit = audit_status(session)
    paused = sending_paused(service.engine)
    return {
        "status": "degraded" if paused or alerts else "ok",
        "mode": service.settings.mode,
        "inbox": inbox,
        "outbox": outbox,
        "inbound": inbound,
        "sending_paused": paused is not None,
        "sending_paused_reason": paused.reason if paused else None,
        "sending_paused_since": paused.set_at.isoformat() if paused else None,
        "alerts": alerts,
        "templates": templates,
        "template_sync_error": service.template_sync_error,
        "subscriptions": [{"key": s.key, "status": s.status, "action": s.action} for s in service.subscriptions],
        "subscription_error": service.subscription_error,
        "audit": audit,
        "feeds": feeds_health(service.settings, service.engine),
    }


def create_app(settings: Settings, *, service: Service | None = None) -> FastAPI:
    service = service or build_service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        guard = hold_instance(settings.database_url)  # a second process on one SQLite file stops here
        await asyncio.to_thread(upgrade, service.engine)
        await start(service)
        assert service.pipeline is not None
        stop_event = asyncio.Event()
        tasks = [asyncio.create_task(service.pipeline.run(stop_event), name="pipeline")]
        leader = service.leadership.is_leader if service.leadership else None
        if settings.manage_subscriptions and (leader is None or await asyncio.to_thread(leader)):
            tasks.append(asyncio.create_task(keep_subscriptions(service, stop_event), name="subscriptions"))
        if service.backport is not None:
            tasks.append(asyncio.create_task(keep_backport(service.backport, settings.manage_subscriptions,
                                                           stop_event), name="backport"))
        assert service.fhir is not None
        tasks.append(asyncio.create_task(keep_feeds(
            settings, service.engine, service.fhir, list(service.specs.values()), stop_event,
            on_new=service.pipeline.wake_inward, is_leader=leader), name="feeds"))
        if settings.whatsapp_sync_templates:
            tasks.append(asyncio.create_task(keep_template_states(service, stop_event), name="templates"))
        if settings.audit_push_to_ehr:
            assert service.fhir is not None
            tasks.append(asyncio.create_task(keep_pushing(service.engine, service.fhir, stop_event,
                                                          observer=settings.public_base_url, is_leader=leader),
                                             name="audit-push"))
        try:
            yield
        finally:
            stop_event.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await stop(service)
            guard.release()

    app = FastAPI(title="FHIR ↔ WhatsApp bridge", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    def accept(items: list[Any]) -> int:
        # The pipeline exists once the lifespan ran; before that, store without waking.
        return service.pipeline.accept(items) if service.pipeline else service.inbox.accept(items)

    app.include_router(build_intake_router(
        _Sink(accept), settings.ehr_hook_secret.get_secret_value().encode(),
        [*service.specs, *ping_specs(settings)], settings.max_notification_bytes, on_refused=service.inbox.refused,
        on_backport=lambda key, status: service.backport.record(key, status) if service.backport else None))
    app.include_router(build_webhook_router(
        service.engine, settings.app_secrets(), settings.whatsapp_verify_token.get_secret_value(),
        service.outbox.contacts, on_stored=lambda: service.pipeline.wake_inward() if service.pipeline else None))
    install_log_redaction()  # link tokens travel in URL paths: no log may keep one
    assertion = portal_assertion(settings)
    app.include_router(build_link_router(
        service.links, service.engine, settings.portal_base_url, guard=ProbeGuard(settings.link_unknown_per_minute),
        assertion=assertion.issue if assertion else None))
    if assertion is not None:
        app.include_router(build_jwks_router(assertion.ring))
    access = AccessControl(service.engine, settings.api_session_minutes)  # the auditor and admin APIs (issue 6)
    app.include_router(build_audit_router(service.engine, access, observer=settings.public_base_url,
                                          signer=service.audit_signer,
                                          directory=FhirPatientDirectory(lambda: service.fhir)))
    app.include_router(build_admin_router(service.engine, access))

    @app.get("/health")
    async def get_health() -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(health, service))

    if settings.mode == "demo":
        @app.get("/portal-demo/{page}", include_in_schema=False)
        async def demo_portal(page: str) -> HTMLResponse:
            return HTMLResponse("<h1>Hospital patient portal (demo)</h1><p>Here the hospital's portal would ask "
                                "the patient to log in, then show the page.</p>")

    return app


@dataclass
class PortalAssertion:
    """The optional hand-off assertion: signs with the key file's active key, re-read when the file
    changes (``bridge assertion-keys rotate`` takes effect without a restart)."""

    path: Path
    issuer: str
    audience: str
    pseudonym_key: bytes
    _ring: AssertionKeyRing | None = None
    _mtime: float = -1.0

    def ring(self) -> AssertionKeyRing:
        mtime = self.path.stat().st_mtime
        if self._ring is None or mtime != self._mtime:
            self._ring, self._mtime = AssertionKeyRing.load(self.path), mtime
        return self._ring

    def issue(self, patient_ref: str) -> str:
        # The portal's pseudonym for the patient: never the FHIR reference itself.
        digest = hmac.new(self.pseudonym_key, patient_ref.encode(), hashlib.sha256).digest()
        pseudonym = base64.urlsafe_b64encode(digest[:18]).decode()
        return AssertionIssuer(self.ring, self.issuer, self.audience).issue(pseudonym)


def portal_assertion(settings: Settings) -> PortalAssertion | None:
    if settings.portal_assertion_keys_file is None:
        return None
    if settings.portal_pseudonym_key is None:
        raise SettingsError(["portal_assertion_keys_file is set: set BRIDGE_PORTAL_PSEUDONYM_KEY too (the key the "
                             "portal shares to map pseudonyms to patients)"])
    assertion = PortalAssertion(settings.portal_assertion_keys_file, settings.public_base_url,
                                settings.portal_assertion_audience, settings.key_bytes("portal_pseudonym_key"))
    assertion.ring()  # a missing or unsafe key file stops the service at start, with its reason
    return assertion


class _Sink:
    def __init__(self, accept: Any) -> None:
        self._accept = accept

    def accept(self, items: list[Any]) -> int:
        return int(self._accept(items))
