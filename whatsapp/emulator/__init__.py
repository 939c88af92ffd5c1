"""A local stand-in for the WhatsApp Cloud API, for demos and tests.

:mod:`~whatsapp.emulator.app` (send endpoint), :mod:`~whatsapp.emulator.management` (message templates),
:mod:`~whatsapp.emulator.operator` (``/_emulator/`` endpoints), :mod:`~whatsapp.emulator.validation` and
:mod:`~whatsapp.emulator.interactive` (request checks), :mod:`~whatsapp.emulator.limits` (token buckets),
:mod:`~whatsapp.emulator.clock` (virtual time), :mod:`~whatsapp.emulator.tunables` (run-time settings),
:mod:`~whatsapp.emulator.webhooks` and :mod:`~whatsapp.emulator.payloads` (what Meta posts back),
:mod:`~whatsapp.emulator.inbound` (simulated users), :mod:`~whatsapp.emulator.templates` (the registry).
"""

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
