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
    from adapter.db import make_engine, upgrade

    engine = make_engine(settings.database_url)
    upgrade(engine)
    return engine


def operator() -> str:
    """Who runs a command, as the audit trail names them (``cli:<os user>``)."""
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except (KeyError, OSError):
        return "cli:unknown"
