"""``bridge education check [PATH]``: checks the health-education topics and their series
(:mod:`mappings.education_content`, :mod:`mappings.education_check`) before the service uses them.

PATH (a file, or a folder of ``*.yaml``) defaults to ``BRIDGE_EDUCATION_DIR``, else the shipped
``mappings/education``. Every problem is printed with where it is; the exit code is 1 when there is an
error (the service would refuse the content), or a warning with ``--strict``; 0 otherwise. Nothing is
written and no database is needed.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from adapter.cli.support import check_approved_content

education_app = typer.Typer(help="Health-education topics patients subscribe to.", no_args_is_help=True)


@education_app.callback()
def _education() -> None:
    """Health-education topics patients subscribe to (a group, so that `check` keeps its name)."""


@education_app.command("check")
def education_check(
    path: Annotated[Path | None, typer.Argument(help="A content file or folder (default: BRIDGE_EDUCATION_DIR, else "
                                                     "the shipped mappings/education).")] = None,
    strict: Annotated[bool, typer.Option(help="Fail on warnings too (expired or expiring items, long numbers).")]
    = False,
    today: Annotated[str | None, typer.Option(help="Check as of this date (YYYY-MM-DD), e.g. before a release.")]
    = None,
) -> None:
    """Validate the education content: duplicates, expiry, card/SSN/password requests, lengths, languages."""
    from mappings.education_check import check
    from mappings.education_content import DEFAULT_EDUCATION_DIR, EducationContent

    where = path or Path(os.environ.get("BRIDGE_EDUCATION_DIR") or DEFAULT_EDUCATION_DIR)

    def describe(content: EducationContent, day: date) -> str:
        items = sum(len(t.items) for t in content.topics)
        return f"{len(content.topics)} topics, {items} items, languages {', '.join(content.languages)}"

    check_approved_content(where, EducationContent.load, check, describe, today=today, strict=strict)
