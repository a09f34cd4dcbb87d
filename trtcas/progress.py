"""Progress display for long work, on stderr, only when a person is watching.

Piped or ``--json`` output stays clean: the display turns itself off when stderr is not a
terminal, and callers get a no-op ``advance`` so they need no ``if progress:`` branches.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.markup import escape


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


_STATUS_STYLE = {
    "built": "yellow", "cached": "green", "remote": "cyan", "shared": "blue",
    "would-build": "yellow", "failed": "bold red", "skipped": "dim",
}


class ActionProgress:
    """Build progress: a spinner with elapsed time per running action, and one line per
    finished action (status, id, seconds). On a non-terminal it prints only the lines."""

    def __init__(self, enabled: bool = True):
        from rich.console import Console

        self.enabled = enabled
        self.console = Console(stderr=True, highlight=False)
        self._progress = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> "ActionProgress":
        if self.enabled and self.console.is_terminal:  # spinners only for a person watching
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=self.console, transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def started(self, action) -> None:
        if self._progress is not None:
            self._tasks[action.id] = self._progress.add_task(f"{escape(action.id)} [dim]({action.rule})[/]", total=None)

    def finished(self, record) -> None:
        task = self._tasks.pop(record.id, None)
        if task is not None:
            self._progress.remove_task(task)
        if not self.enabled:
            return
        style = _STATUS_STYLE.get(record.status, "")
        detail = ""
        if record.error:
            detail = f"  [red]{escape(record.error)}[/]"
        elif record.reason and record.status != "shared":
            detail = f"  [dim]{escape(record.reason)}[/]"
        self.console.print(f"[{style}]{record.status:>11}[/]  {escape(record.id)}  [dim]{record.seconds:.2f}s[/]{detail}")
