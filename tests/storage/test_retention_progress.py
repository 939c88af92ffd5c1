"""Retention runs report progress through a plain callback, one step per category, and ``bridge retention
run`` draws it on stderr only when asked or on a terminal; stdout is the same with or without the bar."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from adapter.cli.main import app
from adapter.cli.progress import set_mode
from adapter.maintenance.retention import CATEGORIES, RetentionPolicy, run_retention


@pytest.fixture
def automatic_bars() -> Iterator[None]:
    """``--progress`` is remembered for the process: later tests get the automatic mode back."""
    yield
    set_mode(None)


@pytest.mark.parametrize("dry_run", [True, False])
def test_each_category_is_reported_up_to_the_total(engine: Engine, dry_run: bool) -> None:
    calls: list[tuple[int, int | None]] = []
    report = run_retention(engine, RetentionPolicy(), dry_run=dry_run,
                           progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, len(CATEGORIES)) for done in range(1, len(CATEGORIES) + 1)]
    assert list(report.counts) == [category.name for category in CATEGORIES]


def test_the_bar_goes_to_stderr_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                automatic_bars: None) -> None:
    monkeypatch.setenv("BRIDGE_MODE", "demo")
    monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'bridge.db'}")
    runner = CliRunner()
    quiet = runner.invoke(app, ["retention", "run", "--dry-run"])  # CliRunner's stderr is not a terminal
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == "" and "total: would remove 0" in quiet.stdout
    drawn = runner.invoke(app, ["--progress", "retention", "run", "--dry-run"])
    assert drawn.exit_code == 0, drawn.output
    assert "retention categories" in drawn.stderr and f"{len(CATEGORIES)}/{len(CATEGORIES)}" in drawn.stderr
    assert drawn.stdout == quiet.stdout
    monkeypatch.setenv("BRIDGE_PROGRESS", "1")  # the setting does what the option does
    assert "retention categories" in runner.invoke(app, ["retention", "run", "--dry-run"]).stderr
