"""Progress display for long work, on stderr, only when a person is watching.

Piped or ``--json`` output stays clean: the display turns itself off when stderr is not a
terminal, and callers get a no-op ``advance`` so they need no ``if progress:`` branches.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def byte_progress(description: str, total: int | None = None, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(nbytes)``; shows a transfer-speed bar while the block runs."""
    if not (enabled and stderr_is_terminal()):
        yield lambda nbytes: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda nbytes: bar.advance(task, nbytes)
