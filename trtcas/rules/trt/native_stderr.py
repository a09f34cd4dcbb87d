"""Lines TensorRT's native code writes straight to file descriptor 2, routed into the log.

Most of TensorRT speaks through the ``ILogger`` it is given, but some native code writes to
stderr directly: Myelin prints ``Internal Error: MyelinCheckException: ... CHECK(status ==
CUDA_SUCCESS) failed.`` when a refittable build runs without a GPU. Around a builder call,
:func:`native_stderr_to` points fd 2 at a pipe and hands every line read from it to the
given sink (the build's logger), so the line lands in the action's log (``trtcas log``) and
in the error diagnosis instead of on the user's terminal.

fd 2 belongs to the whole process, so the redirect is shared and counted: the first builder
call sets it up, the last restores it, and lines seen while several builds run go to each
of their sinks. The CLI moves Python's own ``sys.stderr`` off fd 2 (see
``trtcas.cli.main``), so its progress and messages never pass through here; a Python
program calling ``trtcas.build`` keeps fd 2, and what it writes to stderr from another
thread during a builder call goes to that build's log too.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_LOCK = threading.Lock()
_SINKS: list[Callable[[str], None]] = []
_STATE: dict[str, object] = {}  # saved fd, pipe write end, reader thread while redirected


@contextmanager
def native_stderr_to(sink: Callable[[str], None]) -> Iterator[None]:
    """While the block runs, each line written to fd 2 is passed to ``sink``."""
    with _LOCK:
        if not _SINKS and not _start():
            yield  # fd 2 cannot be redirected here (closed, or no pipes): leave it alone
            return
        _SINKS.append(sink)
    try:
        yield
    finally:
        _drain()  # what was written inside the block reaches this sink before it goes
        with _LOCK:
            _SINKS.remove(sink)
            if not _SINKS:
                _stop()


_MARK = "\x00trtcas-drain-"
_DRAINED: dict[str, threading.Event] = {}


def _drain() -> None:
    """Wait until the reader has passed on everything written to fd 2 so far."""
    token = f"{threading.get_ident()}-{id(object())}"
    done = _DRAINED.setdefault(token, threading.Event())
    try:
        os.write(2, f"{_MARK}{token}\n".encode())
        done.wait(timeout=5)
    except OSError:
        pass
    finally:
        _DRAINED.pop(token, None)


def _start() -> bool:
    try:
        saved = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        return False
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_pump, args=(read_end,), name="trtcas-native-stderr", daemon=True)
    reader.start()
    _STATE.update(saved=saved, reader=reader)
    return True


def _stop() -> None:
    saved, reader = _STATE.pop("saved"), _STATE.pop("reader")
    os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees EOF
    os.close(saved)
    reader.join(timeout=5)


def _pump(read_end: int) -> None:
    with os.fdopen(read_end, "rb") as pipe:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip()
            line, marked, token = line.partition(_MARK)
            if line:
                with _LOCK:
                    sinks = list(_SINKS)
                for sink in sinks:
                    sink(line)
            if marked and token in _DRAINED:
                _DRAINED[token].set()
