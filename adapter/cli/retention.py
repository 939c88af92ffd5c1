"""``bridge retention``: run the retention purges (:mod:`adapter.maintenance.retention`) by hand.

The service also runs them once a day. Audit records are only purged with ``--include-audit``, by
:func:`adapter.audit.purge.purge_audit` over the maintenance database URL (on PostgreSQL the
application role cannot delete audit rows).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from adapter.cli.progress import progress_bar
from adapter.cli.support import migrated_engine, operator, say, settings_or_exit

retention_app = typer.Typer(help="Retention purges of links, message details and contact data.", no_args_is_help=True)


@retention_app.callback()
def _group() -> None:
    """Retention purges of links, message details and contact data."""


@retention_app.command("run")
def run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be removed; change nothing.")] = False,
    include_audit: Annotated[bool, typer.Option(
        "--include-audit", help="Also purge audit records older than retention_audit_years (over "
        "audit_maintenance_database_url on PostgreSQL; the service's own file on SQLite).")] = False,
) -> None:
    """Purges what the retention periods allow and prints the rows removed per category."""
    from adapter.maintenance.retention import RetentionPolicy, run_retention

    settings = settings_or_exit()
    engine = migrated_engine(settings)
    try:
        with progress_bar("retention categories") as progress:
            report = run_retention(engine, RetentionPolicy.from_settings(settings), actor=operator(),
                                   dry_run=dry_run, progress=progress)
    finally:
        engine.dispose()
    verb = "would remove" if dry_run else "removed"
    for name, rows in report.counts.items():
        say(f"{name}: {verb} {rows}")
    say(f"total: {verb} {report.total}")
    if include_audit:
        _purge_audit(dry_run)


def _purge_audit(dry_run: bool) -> None:
    if dry_run:
        say("audit: not purged in a dry run")
        return
    from adapter.cli.audit import run_audit_purge

    report = run_audit_purge(settings_or_exit())
    say("audit: " + ", ".join(f"{name}={value}" for name, value in dataclasses.asdict(report).items()))
