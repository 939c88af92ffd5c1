"""``bridge knowledge check [FILE]``: checks the hospital's approved answers and departments
(:mod:`mappings.knowledge`, :mod:`mappings.knowledge_check`) before the service uses them.

FILE defaults to ``BRIDGE_KNOWLEDGE_FILE``, else the shipped file. Every problem is printed with where
it is; the exit code is 1 when there is an error (the service would refuse to start on the file), or a
warning with ``--strict``; 0 otherwise. Nothing is written and no database is needed.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from adapter.cli.support import check_approved_content

knowledge_app = typer.Typer(help="The front desk's approved answers and departments.", no_args_is_help=True)


@knowledge_app.callback()
def _knowledge() -> None:
    """The front desk's approved answers and departments (a group, so that `check` keeps its name)."""


@knowledge_app.command("check")
def knowledge_check(
    file: Annotated[Path | None, typer.Argument(help="The knowledge file (default: BRIDGE_KNOWLEDGE_FILE, else the "
                                                     "shipped mappings/knowledge/front_desk.yaml).")] = None,
    strict: Annotated[bool, typer.Option(help="Fail on warnings too (expired or expiring entries, long numbers).")]
    = False,
    today: Annotated[str | None, typer.Option(help="Check as of this date (YYYY-MM-DD), e.g. before a release.")]
    = None,
) -> None:
    """Validate the knowledge file: duplicates, expiry, card/SSN/password requests, lengths, languages."""
    from mappings.knowledge import DEFAULT_KNOWLEDGE_FILE, KnowledgeBase
    from mappings.knowledge_check import check

    path = file or Path(os.environ.get("BRIDGE_KNOWLEDGE_FILE") or DEFAULT_KNOWLEDGE_FILE)

    def describe(base: KnowledgeBase, day: date) -> str:
        served = sum(e.valid_on(day) for e in base.entries)
        return (f"{len(base.entries)} entries ({served} served on {day.isoformat()}), "
                f"{len(base.departments)} departments, languages {', '.join(base.languages)}")

    check_approved_content(path, KnowledgeBase.load, check, describe, today=today, strict=strict)
