"""``bridge templates``: the message templates in the WhatsApp Business Account — ``sync`` creates the
project's templates the WABA lacks and records every template's review state (exit 1 when the WABA cannot
be reached or a template failed); ``status`` shows the states as last synced or reported by Meta's
webhooks."""

from __future__ import annotations

import asyncio

import typer

from adapter.cli.progress import progress_bar
from adapter.cli.support import audit_admin, migrated_engine, settings_or_exit

templates_app = typer.Typer(help="Message templates in the WhatsApp Business Account.", no_args_is_help=True)


@templates_app.command("sync")
def templates_sync() -> None:
    """Create the project's templates the WABA lacks, and record every template's review state."""
    from adapter.outbox.template_sync import sync
    from whatsapp.catalogue import TemplateCatalogue
    from whatsapp.errors import WhatsAppError

    settings = settings_or_exit()
    engine = migrated_engine(settings)
    try:
        catalogue = TemplateCatalogue.load(public_base_url=settings.public_base_url)
        with progress_bar("syncing templates") as progress:
            report = asyncio.run(sync(settings, engine, catalogue, progress))
    except WhatsAppError as error:
        typer.secho(f"could not reach the WhatsApp Business Account: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    audit_admin(engine, "templates.sync", templates=len(report.items), failed=bool(report.failed))
    for item in report.items:
        typer.echo(f"{item.name}\t{item.language}\t{item.action}\t{item.remote_status or '-'}"
                   + (f"\t{item.error_code or ''} {item.error}" if item.error else ""))
    if report.failed:
        raise typer.Exit(1)


@templates_app.command("status")
def templates_status() -> None:
    """The review state of each template, as last synced or reported by Meta's webhooks."""
    from adapter.outbox.templates import list_states

    for state in sorted(list_states(migrated_engine(settings_or_exit())), key=lambda s: (s.name, s.language)):
        typer.echo(f"{state.name}\t{state.language}\t{state.status}\t{state.updated_at:%Y-%m-%d %H:%M}"
                   + (f"\t{state.reason}" if state.reason else ""))

