"""What every ``bridge`` command group shares: settings loaded or a clear exit, a migrated engine,
and output. Command groups live in their own modules (``cli_*.py``) and import these."""

from __future__ import annotations

import getpass

import typer
from sqlalchemy.engine import Engine

from adapter.settings import Settings, SettingsError, load_settings


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
