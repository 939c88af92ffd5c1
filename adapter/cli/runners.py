"""``bridge serve``, ``bridge demo``, ``bridge emulator``: the long-running processes — the service with the
configured settings (uvicorn), the self-contained demo (sandbox EHR, WhatsApp emulator, service) and the
WhatsApp Cloud API emulator on its own."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from adapter.cli.support import say, service_or_exit, settings_or_exit
from adapter.ops.logs import LogFormat, configure_logging
from adapter.settings import DEMO_SECRET


def _logging(log_format: LogFormat = "text") -> None:
    configure_logging(os.environ.get("BRIDGE_LOG_LEVEL", "INFO"), log_format)


def serve() -> None:
    """Run the service (HTTP endpoints and the pipeline) with the configured settings."""
    import uvicorn

    from adapter.app import create_app

    settings = settings_or_exit()
    _logging(settings.log_format)
    application = create_app(settings, service=service_or_exit(settings))
    # On SIGTERM uvicorn stops taking requests, the lifespan lets the pipeline finish the sends in
    # flight (adapter/app.py), then uvicorn re-raises the signal: this handler makes that clean stop exit 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    uvicorn.run(application, host=settings.http_host, port=settings.http_port, log_level="info",
                log_config=None,  # uvicorn's lines go through the root handler: one format, redacted
                access_log=False,  # access logs would carry portal-link tokens in their paths
                # Longer than clients keep idle connections, so an EHR never writes a notification
                # onto a connection we are closing (seen as a lost request under burst load).
                timeout_keep_alive=75)


def demo(once: Annotated[bool, typer.Option(help="Exit after showing the messages.")] = False,
         workdir: Annotated[Path | None, typer.Option(help="Folder for the demo's files.")] = None,
         feed: Annotated[Literal["fhir", "hl7"], typer.Option(
             help="How the EHR's changes arrive: FHIR Subscriptions, or HL7 v2 SIU/ORU over MLLP.")] = "fhir",
         ) -> None:
    """Start a sandbox EHR, the WhatsApp emulator and the service; show what patients receive."""
    from adapter.demo.run import run_demo

    logging.basicConfig(level=logging.WARNING)
    raise typer.Exit(run_demo(say, keep_running=not once, workdir=workdir, feed=feed))


def emulator(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 in a container).")] = "127.0.0.1",
    webhook_url: Annotated[str | None, typer.Option(help="Where to POST status webhooks.")] = None,
    public_base_url: Annotated[str, typer.Option(help="The service's public URL (template links).")] =
        "http://127.0.0.1:8000",
) -> None:
    """Run the WhatsApp Cloud API emulator standalone (demo token and app secret)."""
    from whatsapp.emulator.config import EmulatorConfig
    from whatsapp.emulator.server import run_emulator

    settings = settings_or_exit(mode="demo")
    token = os.environ.get("BRIDGE_WHATSAPP_ACCESS_TOKEN", DEMO_SECRET)
    secret = os.environ.get("BRIDGE_WHATSAPP_APP_SECRET", DEMO_SECRET)
    run_emulator(EmulatorConfig(access_token=token, app_secret=secret, webhook_url=webhook_url,
                                public_base_url=public_base_url,
                                phone_numbers={settings.whatsapp_phone_number_id: "+1 555 0100"},
                                waba_id=settings.whatsapp_waba_id), host=host, port=port)

