"""Where the public FHIR R4 examples the tests run over are: ``tests/fixtures/fhir`` in this repository
(provenance and licences in its ``SOURCES.md``), so a bare clone runs every test over the same files."""

from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"


def json_files(folder: Path) -> list[Path]:
    """The ``*.json`` files in ``folder``, sorted. Raises when there are none: a test parametrised over them would
    otherwise collect nothing and pass silently; raising at import makes collection fail instead."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json files in {folder}: the tests built from them would collect nothing")
    return files
