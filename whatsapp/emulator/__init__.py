"""A local stand-in for the WhatsApp Cloud API, for demos and tests (see :mod:`whatsapp.emulator.app`)."""

from whatsapp.emulator.app import create_emulator_app
from whatsapp.emulator.config import EmulatorConfig, StatusDelays, WebhookRetryPolicy
from whatsapp.emulator.server import EmulatorServer, run_emulator

__all__ = [
    "EmulatorConfig",
    "EmulatorServer",
    "StatusDelays",
    "WebhookRetryPolicy",
    "create_emulator_app",
    "run_emulator",
]
