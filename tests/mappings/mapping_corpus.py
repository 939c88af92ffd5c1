"""The FHIR inputs the mapping tests run over: the public examples (``tests/fixtures/fhir``) plus our synthetic
fixtures (``tests/mappings/fixtures``).

Files are grouped into *file sets* by the prefix before ``__`` (``r4spec``, ``uscore``, ``msconv``,
``synthetic``, …): a reference such as ``Patient/example`` is resolved first inside the same file
(Bundles: by ``fullUrl`` or ``Type/id``), then inside the same file set, because ``Patient/example``
means a different person in the R4 spec examples than in US Core.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.examples import EXAMPLES_DIR, json_files

FIXTURES_DIR = Path(__file__).parent / "fixtures"
_REF_TAIL = re.compile(r"([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


@dataclass
class Case:
    """One Appointment or DiagnosticReport with whatever the corpus says about its patient and references."""

    file: str
    resource: dict[str, Any]
    patient: dict[str, Any] | None
    related: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.file}:{self.resource['resourceType']}/{self.resource.get('id', '?')}"


def unpack(document: dict[str, Any], full_url: str | None = None) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Every resource in a document, Bundles (nested too) unpacked, with its fullUrl when it has one."""
    yield full_url, document
    if document.get("resourceType") == "Bundle":
        for entry in document.get("entry") or []:
            if isinstance(entry.get("resource"), dict):
                yield from unpack(entry["resource"], entry.get("fullUrl"))


def _keys(full_url: str | None, resource: dict[str, Any]) -> list[str]:
    keys = []
    if full_url:
        keys.append(full_url)
        tail = _REF_TAIL.search(full_url)
        if tail:
            keys.append(tail.group(1))
    if resource.get("id"):
        keys.append(f"{resource['resourceType']}/{resource['id']}")
    return keys


def _resolve(reference: str, *indexes: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    tail = _REF_TAIL.search(reference)
    for index in indexes:
        for key in (reference, tail.group(1) if tail else None):
            if key and key in index:
                return index[key]
    return None


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def load_cases() -> list[Case]:
    """Every Appointment and DiagnosticReport in the examples and fixtures; raises if there are none, so the tests
    parametrised over them fail at collection rather than run over nothing."""
    files = json_files(EXAMPLES_DIR) + json_files(FIXTURES_DIR)
    documents = {path: json.loads(path.read_text(encoding="utf-8")) for path in files}
    by_file: dict[Path, dict[str, dict[str, Any]]] = {}
    by_set: dict[str, dict[str, dict[str, Any]]] = {}
    for path, document in documents.items():
        file_index = by_file.setdefault(path, {})
        set_index = by_set.setdefault(path.name.split("__")[0], {})
        for full_url, resource in unpack(document):
            for key in _keys(full_url, resource):
                file_index.setdefault(key, resource)
                set_index.setdefault(key, resource)
    cases = []
    for path, document in documents.items():
        indexes = (by_file[path], by_set[path.name.split("__")[0]])
        for _, resource in unpack(document):
            if resource.get("resourceType") not in ("Appointment", "DiagnosticReport"):
                continue
            patient = None
            related = []
            for reference in dict.fromkeys(_references(resource)):
                target = _resolve(reference, *indexes)
                if target is None or target is resource:
                    continue
                if target.get("resourceType") == "Patient" and patient is None:
                    patient = target
                elif target.get("resourceType") != "Patient":
                    related.append(target)
            cases.append(Case(path.name, resource, patient, related))
    if not cases:
        raise LookupError(f"no Appointment or DiagnosticReport in {EXAMPLES_DIR} or {FIXTURES_DIR}")
    return cases


class FakeMinter:
    """Mints tokens shaped like the real ones (43 URL-safe characters from an HMAC), deterministically."""

    def __init__(self, subject: str, key: bytes = b"test-only-minting-key") -> None:
        self._subject = subject
        self._key = key
        self._count = 0
        self.minted: list[str] = []

    def _mint(self, purpose: str) -> str:
        self._count += 1
        message = f"{self._subject}|{purpose}|{self._count}".encode()
        token = base64.urlsafe_b64encode(hmac.new(self._key, message, hashlib.sha256).digest()).rstrip(b"=").decode()
        self.minted.append(token)
        return token

    def link(self, target: str) -> str:
        return self._mint(f"link:{target}")

    def action(self, action: str) -> str:
        return self._mint(f"action:{action}")
