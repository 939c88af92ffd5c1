"""``bridge consent``: the local opt-in registry (:mod:`adapter.recipients.consent`). A grant or revocation
is recorded with its audit entry in one transaction; a reference that is not ``Patient/<id>`` exits 2."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlmodel import Session

from adapter.cli.support import admin_entry, migrated_engine, settings_or_exit

consent_app = typer.Typer(help="The local opt-in registry.", no_args_is_help=True)


@consent_app.command("grant")
def consent_grant(patient: Annotated[str, typer.Argument(help="FHIR reference, e.g. Patient/123")]) -> None:
    """Record that a patient opted in to WhatsApp messages."""
    _set_consent(patient, "opted_in")


@consent_app.command("revoke")
def consent_revoke(patient: Annotated[str, typer.Argument(help="FHIR reference, e.g. Patient/123")]) -> None:
    """Record that a patient opted out; nothing more is sent to them, and every health-tips topic they
    subscribed to is stopped too (a later grant does not resubscribe them)."""
    _set_consent(patient, "opted_out")


def _set_consent(patient: str, status: str) -> None:
    from adapter.audit.trail import record
    from adapter.education.consent import stop_all
    from adapter.recipients.consent import set_consent
    from adapter.storage.db import transaction

    try:
        with transaction(migrated_engine(settings_or_exit())) as session:
            set_consent(session, patient, status, "admin")
            if status == "opted_in":
                record(session, admin_entry("consent.grant", patient=patient, status=status))
            else:
                topics = stop_all(session, [patient], source="admin")
                record(session, admin_entry("consent.revoke", patient=patient, status=status, topics_stopped=topics))
    except ValueError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{patient}: {status}")


@consent_app.command("list")
def consent_list() -> None:
    """List the opt-in registry."""
    from adapter.recipients.consent import list_consent

    with Session(migrated_engine(settings_or_exit())) as session:
        for record in list_consent(session):
            typer.echo(f"{record.patient_ref}\t{record.status}\t{record.source}\t{record.changed_at:%Y-%m-%d %H:%M}")

