"""``bridge links`` and ``bridge assertion-keys``: portal links revoked at once (one link, a message's,
a patient's, or those created in a time window; the next tap gets the neutral "no longer valid" page),
addresses rate-limited for probing tokens, and the Ed25519 keys that sign hand-off assertions to the
portal (created, rotated with the next key published ahead of use, shown as a public key set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from adapter.cli.support import audit_admin, migrated_engine, operator, settings_or_exit
from adapter.settings import Settings

links_app = typer.Typer(help="Portal links: revocation, probing.", no_args_is_help=True)
assertion_app = typer.Typer(help="Keys that sign hand-off assertions to the portal.", no_args_is_help=True)


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

    from adapter.audit.link_access import LINK_PORTS
    from portal_links import revocation

    engine = migrated_engine(settings_or_exit())
    who = operator()
    chosen = [name for name, value in (("link", link), ("message", message), ("patient", patient),
                                       ("window", created_from or created_to)) if value is not None]
    if len(chosen) != 1:
        typer.secho("give exactly one of --link, --message, --patient, or --created-from with --created-to",
                    fg="red", err=True)
        raise typer.Exit(2)
    if link is not None:
        count = revocation.revoke_link(engine, link, ports=LINK_PORTS, agent=who)
    elif message is not None:
        count = revocation.revoke_message(engine, message, ports=LINK_PORTS, agent=who)
    elif patient is not None:
        count = revocation.revoke_patient(engine, patient, ports=LINK_PORTS, agent=who)
    else:
        try:
            start, end = datetime.fromisoformat(created_from or ""), datetime.fromisoformat(created_to or "")
        except ValueError:
            typer.secho("--created-from and --created-to must both be ISO 8601 times", fg="red", err=True)
            raise typer.Exit(2) from None
        if start.tzinfo is None or end.tzinfo is None:
            typer.secho("give the times with a time zone, e.g. 2026-11-25T08:00:00+00:00", fg="red", err=True)
            raise typer.Exit(2)
        count = revocation.revoke_created_between(engine, start, end, ports=LINK_PORTS, agent=who)
    typer.echo(f"revoked {count} link(s)")


@links_app.command("probes")
def links_probes() -> None:
    """Client addresses rate-limited for unknown, forged or expired tokens in the last hour."""
    from portal_links.guard import recent_rate_limited

    for row in recent_rate_limited(migrated_engine(settings_or_exit())):
        typer.echo(f"{row.client}\t{row.requests} requests\t{row.first_at:%H:%M:%S} to {row.last_at:%H:%M:%S} UTC")


def _assertion_keys_file(settings: Settings) -> Path:
    if settings.portal_assertion_keys_file is None:
        typer.secho("set BRIDGE_PORTAL_ASSERTION_KEYS_FILE to the key file's path first", fg="red", err=True)
        raise typer.Exit(2)
    return settings.portal_assertion_keys_file


@assertion_app.command("create")
def assertion_keys_create() -> None:
    """Create the key file: an active key and the next one (published ahead of use)."""
    from portal_links.assertions.keyring import AssertionKeyRing

    settings = settings_or_exit()
    path = _assertion_keys_file(settings)
    try:
        ring = AssertionKeyRing.create(path)
    except FileExistsError:
        typer.secho(f"{path} exists: use `rotate`", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"created {path}: active {ring.active_key.kid}")
    audit_admin(migrated_engine(settings), "assertion-keys.create", entity=f"assertion-key/{ring.active_key.kid}")


@assertion_app.command("rotate")
def assertion_keys_rotate() -> None:
    """The next key signs from now on; the old one stays published until its assertions expired."""
    from portal_links.assertions.keyring import AssertionKeyRing

    settings = settings_or_exit()
    path = _assertion_keys_file(settings)
    try:
        ring = AssertionKeyRing.load(path).rotate()
    except ValueError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None
    ring.prune().save(path)
    typer.echo(f"rotated: active {ring.active_key.kid}; restart or reload the service to sign with it")
    audit_admin(migrated_engine(settings), "assertion-keys.rotate", entity=f"assertion-key/{ring.active_key.kid}")


@assertion_app.command("show")
def assertion_keys_show() -> None:
    """The published key set (public keys only)."""
    from portal_links.assertions.keyring import AssertionKeyRing

    typer.echo(json.dumps(AssertionKeyRing.load(_assertion_keys_file(settings_or_exit())).jwks(), indent=2))

