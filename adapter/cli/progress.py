"""Progress bars for the long ``bridge`` commands, drawn with rich on stderr so stdout keeps only the
result. Drawn when stderr is a terminal; ``--progress`` / ``BRIDGE_PROGRESS=1`` forces them (a log then
gets the final state), ``--no-progress`` turns them off. The jobs report counts through a plain callback
``(done, total or None)``; the description is fixed text, never a value from a row.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[int, int | None], None]

_forced: bool | None = None  # the --progress/--no-progress option of the last invocation; None: automatic


def set_mode(forced: bool | None) -> None:
    global _forced
    _forced = forced


def enabled() -> bool:
    return _forced if _forced is not None else sys.stderr.isatty()


@contextmanager
def progress_bar(description: str) -> Iterator[Progress | None]:
    """A callback drawing one bar (None when bars are off: the job then skips counting)."""
    if not enabled():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update
