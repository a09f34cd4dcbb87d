"""Large buffers that are used again, inside a block that decodes many tensors and lets
each one go soon after (placing a checkpoint from the store).

Why: every decoded tensor used to land in fresh memory, and fresh memory costs the kernel a
page fault and a zeroing per page: on the VM here that was 18% of placing a 2.2 GB
checkpoint (``clear_page_erms``). Inside ``reusing()``, ``empty`` hands out a buffer of the
same size that an earlier array gave back, and an array gives its buffer back when the
last view of it is gone (``weakref.finalize`` on the array that owns the memory, which every
view of it keeps alive), so a buffer is never handed out while something still reads it.
Outside the block, or for small sizes, ``empty`` is ``numpy.empty``. At most ``keep_bytes``
wait to be used again; the block's end lets them all go, so nothing stays resident after.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from trtcas.cas.huge_pages import private_buffer

MIN_BYTES = 1 << 20  # smaller buffers come from malloc's own free lists anyway


class _Pool:
    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self._free: dict[int, list[memoryview]] = {}
        self._kept = 0
        self._open = True
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            waiting = self._free.get(nbytes)
            buffer = waiting.pop() if waiting else None
            if buffer is not None:
                self._kept -= nbytes
        if buffer is None:
            buffer = private_buffer(nbytes)
        array = np.frombuffer(buffer, dtype=np.uint8)
        weakref.finalize(array, self._give_back, buffer)
        return array

    def _give_back(self, buffer: memoryview) -> None:
        with self._lock:
            if self._open and self._kept + buffer.nbytes <= self.keep_bytes:
                self._free.setdefault(buffer.nbytes, []).append(buffer)
                self._kept += buffer.nbytes

    def close(self) -> None:
        with self._lock:
            self._open = False
            self._free.clear()
            self._kept = 0


_active: _Pool | None = None
_active_lock = threading.Lock()


@contextmanager
def reusing(keep_bytes: int = 512 << 20) -> Iterator[None]:
    """Within the block, ``empty`` reuses the buffers of arrays that are gone (every thread
    of the process sees the block: decoding runs on worker threads)."""
    global _active
    pool = _Pool(keep_bytes)
    with _active_lock:
        previous, _active = _active, pool
    try:
        yield
    finally:
        with _active_lock:
            _active = previous
        pool.close()


def empty(nbytes: int) -> np.ndarray:
    """``nbytes`` of uninitialised uint8 memory for the caller to fill entirely."""
    pool = _active
    if pool is None or nbytes < MIN_BYTES:
        return np.empty(nbytes, dtype=np.uint8)
    return pool.take(nbytes)
