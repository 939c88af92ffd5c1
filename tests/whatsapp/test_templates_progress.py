"""Template sync reports progress through a plain callback (templates the WABA already holds once listed,
then one per creation tried, up to the catalogue's size) against the real emulator over HTTP, and
``bridge templates sync`` draws it on stderr only when asked; stdout is the same with or without it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapter.cli.main import app
from adapter.cli.progress import set_mode
from adapter.outbox.template_sync import sync
from adapter.settings import DEMO_SECRET, load_settings
from adapter.storage.db import make_engine, upgrade
from whatsapp.catalogue import TemplateCatalogue
from whatsapp.emulator import EmulatorConfig, EmulatorServer

BASE = "https://bridge.example"


@pytest.fixture
def waba(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TemplateCatalogue]:
    """A WABA (the emulator) holding only one of the project's templates; the settings point at it."""
    only_one = TemplateCatalogue([t for t in TemplateCatalogue.load(public_base_url=BASE) if t.name == "results_ready"])
    with EmulatorServer(EmulatorConfig(access_token=DEMO_SECRET, app_secret=DEMO_SECRET,
                                       catalogue=only_one)) as emulator:
        for name, value in (("MODE", "demo"), ("DATABASE_URL", f"sqlite:///{tmp_path / 'bridge.db'}"),
                            ("WHATSAPP_API_BASE_URL", emulator.base_url), ("PUBLIC_BASE_URL", BASE)):
            monkeypatch.setenv(f"BRIDGE_{name}", value)
        yield only_one
    set_mode(None)  # --progress is remembered for the process


def test_sync_counts_held_templates_then_each_creation(waba: TemplateCatalogue) -> None:
    settings = load_settings()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    catalogue = TemplateCatalogue.load(public_base_url=BASE)
    calls: list[tuple[int, int | None]] = []
    report = asyncio.run(sync(settings, engine, catalogue, lambda done, total: calls.append((done, total))))
    held = sum(1 for t in catalogue if (t.name, t.language) in {(w.name, w.language) for w in waba})
    assert held >= 1 and len(report.created) == len(catalogue) - held
    assert calls[0] == (held, len(catalogue))  # after the listing
    assert [done for done, _ in calls] == [*range(held, len(catalogue) + 1), len(catalogue)]
    assert {total for _, total in calls} == {len(catalogue)}
    again: list[tuple[int, int | None]] = []
    asyncio.run(sync(settings, engine, catalogue, lambda done, total: again.append((done, total))))
    assert again == [(len(catalogue), len(catalogue))] * 2  # nothing to create: full at once
    engine.dispose()


def test_the_bar_goes_to_stderr_only_when_asked(waba: TemplateCatalogue) -> None:
    runner = CliRunner()
    drawn = runner.invoke(app, ["--progress", "templates", "sync"])
    assert drawn.exit_code == 0, drawn.output
    total = len(TemplateCatalogue.load(public_base_url=BASE))
    assert "syncing templates" in drawn.stderr and f"{total}/{total}" in drawn.stderr
    quiet = runner.invoke(app, ["--no-progress", "templates", "sync"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    # Same lines (the second run finds every template: "exists" where the first said "created").
    assert [line.split("\t")[:2] for line in quiet.stdout.splitlines()] == \
        [line.split("\t")[:2] for line in drawn.stdout.splitlines()]
    assert "\tcreated\t" in drawn.stdout and "\tcreated\t" not in quiet.stdout
