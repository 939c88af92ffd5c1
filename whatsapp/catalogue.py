"""The template catalogue: the project's message templates, in Meta's template-creation format.

One JSON file per template and language (``{name}.{language}.json``) under ``whatsapp/templates``,
shaped as the body of ``POST /{WABA-ID}/message_templates``
(https://developers.facebook.com/docs/whatsapp/business-management-api/message-templates).
``${PUBLIC_BASE_URL}`` in a URL button is replaced by the service's public base URL, because a
template's URL prefix is fixed when Meta approves it.

The service uses the catalogue to check mapping rules at start-up (template exists, parameter
counts match); the emulator uses the same files as its registry of approved templates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TEMPLATE_DIR = Path(__file__).parent / "templates"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
_FILE_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)\.(?P<language>[A-Za-z_]+)\.json$")


class CatalogueError(ValueError):
    """A template file is missing, unreadable or not in Meta's template format."""


@dataclass(frozen=True)
class ButtonShape:
    """One button of a template: its Meta type (``QUICK_REPLY``, ``URL``, …) and its position."""

    index: int
    type: str
    text: str
    url: str | None = None

    @property
    def is_dynamic_url(self) -> bool:
        return self.type == "URL" and bool(self.url and _PLACEHOLDER.search(self.url))


@dataclass(frozen=True)
class Template:
    """An approved template in one language, with the shape a send must match."""

    name: str
    language: str
    category: str
    parameter_format: str  # POSITIONAL or NAMED
    body_text: str
    body_parameters: tuple[str, ...]  # "1", "2", … or names, in order of appearance
    header_parameters: tuple[str, ...]
    buttons: tuple[ButtonShape, ...]
    raw: dict[str, Any]

    @property
    def body_parameter_count(self) -> int:
        return len(self.body_parameters)


def _placeholders(text: str) -> tuple[str, ...]:
    seen: list[str] = []
    for match in _PLACEHOLDER.finditer(text):
        if match.group(1) not in seen:
            seen.append(match.group(1))
    return tuple(seen)


def parse_template(raw: dict[str, Any], *, source: str = "<template>") -> Template:
    """Reads one template-creation body into a :class:`Template`; raises :class:`CatalogueError`."""
    try:
        name = str(raw["name"])
        language = str(raw["language"])
        components = list(raw["components"])
    except (KeyError, TypeError) as exc:
        raise CatalogueError(f"{source}: a template needs name, language and components") from exc
    body_text = ""
    body_params: tuple[str, ...] = ()
    header_params: tuple[str, ...] = ()
    buttons: list[ButtonShape] = []
    for component in components:
        kind = str(component.get("type", "")).upper()
        if kind == "BODY":
            body_text = str(component.get("text", ""))
            body_params = _placeholders(body_text)
        elif kind == "HEADER" and component.get("format", "TEXT") == "TEXT":
            header_params = _placeholders(str(component.get("text", "")))
        elif kind == "BUTTONS":
            for index, button in enumerate(component.get("buttons", [])):
                buttons.append(
                    ButtonShape(index=index, type=str(button.get("type", "")).upper(),
                                text=str(button.get("text", "")), url=button.get("url"))
                )
    if not body_text:
        raise CatalogueError(f"{source}: template {name!r} has no BODY component")
    return Template(
        name=name,
        language=language,
        category=str(raw.get("category", "UTILITY")).upper(),
        parameter_format=str(raw.get("parameter_format", "POSITIONAL")).upper(),
        body_text=body_text,
        body_parameters=body_params,
        header_parameters=header_params,
        buttons=tuple(buttons),
        raw=raw,
    )


class TemplateCatalogue:
    """Approved templates by (name, language)."""

    def __init__(self, templates: Iterable[Template]) -> None:
        self._by_key: dict[tuple[str, str], Template] = {}
        for template in templates:
            self._by_key[(template.name, template.language)] = template

    @classmethod
    def load(cls, directory: Path = DEFAULT_TEMPLATE_DIR, *, public_base_url: str = "") -> TemplateCatalogue:
        if not directory.is_dir():
            raise CatalogueError(f"template folder {directory} does not exist")
        templates = []
        for path in sorted(directory.glob("*.json")):
            match = _FILE_NAME.match(path.name)
            if not match:
                raise CatalogueError(f"{path.name}: template files are named <name>.<language>.json")
            text = path.read_text(encoding="utf-8").replace("${PUBLIC_BASE_URL}", public_base_url.rstrip("/"))
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CatalogueError(f"{path.name}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
            template = parse_template(raw, source=path.name)
            if (template.name, template.language) != (match["name"], match["language"]):
                raise CatalogueError(f"{path.name}: file name does not match name/language inside")
            templates.append(template)
        return cls(templates)

    def get(self, name: str, language: str) -> Template | None:
        return self._by_key.get((name, language))

    def languages(self, name: str) -> list[str]:
        return sorted(lang for (n, lang) in self._by_key if n == name)

    def names(self) -> list[str]:
        return sorted({n for (n, _) in self._by_key})

    def __iter__(self) -> Iterator[Template]:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)
