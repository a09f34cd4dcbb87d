"""Progress display for long work, on stderr.

On a terminal: an N/M action counter, a spinner while planning, and a bar per running action
that reports steps (an engine build: TensorRT's phases and steps), then one line per
finished action. Off a terminal (a pipe, CI): only the finished lines, plain, unwrapped and
without color; ``NO_COLOR`` also turns color off on a terminal. ``--json`` turns it all off,
and callers get a no-op ``advance`` so they need no ``if progress:`` branches.

Verbosity: ``quiet`` prints no per-action lines (errors still reach the user through the
CLI); ``verbose`` also streams every line an action logs (TensorRT's builder log).
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

# Environment variables with which rich treats a pipe as a terminal.
_FORCING_TERMINAL = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_TERMINAL")


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def escape(text: str) -> str:
    """rich's markup escape, imported when first needed (only a terminal display needs it)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def color_allowed() -> bool:
    """https://no-color.org: any non-empty NO_COLOR turns color off."""
    return not os.environ.get("NO_COLOR")


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
    "would-build": "yellow", "failed": "bold red", "skipped": "dim", "cancelled": "bold red",
}


def finished_line(record: Any, done: int, total: int) -> str:
    """One finished action, plain text: ``[2/3]       built  engine[rank0]  1.20s``."""
    detail = ""
    if record.reason and record.status not in ("shared", "failed"):
        detail = f"  {record.reason}"
    counter = f"[{done}/{total}] " if total else ""
    return f"{counter}{record.status:>11}  {record.id}  {record.seconds:.2f}s{detail}"


class ActionProgress:
    """Build progress for one or more targets (see the module docstring).

    A Reporter (``started``/``finished``) and an ActionObserver (``log``/``progress``) for
    ``trtcas.build``; ``begin(target)`` shows the planning spinner and ``planned(n)`` sets
    the counter's total.
    """

    def __init__(self, enabled: bool = True, quiet: bool = False, verbose: bool = False):
        self.enabled = enabled and not quiet
        self.verbose = verbose and enabled
        # Off a terminal, rich is not even imported (a no-op build in a script pays for no
        # console); where something might make rich call stderr a terminal, rich decides.
        self.console = None
        self.terminal = False
        if stderr_is_terminal() or any(os.environ.get(name) for name in _FORCING_TERMINAL):
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False, no_color=not color_allowed(), soft_wrap=True)
            self.terminal = self.console.is_terminal
        self.live = self.enabled and self.terminal  # bars only for a person watching
        self._progress = None
        self._tasks: dict[str, int] = {}
        self._counter: int | None = None
        self._total = 0
        self._done = 0
        self._lock = threading.Lock()

    # ---- lifetime ------------------------------------------------------------------------
    def __enter__(self) -> "ActionProgress":
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                TimeElapsedColumn(), console=self.console, transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def begin(self, target: str) -> None:
        """A new target: planning starts (a spinner; planning loads TensorRT)."""
        with self._lock:
            self._total = self._done = 0
            if self._progress is not None:
                if self._counter is not None:
                    self._progress.remove_task(self._counter)
                self._counter = self._progress.add_task(f"planning {escape(target)}", total=None)
                self._target = target

    def planned(self, total: int) -> None:
        with self._lock:
            self._total = total
            if self._progress is not None and self._counter is not None:
                self._progress.update(self._counter, description=f"building {escape(self._target)}", total=total)

    # ---- Reporter --------------------------------------------------------------------------
    def started(self, action: Any) -> None:
        if self._progress is not None:
            with self._lock:
                self._tasks[action.id] = self._progress.add_task(f"  {escape(action.id)} [dim]({action.rule})[/]", total=None)

    def finished(self, record: Any) -> None:
        with self._lock:
            self._done += 1
            task = self._tasks.pop(record.id, None)
            if self._progress is not None:
                if task is not None:
                    self._progress.remove_task(task)
                if self._counter is not None:
                    self._progress.update(self._counter, completed=self._done)
        if not self.enabled:
            return
        line = finished_line(record, self._done, self._total)
        if not self.terminal:
            self._plain(line)
            return
        style = _STATUS_STYLE.get(record.status, "")
        status = f"[{style}]{record.status:>11}[/]"
        self.console.print(escape(line).replace(f"{record.status:>11}", status, 1))

    # ---- ActionObserver --------------------------------------------------------------------
    def log(self, action_id: str, line: str) -> None:
        if self.verbose:
            text = f"{action_id} | {line}"
            if self.terminal:
                self.console.print(escape(text), style="dim")
            else:
                self._plain(text)

    def progress(self, action_id: str, phase: str, step: int, total: int) -> None:
        if self._progress is None:
            return
        with self._lock:
            task = self._tasks.get(action_id)
            if task is not None:
                self._progress.update(task, description=f"  {escape(action_id)} [dim]{escape(phase)}[/]",
                                      total=max(total, step) or None, completed=step)

    def _plain(self, line: str) -> None:
        with self._lock:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
