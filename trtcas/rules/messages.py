"""The shapes of the one-line errors rules raise: a checked condition, a short list of
names, a TensorRT message tidied into one line."""

from __future__ import annotations

from typing import Sequence

from trtcas.errors import TrtcasError


def require(ok: bool, message: str) -> None:
    """Raise ``message`` as a one-line user error unless ``ok``."""
    if not ok:
        raise TrtcasError(message)


def name_list(names: Sequence[str], shown: int = 4) -> str:
    """``'a', 'b', 'c' (+5 more)``: enough names to act on, never a wall of them."""
    more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


def tidy_message(text: str, limit: int = 400) -> str:
    """A TensorRT message as one line: lines joined with `` | ``, without the CUDA-driver
    noise every driverless machine appends ("cudaError 35: CUDA driver version is
    insufficient"), cut at ``limit`` characters. For one-line :class:`TrtcasError` texts."""
    parts = [ln.strip() for ln in str(text).splitlines()]
    parts = [p for p in parts if p and "cudaError 35" not in p]
    line = " | ".join(parts) or "no description"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def last_error(lines: Sequence[str]) -> str:
    """The last ``[E]``/``[F]`` line of a TensorRT log, tidied; "" when there is none."""
    return tidy_message(lines[-1].removeprefix("[E] ").removeprefix("[F] ")) if lines else ""
