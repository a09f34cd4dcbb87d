"""One set of compile targets at a time per process: builds for other targets wait.

TensorRT-RTX keeps its list of target SMs process-wide: two builds in one process for
different targets at once fail ("Target SM 120 is not found in the accelerator list"),
while builds for the same targets run in parallel fine (seen on 1.7.1.116). So concurrent
builds share the gate when their targets are equal and take turns otherwise. A build-farm
worker runs one action per process, so this matters only to the local thread pool (a
``[engine] matrix`` built with ``-j 2``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator


class TargetGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._targets: tuple[str, ...] | None = None
        self._holders = 0

    @contextmanager
    def open_for(self, targets: tuple[str, ...]) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._holders == 0 or self._targets == targets)
            self._targets = targets
            self._holders += 1
        try:
            yield
        finally:
            with self._cond:
                self._holders -= 1
                if self._holders == 0:
                    self._targets = None
                    self._cond.notify_all()


BUILD_GATE = TargetGate()
