"""``bridge replay`` against the real sekmet-fhir EHR: several references in one run, each re-read and
decided again, with a bar on stderr (one step per reference) only when asked; stdout is the same with or
without it, and a reference without an id is refused before anything is read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from adapter.cli.main import app
from adapter.cli.progress import set_mode
from tests.support.fhir_server import RunningFhirServer, start_fhir_server
from tests.support.synthetic import synthetic_appointment, synthetic_patient

pytestmark = pytest.mark.fhir


@pytest.fixture(scope="module")
def ehr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFhirServer]:
    server = start_fhir_server(tmp_path_factory.mktemp("replay-ehr"))
    yield server
    server.stop()


def _create(ehr: RunningFhirServer, resource: dict[str, object]) -> str:
    response = httpx.post(f"{ehr.base_url}/{resource['resourceType']}", json=resource, timeout=10)
    response.raise_for_status()
    return f"{resource['resourceType']}/{response.json()['id']}"


def test_replay_decides_each_reference_and_draws_a_bar_only_when_asked(
        ehr: RunningFhirServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("MODE", "demo"), ("DATABASE_URL", f"sqlite:///{tmp_path / 'bridge.db'}"),
                        ("FHIR_BASE_URL", ehr.base_url), ("MANAGE_SUBSCRIPTIONS", "false")):
        monkeypatch.setenv(f"BRIDGE_{name}", value)
    patient = _create(ehr, synthetic_patient(number=41))
    references = [_create(ehr, synthetic_appointment(patient)) for _ in range(3)]
    runner = CliRunner()
    try:
        drawn = runner.invoke(app, ["--progress", "replay", *references])
        assert drawn.exit_code == 0, drawn.output
        assert "replaying resources" in drawn.stderr and "3/3" in drawn.stderr
        assert [line.split(":")[0] for line in drawn.stdout.splitlines()] == references
        # Replayed again: same decisions (the skips the first run recorded do not refuse the second).
        quiet = runner.invoke(app, ["--no-progress", "replay", *references])
        assert quiet.exit_code == 0 and quiet.stderr == ""
        assert quiet.stdout == drawn.stdout
        refused = runner.invoke(app, ["replay", references[0], "Appointment"])
        assert refused.exit_code == 2 and "Appointment/123" in refused.stderr
    finally:
        set_mode(None)  # --progress is remembered for the process
