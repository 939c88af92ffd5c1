"""Loading the settings: build and validate them, and turn every validation error into one readable
line that names the setting and its ``BRIDGE_*`` variable, never the value (a secret may be wrong)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from adapter.settings.errors import SettingsError
from adapter.settings.model import Settings
from adapter.settings.sources import ENV_PREFIX


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        return f"{location}: unknown setting (check the spelling against the README's settings table)"
    if not location:
        return message
    return f"{location} (env {ENV_PREFIX}{location.upper()}): {message}"


def load_settings(**overrides: Any) -> Settings:
    """Builds and validates the settings; raises :class:`SettingsError` listing every problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors(include_input=False, include_url=False):
            text = _describe(dict(error))
            problems.extend(part.strip() for part in text.split("\n") if part.strip())
        raise SettingsError(problems) from None
