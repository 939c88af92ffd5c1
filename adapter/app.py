"""The HTTP service: builds the parts (:mod:`adapter.service`), mounts every router on one FastAPI app,
and runs the background tasks for the app's lifetime.

Nothing else assembles the app; tests build it with other settings (a fresh database, the emulator's
URL, a sekmet-fhir URL), so what is tested is what runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse

from adapter.audit.push import keep_pushing
from adapter.console.routes import install_console
from adapter.feeds.tasks import keep_backport, keep_feeds, ping_specs
from adapter.hl7.runner import start_hl7_feed
from adapter.http.admin_api import build_admin_router
from adapter.http.api_docs import DESCRIPTION as API_DESCRIPTION
from adapter.http.api_docs import api_version, install_docs
from adapter.http.audit_api import FhirPatientDirectory, build_audit_router
from adapter.http.group_commit import GroupCommit
from adapter.http.health import build_health_router
from adapter.http.metrics import build_metrics_router
from adapter.http.whatsapp_webhook import build_webhook_router
from adapter.ops.instances import hold_instance
from adapter.portal_assertion import portal_assertion
from adapter.runtime import keep_alive, keep_subscriptions, keep_template_states
from adapter.security.access import AccessControl
from adapter.security.login_throttle import LoginThrottle
from adapter.service import Service, build_service, start, stop
from adapter.settings import Settings
from adapter.storage.db import upgrade
from ehr.intake import build_intake_router
from portal_links.guard import ProbeGuard
from portal_links.jwks import build_jwks_router
from portal_links.redact import install_log_redaction
from portal_links.routes import build_link_router


def create_app(settings: Settings, *, service: Service | None = None) -> FastAPI:
    service = service or build_service(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        guard = hold_instance(settings.database_url)  # a second process on one SQLite file stops here
        await asyncio.to_thread(upgrade, service.engine)
        await start(service)
        assert service.pipeline is not None
        stop_event = asyncio.Event()
        tasks = [asyncio.create_task(service.pipeline.run(stop_event), name="pipeline"),
                 asyncio.create_task(keep_alive(service, stop_event), name="heartbeat")]
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
        if settings.hl7_enabled:  # the MLLP listener; closed once stop_event is set
            tasks.append(await start_hl7_feed(service, stop_event))
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

    # /docs is served by install_docs (behind a session outside demo mode); no ReDoc.
    app = FastAPI(title="FHIR ↔ WhatsApp bridge", description=API_DESCRIPTION, version=api_version(),
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    def accept(items: list[Any]) -> int:
        # The pipeline exists once the lifespan ran; before that, store without waking.
        return service.pipeline.accept(items) if service.pipeline else service.inbox.accept(items)

    def accept_groups(groups: Sequence[list[Any]]) -> list[int | Exception]:
        outcomes = service.inbox.accept_groups(groups)
        if service.pipeline is not None and any(isinstance(new, int) and new for new in outcomes):
            service.pipeline.wake_inward()
        return outcomes

    # Concurrent EHR notifications share one transaction, each answered after its commit.
    intake_writer: GroupCommit[list[Any], int] = GroupCommit(accept_groups)
    app.include_router(APIRouter(lifespan=intake_writer.lifespan))
    app.include_router(build_intake_router(
        _Sink(accept), settings.ehr_hook_secret.get_secret_value().encode(),
        [*service.specs, *ping_specs(settings)], settings.max_notification_bytes, on_refused=service.inbox.refused,
        on_backport=lambda key, status: service.backport.record(key, status) if service.backport else None,
        store=intake_writer.submit,
        signed_keys=[key for key, spec in service.specs.items() if spec.auth == "medplum-signature"]))
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
    access = AccessControl(service.engine, settings.api_session_minutes)  # the auditor and admin APIs
    throttle = LoginThrottle()  # one failed-login count for the API and the console
    directory = FhirPatientDirectory(lambda: service.fhir)
    app.include_router(build_audit_router(service.engine, access, observer=settings.public_base_url,
                                          signer=service.audit_signer, directory=directory, throttle=throttle))
    app.include_router(build_admin_router(service.engine, access))
    install_console(app, service.engine, settings, service=service, signer=service.audit_signer,
                    directory=directory, throttle=throttle)  # the browser pages under /console
    install_docs(app, access, public=settings.mode == "demo")
    app.include_router(build_metrics_router(service.engine))  # GET /metrics, no auth (README, "Metrics")

    app.include_router(build_health_router(service))  # /livez, /readyz, /health

    if settings.mode == "demo":
        @app.get("/portal-demo/{page}", include_in_schema=False)
        async def demo_portal(page: str) -> HTMLResponse:
            return HTMLResponse("<h1>Hospital patient portal (demo)</h1><p>Here the hospital's portal would ask "
                                "the patient to log in, then show the page.</p>")

    return app


class _Sink:
    def __init__(self, accept: Any) -> None:
        self._accept = accept

    def accept(self, items: list[Any]) -> int:
        return int(self._accept(items))
