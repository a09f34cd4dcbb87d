"""Cancelling a build (Ctrl-C): one process-wide flag, and the scratch dirs to remove.

Cancel is cooperative first: the flag is read by the scheduler (no new action starts) and by
rules while they run (the TensorRT rule returns False from its progress monitor's
``step_complete``, which stops the builder). A builder phase that reports no steps (a long
kernel compile) cannot be stopped that way, so the CLI gives a cancelled build a grace
period and then ends the process itself; :func:`remove_live_scratch` first removes the
scratch dirs of the actions still running, so nothing is left behind. Nothing is cached by a
cancelled action: its result is recorded only after the rule returns.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from trtcas.errors import TrtcasError


class BuildCancelled(TrtcasError):
    """The build was cancelled (Ctrl-C); the CLI exits 130."""


_CANCEL = threading.Event()
_LIVE: set[Path] = set()
_LIVE_LOCK = threading.Lock()


def request_cancel() -> None:
    _CANCEL.set()


def cancel_requested() -> bool:
    return _CANCEL.is_set()


def reset_cancel() -> None:
    """For a new build in the same process (tests, the Python API)."""
    _CANCEL.clear()


def raise_if_cancelled() -> None:
    if _CANCEL.is_set():
        raise BuildCancelled("cancelled")


def track_scratch(path: Path) -> None:
    with _LIVE_LOCK:
        _LIVE.add(path)


def untrack_scratch(path: Path) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(path)


def remove_live_scratch() -> None:
    """Remove the scratch dirs of actions still running (before the process ends)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
        _LIVE.clear()
    for path in live:
        shutil.rmtree(path, ignore_errors=True)


GRACE_SECONDS = 1.5  # after Ctrl-C, how long a builder gets to stop on its own


@contextmanager
def cancel_on_sigint(say: Callable[[str], None], grace: float = GRACE_SECONDS) -> Iterator[None]:
    """While the block runs, Ctrl-C cancels the build instead of raising KeyboardInterrupt.

    The first Ctrl-C asks everything to stop (see the module docstring); if the build is
    still running ``grace`` seconds later, or at a second Ctrl-C, the scratch dirs of running
    actions are removed and the process exits 130 at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    timer: list[threading.Timer] = []

    def on_sigint(signum, frame) -> None:
        if cancel_requested():
            exit_now()
        request_cancel()
        say("cancelling (Ctrl-C again to stop at once)")
        timer.append(threading.Timer(grace, exit_now))
        timer[0].daemon = True
        timer[0].start()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for t in timer:
            t.cancel()


def exit_now(code: int = 130) -> None:
    """End the process without waiting for running actions; leave no scratch behind.
    Nothing half-written becomes visible: results are recorded only after a rule returns,
    and every file is written atomically."""
    remove_live_scratch()
    try:
        sys.stderr.write("trtcas: cancelled (the running build step was stopped)\n")
    except (OSError, ValueError):
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
