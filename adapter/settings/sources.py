"""Where settings come from besides ``BRIDGE_*`` environment variables: the optional YAML file named by
``BRIDGE_SETTINGS_FILE`` (keys without the prefix). Environment variables win over the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from adapter.settings.errors import SettingsError

ENV_PREFIX = "BRIDGE_"
SETTINGS_FILE_ENV = "BRIDGE_SETTINGS_FILE"


class YamlFileSource(PydanticBaseSettingsSource):
    """Reads the optional YAML file named by ``BRIDGE_SETTINGS_FILE`` (keys without the prefix)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get(SETTINGS_FILE_ENV)
        self._data: dict[str, Any] = {}
        if path:
            file = Path(path)
            if not file.is_file():
                raise SettingsError([f"{SETTINGS_FILE_ENV} points to {path}, which is not a file"])
            try:
                loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise SettingsError([f"{path} is not valid YAML: {exc}"]) from exc
            if not isinstance(loaded, dict):
                raise SettingsError([f"{path} must hold a mapping of setting names to values"])
            self._data = loaded

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)
