"""The key-rotation jobs report progress through a plain callback, and ``bridge`` draws it on stderr only
when asked or on a terminal: re-encryption counts every value up to the total, re-indexing counts rows
without a total, and the CLI's stdout is the same with or without bars."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from adapter.cli.main import app
from adapter.cli.progress import set_mode
from adapter.maintenance.reencrypt import reencrypt
from adapter.maintenance.reindex import reindex
from adapter.security.crypto import b64, unb64
from adapter.security.keys import Keyring, LocalWrappingKey
from adapter.storage.db import make_engine, upgrade
from tests.storage.test_key_rotation import PATIENTS, seed


@pytest.fixture
def ring(tmp_path: Path) -> Keyring:
    return Keyring.create(tmp_path / "keyring.json", LocalWrappingKey(os.urandom(32)))


@pytest.fixture
def automatic_bars() -> Iterator[None]:
    """``--progress`` is remembered for the process: later tests get the automatic mode back."""
    yield
    set_mode(None)


def test_reencrypt_reports_increasing_counts_that_reach_the_total(engine: Engine, ring: Keyring) -> None:
    seed(engine, ring)
    ring.rotate("data")
    calls: list[tuple[int, int | None]] = []
    reencrypt(engine, ring, batch_size=3, progress=lambda done, total: calls.append((done, total)))
    values = 4 * PATIENTS  # numbers, recipients, message bodies, inbound contents
    assert calls[-1] == (values, values)
    assert {total for _, total in calls} == {values}
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len({done for done, _ in calls}) > 3  # reported page by page, not once at the end
    nothing: list[tuple[int, int | None]] = []
    reencrypt(engine, ring, progress=lambda done, total: nothing.append((done, total)))
    assert nothing[-1] == (0, 0)


def test_reindex_reports_rows_without_a_total(engine: Engine, ring: Keyring) -> None:
    seed(engine, ring)
    ring.rotate("index")
    calls: list[tuple[int, int | None]] = []
    reindex(engine, ring, batch_size=3, progress=lambda done, total: calls.append((done, total)))
    assert {total for _, total in calls} == {None}
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[-1][0] == PATIENTS  # every contact (its outbox rows move with it)


def test_bars_go_to_stderr_only_when_asked_and_stdout_stays_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      automatic_bars: None) -> None:
    kek = b64(os.urandom(32))
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    for name, value in (("MODE", "demo"), ("DATABASE_URL", url), ("KEYRING_FILE", str(tmp_path / "keyring.json")),
                        ("KEY_WRAPPING_KEY", kek)):
        monkeypatch.setenv(f"BRIDGE_{name}", value)
    runner = CliRunner()
    assert runner.invoke(app, ["keys", "init-keyring"]).exit_code == 0
    engine = make_engine(url)
    upgrade(engine)
    ring = Keyring.load(tmp_path / "keyring.json", LocalWrappingKey(unb64(kek)))
    seed(engine, ring)
    ring.rotate("data")
    quiet = runner.invoke(app, ["keys", "reencrypt"])  # CliRunner's stderr is not a terminal
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    ring.rotate("data")
    drawn = runner.invoke(app, ["--progress", "keys", "reencrypt"])
    assert drawn.exit_code == 0, drawn.output
    assert "re-encrypting values" in drawn.stderr and f"{4 * PATIENTS}/{4 * PATIENTS}" in drawn.stderr
    assert json.loads(drawn.stdout.splitlines()[-1]) == json.loads(quiet.stdout.splitlines()[-1])
    engine.dispose()


def test_version_is_the_installed_one() -> None:
    from importlib.metadata import version

    runner = CliRunner()
    for args in (["--version"], ["version"]):
        shown = runner.invoke(app, args)
        assert shown.exit_code == 0 and shown.stdout == f"bridge {version('fhir-whatsapp-bridge')}\n"
