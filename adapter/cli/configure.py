"""``bridge check-settings``, ``bridge migrate``, ``bridge keys-new``: setting an installation up — the
settings validated (secrets masked), the database schema brought to the latest migration, a fresh
32-byte key for a key setting."""

from __future__ import annotations

import base64
import secrets

import typer
from sqlalchemy.engine import make_url

from adapter.cli.support import migrated_engine, settings_or_exit


def check_settings() -> None:
    """Validate the settings and print them, secrets masked."""
    settings = settings_or_exit()
    for name, value in settings.model_dump().items():
        shown = "********" if "SecretStr" in type(getattr(settings, name)).__name__ else value
        if name == "database_url":  # a PostgreSQL URL may carry the role's password
            shown = make_url(str(value)).render_as_string(hide_password=True)
        typer.echo(f"{name} = {shown}")
    typer.secho("settings are valid", fg="green")


def migrate() -> None:
    """Bring the database schema to the latest migration."""
    migrated_engine(settings_or_exit())
    typer.echo("database is at the latest migration")


def keys_new() -> None:
    """Print a fresh random 32-byte key (for data_encryption_key or link_signing_key)."""
    typer.echo(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())

