"""``bridge``: the one console script — run the service, the demo, the emulator, and the
operator commands (settings check, migrations, subscriptions, opt-in registry, skips, dead letters).

Every command reads the same settings as the service, so a wrong setting is reported the same way.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from sqlmodel import Session, col, delete, select

from adapter.cli.audit import audit_app
from adapter.cli.credentials import credentials_app
from adapter.cli.feeds import feeds_app
from adapter.cli.keys import keys_app
from adapter.cli.retention import retention_app
from adapter.cli.smart import smart_app
from adapter.cli.support import migrated_engine, operator, say, settings_or_exit
from adapter.settings import DEMO_SECRET, Settings, SettingsError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from adapter.app import Service
    from adapter.audit.trail import AuditEntry

app = typer.Typer(help="FHIR ↔ WhatsApp bridge.", no_args_is_help=True, add_completion=False)
subscriptions_app = typer.Typer(help="The EHR Subscriptions this service needs.", no_args_is_help=True)
consent_app = typer.Typer(help="The local opt-in registry.", no_args_is_help=True)
dead_app = typer.Typer(help="Messages that could not be sent.", no_args_is_help=True)
inbox_app = typer.Typer(help="EHR notifications the pipeline gave up on.", no_args_is_help=True)
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(consent_app, name="consent")
app.add_typer(dead_app, name="dead-letters")
app.add_typer(inbox_app, name="inbox")
sending_app = typer.Typer(help="The sending circuit breaker.", no_args_is_help=True)
alerts_app = typer.Typer(help="Things an operator must look at.", no_args_is_help=True)
templates_app = typer.Typer(help="Message templates in the WhatsApp Business Account.", no_args_is_help=True)
app.add_typer(sending_app, name="sending")
app.add_typer(alerts_app, name="alerts")
app.add_typer(templates_app, name="templates")
links_app = typer.Typer(help="Portal links: revocation, probing.", no_args_is_help=True)
app.add_typer(links_app, name="links")
assertion_app = typer.Typer(help="Keys that sign hand-off assertions to the portal.", no_args_is_help=True)
app.add_typer(assertion_app, name="assertion-keys")
app.add_typer(audit_app, name="audit")
app.add_typer(credentials_app, name="credentials")
app.add_typer(keys_app, name="keys")
app.add_typer(retention_app, name="retention")
app.add_typer(smart_app, name="smart")
app.add_typer(feeds_app, name="feeds")


_say = say
_settings = settings_or_exit


def _service(settings: Settings) -> Service:
    """The composed service, or a clear message and exit 2 when rules or templates are wrong."""
    from adapter.app import build_service
    from mappings.conversation import ConversationError
    from mappings.errors import MappingError
    from whatsapp.catalogue import CatalogueError

    try:
        return build_service(settings)
    except (MappingError, CatalogueError, ConversationError, SettingsError) as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None


_engine = migrated_engine


def _audit(engine: Engine, command: str, *, entity: str | None = None, patient: str | None = None,
           **detail: str | int | bool | None) -> None:
    """Records an operator command (``admin``, agent ``cli:<user>``) for commands whose change is
    made by another module in a transaction of its own: recorded right after it, in a second one."""
    from adapter.audit.trail import record
    from adapter.storage.db import transaction

    with transaction(engine) as session:
        record(session, _admin_entry(command, entity=entity, patient=patient, **detail))


def _admin_entry(command: str, *, entity: str | None = None, patient: str | None = None,
                 **detail: str | int | bool | None) -> AuditEntry:
    from adapter.audit.trail import Action, AuditEntry, Kind

    return AuditEntry(kind=Kind.ADMIN, action=Action.UPDATE, agent=operator(), patient_ref=patient,
                      entity_ref=entity, detail={"command": command, **detail})


def _logging() -> None:
    logging.basicConfig(level=os.environ.get("BRIDGE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def serve() -> None:
    """Run the service (HTTP endpoints and the pipeline) with the configured settings."""
    import uvicorn

    from adapter.app import create_app

    _logging()
    settings = _settings()
    application = create_app(settings, service=_service(settings))
    uvicorn.run(application, host=settings.http_host, port=settings.http_port, log_level="info",
                access_log=False,  # access logs would carry portal-link tokens in their paths
                # Longer than clients keep idle connections, so an EHR never writes a notification
                # onto a connection we are closing (seen as a lost request under burst load).
                timeout_keep_alive=75)


@app.command()
def demo(once: Annotated[bool, typer.Option(help="Exit after showing the messages.")] = False,
         workdir: Annotated[Path | None, typer.Option(help="Folder for the demo's files.")] = None) -> None:
    """Start a sandbox EHR, the WhatsApp emulator and the service; show what patients receive."""
    from adapter.demo.run import run_demo

    logging.basicConfig(level=logging.WARNING)
    raise typer.Exit(run_demo(_say, keep_running=not once, workdir=workdir))


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    webhook_url: Annotated[str | None, typer.Option(help="Where to POST status webhooks.")] = None,
    public_base_url: Annotated[str, typer.Option(help="The service's public URL (template links).")] =
        "http://127.0.0.1:8000",
) -> None:
    """Run the WhatsApp Cloud API emulator standalone (demo token and app secret)."""
    from whatsapp.emulator.config import EmulatorConfig
    from whatsapp.emulator.server import run_emulator

    settings = _settings(mode="demo")
    token = os.environ.get("BRIDGE_WHATSAPP_ACCESS_TOKEN", DEMO_SECRET)
    secret = os.environ.get("BRIDGE_WHATSAPP_APP_SECRET", DEMO_SECRET)
    run_emulator(EmulatorConfig(access_token=token, app_secret=secret, webhook_url=webhook_url,
                                public_base_url=public_base_url,
                                phone_numbers={settings.whatsapp_phone_number_id: "+1 555 0100"},
                                waba_id=settings.whatsapp_waba_id), host="127.0.0.1", port=port)


@app.command("check-settings")
def check_settings() -> None:
    """Validate the settings and print them, secrets masked."""
    settings = _settings()
    for name, value in settings.model_dump().items():
        shown = "********" if "SecretStr" in type(getattr(settings, name)).__name__ else value
        typer.echo(f"{name} = {shown}")
    typer.secho("settings are valid", fg="green")


@app.command("migrate")
def migrate() -> None:
    """Bring the database schema to the latest migration."""
    _engine(_settings())
    typer.echo("database is at the latest migration")


@app.command("keys-new")
def keys_new() -> None:
    """Print a fresh random 32-byte key (for data_encryption_key or link_signing_key)."""
    typer.echo(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())


async def _with_fhir(settings: Settings, action: str) -> list[dict[str, object]]:
    from adapter.app import make_fhir_client
    from ehr.subscriptions import DEFAULT_SUBSCRIPTION_SPECS, ensure_subscriptions, subscription_status

    async with make_fhir_client(settings) as client:
        if action == "ensure":
            states = await ensure_subscriptions(client, list(DEFAULT_SUBSCRIPTION_SPECS), settings.public_base_url,
                                                settings.ehr_hook_secret.get_secret_value().encode())
        else:
            states = await subscription_status(client, list(DEFAULT_SUBSCRIPTION_SPECS), settings.public_base_url)
    return [{"key": s.key, "id": s.fhir_id, "status": s.status, "action": s.action, "error": s.error}
            for s in states]


@subscriptions_app.command("ensure")
def subscriptions_ensure() -> None:
    """Create or repair the EHR Subscriptions (idempotent)."""
    settings = _settings()
    states = asyncio.run(_with_fhir(settings, "ensure"))
    for state in states:
        typer.echo(json.dumps(state))
    actions = [str(state["action"]) for state in states]
    _audit(_engine(settings), "subscriptions.ensure", subscriptions=len(states),
           changed=sum(action not in ("kept", "None") for action in actions))


@subscriptions_app.command("status")
def subscriptions_status() -> None:
    """Show the EHR Subscriptions and their status."""
    for state in asyncio.run(_with_fhir(_settings(), "status")):
        typer.echo(json.dumps(state))


@consent_app.command("grant")
def consent_grant(patient: Annotated[str, typer.Argument(help="FHIR reference, e.g. Patient/123")]) -> None:
    """Record that a patient opted in to WhatsApp messages."""
    _set_consent(patient, "opted_in")


@consent_app.command("revoke")
def consent_revoke(patient: Annotated[str, typer.Argument(help="FHIR reference, e.g. Patient/123")]) -> None:
    """Record that a patient opted out; nothing more is sent to them."""
    _set_consent(patient, "opted_out")


def _set_consent(patient: str, status: str) -> None:
    from adapter.audit.trail import record
    from adapter.recipients.consent import set_consent
    from adapter.storage.db import transaction

    try:
        with transaction(_engine(_settings())) as session:
            set_consent(session, patient, status, "admin")
            command = "consent.grant" if status == "opted_in" else "consent.revoke"
            record(session, _admin_entry(command, patient=patient, status=status))
    except ValueError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{patient}: {status}")


@consent_app.command("list")
def consent_list() -> None:
    """List the opt-in registry."""
    from adapter.recipients.consent import list_consent

    with Session(_engine(_settings())) as session:
        for record in list_consent(session):
            typer.echo(f"{record.patient_ref}\t{record.status}\t{record.source}\t{record.changed_at:%Y-%m-%d %H:%M}")


@app.command()
def skips(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50) -> None:
    """List notifications that were not sent, and why (no mobile number, no opt-in, ...)."""
    from adapter.outbox.tables import NotificationSkip

    with Session(_engine(_settings())) as session:
        rows = session.exec(select(NotificationSkip).order_by(col(NotificationSkip.id).desc()).limit(limit))
        for row in rows:
            typer.echo(f"{row.created_at:%Y-%m-%d %H:%M:%S}\t{row.rule_id}\t{row.resource_ref}"
                       f"/_history/{row.version_id}\t{row.patient_ref}\t{row.reason}")


@dead_app.command("list")
def dead_list(limit: Annotated[int, typer.Option()] = 100) -> None:
    """List dead letters: id, rule, resource, reason."""
    for row in _service(_settings()).outbox.dead_letters(limit):
        typer.echo(f"{row.id}\t{row.rule_id}\t{row.resource_ref}\t{row.attempts} attempts\t{row.dead_reason}")


@dead_app.command("retry")
def dead_retry(outbox_id: Annotated[int, typer.Argument(help="The dead letter's id (see `list`).")]) -> None:
    """Queue a dead letter again."""
    settings = _settings()
    engine = _engine(settings)
    typer.echo(_service(settings).outbox.redrive(outbox_id))
    _audit(engine, "dead-letters.retry", entity=f"outbox/{outbox_id}")


@inbox_app.command("dead")
def inbox_dead(limit: Annotated[int, typer.Option()] = 100) -> None:
    """List notifications that failed every attempt: id, resource, attempts, last error class."""
    from adapter.feeds.inbox import InboxStore

    for event in InboxStore(_engine(_settings())).dead_events(limit):
        typer.echo(f"{event.id}\t{event.kind}\t{event.resource_type}/{event.resource_id}\t"
                   f"{event.attempts} attempts\t{event.last_error}")


@inbox_app.command("retry")
def inbox_retry(event_id: Annotated[int, typer.Argument(help="The event's id (see `dead`).")]) -> None:
    """Queue a dead notification again."""
    from adapter.feeds.inbox import InboxStore

    typer.echo(InboxStore(_engine(_settings())).redrive(event_id, agent=operator()))


@sending_app.command("status")
def sending_status() -> None:
    """Whether sending is paused (an account-level error from Meta), since when and why."""
    from adapter.outbox.circuit_breaker import sending_paused

    flag = sending_paused(_engine(_settings()))
    typer.echo("sending: running" if flag is None else f"sending: PAUSED since {flag.set_at:%Y-%m-%d %H:%M:%S} UTC "
                                                         f"({flag.reason})")


@sending_app.command("resume")
def sending_resume() -> None:
    """Resume sending after fixing the cause of the pause (token, policy, payment, ...)."""
    from adapter.outbox.circuit_breaker import resume_sending

    engine = _engine(_settings())
    resumed = resume_sending(engine)
    typer.echo("sending resumed" if resumed else "sending was not paused")
    _audit(engine, "sending.resume", resumed=resumed)


@alerts_app.command("list")
def alerts_list() -> None:
    """Open alerts: id, time, kind, detail."""
    from adapter.ops.alerts import open_alerts

    for alert in open_alerts(_engine(_settings())):
        typer.echo(f"{alert.id}\t{alert.created_at:%Y-%m-%d %H:%M:%S}\t{alert.kind}\t{alert.detail}")


@alerts_app.command("ack")
def alerts_ack(
    alert_id: Annotated[int | None, typer.Argument(help="One alert's id; all when omitted.")] = None,
) -> None:
    """Acknowledge an alert (or all of them) once handled."""
    from adapter.ops.alerts import acknowledge

    engine = _engine(_settings())
    count = acknowledge(engine, alert_id)
    typer.echo(f"acknowledged {count}")
    _audit(engine, "alerts.ack", entity=f"alert/{alert_id}" if alert_id is not None else None, acknowledged=count)


@templates_app.command("sync")
def templates_sync() -> None:
    """Create the project's templates the WABA lacks, and record every template's review state."""
    from adapter.outbox.template_sync import sync
    from whatsapp.catalogue import TemplateCatalogue
    from whatsapp.errors import WhatsAppError

    settings = _settings()
    engine = _engine(settings)
    try:
        report = asyncio.run(sync(settings, engine, TemplateCatalogue.load(public_base_url=settings.public_base_url)))
    except WhatsAppError as error:
        typer.secho(f"could not reach the WhatsApp Business Account: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    _audit(engine, "templates.sync", templates=len(report.items), failed=bool(report.failed))
    for item in report.items:
        typer.echo(f"{item.name}\t{item.language}\t{item.action}\t{item.remote_status or '-'}"
                   + (f"\t{item.error_code or ''} {item.error}" if item.error else ""))
    if report.failed:
        raise typer.Exit(1)


@templates_app.command("status")
def templates_status() -> None:
    """The review state of each template, as last synced or reported by Meta's webhooks."""
    from adapter.outbox.templates import list_states

    for state in sorted(list_states(_engine(_settings())), key=lambda s: (s.name, s.language)):
        typer.echo(f"{state.name}\t{state.language}\t{state.status}\t{state.updated_at:%Y-%m-%d %H:%M}"
                   + (f"\t{state.reason}" if state.reason else ""))


@links_app.command("revoke")
def links_revoke(
    link: Annotated[int | None, typer.Option(help="One link's id.")] = None,
    message: Annotated[str | None, typer.Option(help="Every link of one message (its outbox key).")] = None,
    patient: Annotated[str | None, typer.Option(help="Every link of a patient, e.g. Patient/123.")] = None,
    created_from: Annotated[str | None, typer.Option(help="With --created-to: links created in [from, to), ISO "
                                                          "8601 with a time zone.")] = None,
    created_to: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Revoke portal links at once: the next tap gets the neutral "no longer valid" page."""
    from datetime import datetime

    from portal_links import revocation

    engine = _engine(_settings())
    who = operator()
    chosen = [name for name, value in (("link", link), ("message", message), ("patient", patient),
                                       ("window", created_from or created_to)) if value is not None]
    if len(chosen) != 1:
        typer.secho("give exactly one of --link, --message, --patient, or --created-from with --created-to",
                    fg="red", err=True)
        raise typer.Exit(2)
    if link is not None:
        count = revocation.revoke_link(engine, link, agent=who)
    elif message is not None:
        count = revocation.revoke_message(engine, message, agent=who)
    elif patient is not None:
        count = revocation.revoke_patient(engine, patient, agent=who)
    else:
        try:
            start, end = datetime.fromisoformat(created_from or ""), datetime.fromisoformat(created_to or "")
        except ValueError:
            typer.secho("--created-from and --created-to must both be ISO 8601 times", fg="red", err=True)
            raise typer.Exit(2) from None
        if start.tzinfo is None or end.tzinfo is None:
            typer.secho("give the times with a time zone, e.g. 2026-11-25T08:00:00+00:00", fg="red", err=True)
            raise typer.Exit(2)
        count = revocation.revoke_created_between(engine, start, end, agent=who)
    typer.echo(f"revoked {count} link(s)")


@links_app.command("probes")
def links_probes() -> None:
    """Client addresses rate-limited for unknown, forged or expired tokens in the last hour."""
    from portal_links.guard import recent_rate_limited

    for row in recent_rate_limited(_engine(_settings())):
        typer.echo(f"{row.client}\t{row.requests} requests\t{row.first_at:%H:%M:%S} to {row.last_at:%H:%M:%S} UTC")


def _assertion_keys_file(settings: Settings) -> Path:
    if settings.portal_assertion_keys_file is None:
        typer.secho("set BRIDGE_PORTAL_ASSERTION_KEYS_FILE to the key file's path first", fg="red", err=True)
        raise typer.Exit(2)
    return settings.portal_assertion_keys_file


@assertion_app.command("create")
def assertion_keys_create() -> None:
    """Create the key file: an active key and the next one (published ahead of use)."""
    from portal_links.assertions import AssertionKeyRing

    settings = _settings()
    path = _assertion_keys_file(settings)
    try:
        ring = AssertionKeyRing.create(path)
    except FileExistsError:
        typer.secho(f"{path} exists: use `rotate`", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {path}: active {ring.active_key.kid}")
    _audit(_engine(settings), "assertion-keys.create", entity=f"assertion-key/{ring.active_key.kid}")


@assertion_app.command("rotate")
def assertion_keys_rotate() -> None:
    """The next key signs from now on; the old one stays published until its assertions expired."""
    from portal_links.assertions import AssertionKeyRing

    settings = _settings()
    path = _assertion_keys_file(settings)
    try:
        ring = AssertionKeyRing.load(path).rotate()
    except ValueError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None
    ring.prune().save(path)
    typer.echo(f"rotated: active {ring.active_key.kid}; restart or reload the service to sign with it")
    _audit(_engine(settings), "assertion-keys.rotate", entity=f"assertion-key/{ring.active_key.kid}")


@assertion_app.command("show")
def assertion_keys_show() -> None:
    """The published key set (public keys only)."""
    from portal_links.assertions import AssertionKeyRing

    typer.echo(json.dumps(AssertionKeyRing.load(_assertion_keys_file(_settings())).jwks(), indent=2))


@app.command()
def replay(reference: Annotated[str, typer.Argument(help="e.g. Appointment/123")]) -> None:
    """Re-read a resource from the EHR and decide again (after fixing a mapping or a setting).

    Messages already sent are not sent again: their natural keys are still in the outbox.
    """
    from adapter.feeds.tables import ResourceState
    from adapter.outbox.tables import OutboxMessage

    settings = _settings()
    engine = _engine(settings)
    resource_type, _, resource_id = reference.partition("/")
    if not resource_id:
        typer.secho("give a reference such as Appointment/123", fg="red", err=True)
        raise typer.Exit(2)
    from adapter.audit.trail import record

    with Session(engine) as session:
        record(session, _admin_entry("replay", entity=reference))
        session.exec(delete(OutboxMessage).where(
            col(OutboxMessage.resource_ref) == reference, col(OutboxMessage.state) == "dead",
            col(OutboxMessage.payload).is_(None)))
        session.exec(delete(ResourceState).where(
            col(ResourceState.resource_type) == resource_type, col(ResourceState.resource_id) == resource_id))
        session.commit()
    decision = asyncio.run(_replay(settings, resource_type, resource_id))
    typer.echo(f"queued {len(decision.queued)}, skipped {decision.skipped}, blocked {decision.blocked}")


async def _replay(settings: Settings, resource_type: str, resource_id: str):  # type: ignore[no-untyped-def]
    from adapter.app import start, stop

    service = _service(settings)
    await start(service)
    try:
        assert service.fhir is not None and service.pipeline is not None
        resource = await service.fhir.read(resource_type, resource_id)
        return await service.pipeline.handle_resource(resource)
    finally:
        await stop(service)


def main() -> None:
    try:
        app()
    except SettingsError as error:  # raised while reading a settings file
        typer.secho(str(error), fg="red", err=True)
        sys.exit(2)
