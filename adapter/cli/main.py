"""``bridge``: the one console script — run the service, the demo, the emulator, and the
operator commands (settings check, migrations, subscriptions, opt-in registry, skips, dead letters).

This module only assembles the commands; each group lives in its own module of :mod:`adapter.cli`.
Every command reads the same settings as the service, so a wrong setting is reported the same way.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from typing import Annotated

import typer

from adapter.cli.alerts import alerts_app, sending_app
from adapter.cli.audit import audit_app
from adapter.cli.configure import check_settings, keys_new, migrate
from adapter.cli.consent import consent_app
from adapter.cli.credentials import credentials_app
from adapter.cli.education import education_app
from adapter.cli.failures import dead_app, inbox_app, replay, skips
from adapter.cli.feeds import feeds_app
from adapter.cli.hl7 import hl7_app
from adapter.cli.keys import keys_app
from adapter.cli.knowledge import knowledge_app
from adapter.cli.links import assertion_app, links_app
from adapter.cli.notices import notices_app
from adapter.cli.progress import set_mode
from adapter.cli.retention import retention_app
from adapter.cli.runners import demo, emulator, serve
from adapter.cli.smart import smart_app
from adapter.cli.subscriptions import subscriptions_app
from adapter.cli.templates import templates_app
from adapter.settings import SettingsError

app = typer.Typer(help="FHIR ↔ WhatsApp bridge.", no_args_is_help=True, add_completion=False)


def package_version() -> str:
    try:
        return installed_version("fhir-whatsapp-bridge")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"bridge {package_version()}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the installed version and exit.")] = False,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", envvar="BRIDGE_PROGRESS",
        help="Progress bars on stderr for long commands (default: only when stderr is a terminal).")] = None,
) -> None:
    set_mode(progress)


def version_command() -> None:
    """Print the installed version."""
    typer.echo(f"bridge {package_version()}")


# Commands are listed in `bridge --help` in the order they are added here.
app.command()(serve)
app.command()(demo)
app.command()(emulator)
app.command("check-settings")(check_settings)
app.command("migrate")(migrate)
app.command("keys-new")(keys_new)
app.command()(skips)
app.command()(replay)
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(consent_app, name="consent")
app.add_typer(dead_app, name="dead-letters")
app.add_typer(inbox_app, name="inbox")
app.add_typer(sending_app, name="sending")
app.add_typer(alerts_app, name="alerts")
app.add_typer(templates_app, name="templates")
app.add_typer(links_app, name="links")
app.add_typer(assertion_app, name="assertion-keys")
app.add_typer(audit_app, name="audit")
app.add_typer(credentials_app, name="credentials")
app.add_typer(hl7_app, name="hl7")
app.add_typer(keys_app, name="keys")
app.add_typer(knowledge_app, name="knowledge")
app.add_typer(education_app, name="education")
app.add_typer(notices_app, name="notices")
app.add_typer(retention_app, name="retention")
app.add_typer(smart_app, name="smart")
app.add_typer(feeds_app, name="feeds")
app.command("version")(version_command)


def main() -> None:
    try:
        app()
    except SettingsError as error:  # raised while reading a settings file
        typer.secho(str(error), fg="red", err=True)
        sys.exit(2)
