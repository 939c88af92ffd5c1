"""``bridge subscriptions``: the EHR Subscriptions this service needs (:mod:`ehr.subscriptions`), created
or repaired idempotently (``ensure``, audited) or listed with their status."""

from __future__ import annotations

import asyncio
import json

import typer

from adapter.cli.support import audit_admin, migrated_engine, settings_or_exit
from adapter.settings import Settings

subscriptions_app = typer.Typer(help="The EHR Subscriptions this service needs.", no_args_is_help=True)


async def _with_fhir(settings: Settings, action: str) -> list[dict[str, object]]:
    from adapter.feeds.polling import subscribed_specs
    from adapter.service import make_fhir_client, subscription_specs
    from ehr.subscriptions import ensure_subscriptions, subscription_status

    specs = subscription_specs(settings)
    async with make_fhir_client(settings) as client:
        if action == "ensure":
            wanted = subscribed_specs(settings.feed_mode, list(specs.values()))  # polling: none
            states = await ensure_subscriptions(client, wanted, settings.public_base_url,
                                                settings.ehr_hook_secret.get_secret_value().encode())
        else:
            states = await subscription_status(client, list(specs.values()), settings.public_base_url)
    return [{"key": s.key, "id": s.fhir_id, "status": s.status, "action": s.action, "error": s.error}
            for s in states]


@subscriptions_app.command("ensure")
def subscriptions_ensure() -> None:
    """Create or repair the EHR Subscriptions (idempotent)."""
    settings = settings_or_exit()
    states = asyncio.run(_with_fhir(settings, "ensure"))
    for state in states:
        typer.echo(json.dumps(state))
    actions = [str(state["action"]) for state in states]
    audit_admin(migrated_engine(settings), "subscriptions.ensure", subscriptions=len(states),
                changed=sum(action not in ("kept", "None") for action in actions))


@subscriptions_app.command("status")
def subscriptions_status() -> None:
    """Show the EHR Subscriptions and their status."""
    for state in asyncio.run(_with_fhir(settings_or_exit(), "status")):
        typer.echo(json.dumps(state))

