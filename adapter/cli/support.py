"""What every ``bridge`` command group shares: settings loaded or a clear exit, a migrated engine,
the composed service or a clear exit, the audit entry of an operator command, output, and the check of
content a hospital approves. Command
groups live in their own modules in :mod:`adapter.cli` and import these."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from sqlalchemy.engine import Engine

from adapter.settings import Settings, SettingsError, load_settings
from mappings.approved import ContentError, Finding

T = TypeVar("T")

if TYPE_CHECKING:
    from adapter.audit.trail import AuditEntry
    from adapter.service import Service


def say(text: str) -> None:
    typer.echo(text)


def fail(text: str, code: int = 1) -> typer.Exit:
    """Prints ``text`` in red on stderr and returns the exit to raise."""
    typer.secho(text, fg="red", err=True)
    return typer.Exit(code)


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as error:
        raise fail(str(error), 2) from None


def migrated_engine(settings: Settings) -> Engine:
    from adapter.storage.db import make_engine, upgrade

    engine = make_engine(settings.database_url)
    upgrade(engine)
    return engine


def service_or_exit(settings: Settings) -> Service:
    """The composed service, or a clear message and exit 2 when rules or templates are wrong."""
    from adapter.service import build_service
    from mappings.conversation import ConversationError
    from mappings.errors import MappingError
    from whatsapp.catalogue import CatalogueError

    try:
        return build_service(settings)
    except (MappingError, CatalogueError, ConversationError, SettingsError) as error:
        raise fail(str(error), 2) from None


def audit_admin(engine: Engine, command: str, *, entity: str | None = None, patient: str | None = None,
                **detail: str | int | bool | None) -> None:
    """Records an operator command (``admin``, agent ``cli:<user>``) for commands whose change is
    made by another module in a transaction of its own: recorded right after it, in a second one."""
    from adapter.audit.trail import record
    from adapter.storage.db import transaction

    with transaction(engine) as session:
        record(session, admin_entry(command, entity=entity, patient=patient, **detail))


def admin_entry(command: str, *, entity: str | None = None, patient: str | None = None,
                **detail: str | int | bool | None) -> AuditEntry:
    from adapter.audit.trail import Action, AuditEntry, Kind

    return AuditEntry(kind=Kind.ADMIN, action=Action.UPDATE, agent=operator(), patient_ref=patient,
                      entity_ref=entity, detail={"command": command, **detail})


def operator() -> str:
    """Who runs a command, as the audit trail names them (``cli:<os user>``)."""
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except (KeyError, OSError):
        return "cli:unknown"


def maintenance_url(settings: Settings, override: str | None = None) -> str:
    """The database URL for audit purges and grants: ``--database-url``, else
    ``audit_maintenance_database_url``, else (SQLite only) the service's own file. On PostgreSQL the
    application's role may not delete audit records, so there is no fallback to its URL."""
    if override:
        return override
    if settings.audit_maintenance_database_url is not None:
        return settings.audit_maintenance_database_url.get_secret_value()
    if settings.is_sqlite:
        return settings.database_url
    raise fail("set BRIDGE_AUDIT_MAINTENANCE_DATABASE_URL (or pass --database-url) to the owner role's URL: the "
               "application's role cannot delete or grant on audit records", 2)


def check_approved_content(where: Path, load: Callable[[Path], T], check: Callable[[T, date], Sequence[Finding]],
                           describe: Callable[[T, date], str], *, today: str | None, strict: bool) -> None:
    """``bridge knowledge check`` / ``bridge education check``: prints each problem with where it is, then a
    summary; exits 1 on an error (the service would refuse the content) or, with ``strict``, a warning,
    and 2 on a bad ``--today``."""
    try:
        day = date.fromisoformat(today) if today else date.today()
    except ValueError:
        typer.secho(f"--today must be a date such as 2027-01-31, not {today!r}", fg="red", err=True)
        raise typer.Exit(2) from None
    try:
        content = load(where)
    except ContentError as error:
        for reason in error.problems:
            typer.echo(f"error: {reason}")
        typer.secho(f"{where}: {len(error.problems)} error(s); the service will not start with this content", fg="red")
        raise typer.Exit(1) from None
    problems = check(content, day)
    for problem in problems:
        typer.echo(str(problem))
    errors = sum(p.level == "error" for p in problems)
    warnings = len(problems) - errors
    failed = errors > 0 or (strict and warnings > 0)
    typer.secho(f"{where}: {describe(content, day)}; {errors} error(s), {warnings} warning(s)",
                fg="red" if failed else "green")
    if failed:
        raise typer.Exit(1)
