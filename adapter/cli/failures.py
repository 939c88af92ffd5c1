"""What was not sent and running it again: ``bridge skips`` (notifications not sent, and why),
``bridge dead-letters`` (messages that failed every attempt), ``bridge inbox`` (EHR notifications the
pipeline gave up on) and ``bridge replay`` (re-read resources and decide again; the outbox's natural
keys keep what was already sent from going out twice)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from adapter.cli.progress import Progress, progress_bar
from adapter.cli.support import admin_entry, audit_admin, migrated_engine, operator, service_or_exit, settings_or_exit
from adapter.settings import Settings

if TYPE_CHECKING:
    from adapter.scheduling.decision import Decision

dead_app = typer.Typer(help="Messages that could not be sent.", no_args_is_help=True)
inbox_app = typer.Typer(help="EHR notifications the pipeline gave up on.", no_args_is_help=True)


def skips(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50) -> None:
    """List notifications that were not sent, and why (no mobile number, no opt-in, ...)."""
    from adapter.outbox.tables import NotificationSkip

    with Session(migrated_engine(settings_or_exit())) as session:
        rows = session.exec(select(NotificationSkip).order_by(col(NotificationSkip.id).desc()).limit(limit))
        for row in rows:
            typer.echo(f"{row.created_at:%Y-%m-%d %H:%M:%S}\t{row.rule_id}\t{row.resource_ref}"
                       f"/_history/{row.version_id}\t{row.patient_ref}\t{row.reason}")


@dead_app.command("list")
def dead_list(limit: Annotated[int, typer.Option()] = 100) -> None:
    """List dead letters: id, rule, resource, reason."""
    for row in service_or_exit(settings_or_exit()).outbox.dead_letters(limit):
        typer.echo(f"{row.id}\t{row.rule_id}\t{row.resource_ref}\t{row.attempts} attempts\t{row.dead_reason}")


@dead_app.command("retry")
def dead_retry(outbox_id: Annotated[int, typer.Argument(help="The dead letter's id (see `list`).")]) -> None:
    """Queue a dead letter again."""
    settings = settings_or_exit()
    engine = migrated_engine(settings)
    typer.echo(service_or_exit(settings).outbox.redrive(outbox_id))
    audit_admin(engine, "dead-letters.retry", entity=f"outbox/{outbox_id}")


@inbox_app.command("dead")
def inbox_dead(limit: Annotated[int, typer.Option()] = 100) -> None:
    """List notifications that failed every attempt: id, resource, attempts, last error class."""
    from adapter.feeds.inbox import InboxStore

    for event in InboxStore(migrated_engine(settings_or_exit())).dead_events(limit):
        typer.echo(f"{event.id}\t{event.kind}\t{event.resource_type}/{event.resource_id}\t"
                   f"{event.attempts} attempts\t{event.last_error}")


@inbox_app.command("retry")
def inbox_retry(event_id: Annotated[int, typer.Argument(help="The event's id (see `dead`).")]) -> None:
    """Queue a dead notification again."""
    from adapter.feeds.inbox import InboxStore

    typer.echo(InboxStore(migrated_engine(settings_or_exit())).redrive(event_id, agent=operator()))


def replay(references: Annotated[list[str], typer.Argument(help="e.g. Appointment/123 (one or more)")]) -> None:
    """Re-read resources from the EHR and decide again (after fixing a mapping or a setting).

    Messages already sent are not sent again: their natural keys are still in the outbox.
    """
    settings = settings_or_exit()
    engine = migrated_engine(settings)
    parsed = [reference.partition("/")[::2] for reference in references]
    if not all(resource_id for _, resource_id in parsed):
        typer.secho("give references such as Appointment/123", fg="red", err=True)
        raise typer.Exit(2)
    with progress_bar("replaying resources") as progress:
        decisions = asyncio.run(_replay(settings, engine, parsed, progress))
    for reference, decision in zip(references, decisions, strict=True):
        typer.echo(f"{reference}: queued {len(decision.queued)}, skipped {decision.skipped}, "
                   f"blocked {decision.blocked}")


def _forget(engine: Engine, resource_type: str, resource_id: str) -> None:
    """Audits the replay and forgets what would stop it (:func:`adapter.feeds.replay.forget_decisions`)."""
    from adapter.audit.trail import record
    from adapter.feeds.replay import forget_decisions

    with Session(engine) as session:
        record(session, admin_entry("replay", entity=f"{resource_type}/{resource_id}"))
        forget_decisions(session, resource_type, resource_id)
        session.commit()


async def _replay(settings: Settings, engine: Engine, references: list[tuple[str, str]],
                  progress: Progress | None) -> list[Decision]:
    from adapter.service import start, stop

    service = service_or_exit(settings)
    await start(service)
    decisions = []
    try:
        assert service.fhir is not None and service.pipeline is not None
        for done, (resource_type, resource_id) in enumerate(references, start=1):
            await asyncio.to_thread(_forget, engine, resource_type, resource_id)
            resource = await service.fhir.read(resource_type, resource_id)
            decisions.append(await service.pipeline.handle_resource(resource))
            if progress is not None:
                progress(done, len(references))
    finally:
        await stop(service)
    return decisions
