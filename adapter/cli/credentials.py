"""``bridge credentials``: API keys for the auditor/admin API (see :mod:`adapter.security`). Each
command is audited with the operator as agent; a key is printed once and never stored in clear."""

from __future__ import annotations

from typing import Annotated

import typer

from adapter.audit.trail import Action, AuditEntry, Kind, record
from adapter.cli.support import fail, migrated_engine, operator, say, settings_or_exit
from adapter.security.credentials import CredentialError, create_credential, list_credentials, revoke_credential
from adapter.security.roles import Role
from adapter.storage.db import transaction

credentials_app = typer.Typer(help="API keys for the auditor and admin API.", no_args_is_help=True)


@credentials_app.command("create")
def create(name: str, role: Annotated[Role, typer.Option("--role", help="auditor, privacy_officer, operator, admin or "
                                                                            "integration")]) -> None:
    """Creates a credential and prints its key: the only time it is shown."""
    engine = migrated_engine(settings_or_exit())
    try:
        key = create_credential(engine, name, role, operator())
    except CredentialError as error:
        raise fail(str(error)) from None
    say(f"created {name} ({role.value}); its key, shown only now:")
    say(key)


@credentials_app.command("list")
def list_() -> None:
    """Names, roles and states (never keys)."""
    engine = migrated_engine(settings_or_exit())
    rows = list_credentials(engine)
    with transaction(engine) as session:
        record(session, AuditEntry(Kind.ADMIN, Action.READ, agent=operator(), detail={"op": "credential-list"}))
    if not rows:
        say("no credentials")
    for row in rows:
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        say(f"{row.name}\t{row.role}\t{state}\tcreated {row.created_at:%Y-%m-%d %H:%M}")


@credentials_app.command("revoke")
def revoke(name: str) -> None:
    """Revokes a credential and ends its sessions at once."""
    engine = migrated_engine(settings_or_exit())
    try:
        revoke_credential(engine, name, operator())
    except CredentialError as error:
        raise fail(str(error)) from None
    say(f"revoked {name}")
