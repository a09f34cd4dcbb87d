"""A circuit breaker: a remote that keeps failing is turned off instead of costing a
timeout per action."""

from __future__ import annotations

import threading

from trtcas.cas.remote.errors import RemoteDisabled


class CircuitBreaker:
    """Counts consecutive failed requests; at ``threshold`` the remote is off for good.

    Off for the rest of the process, not for a cool-down: a build is minutes long, and a
    server that failed several requests in a row is better treated as absent than probed
    again at the cost of a timeout per action.
    """

    def __init__(self, threshold: int):
        self.threshold = max(1, threshold)
        self._failures = 0
        self._lock = threading.Lock()
        self.reason: str | None = None

    def check(self, where: str) -> None:
        if self.reason is not None:
            raise RemoteDisabled(f"remote cache {where} is disabled for this process ({self.reason})")

    def success(self) -> None:
        with self._lock:
            self._failures = 0

    def failure(self, message: str) -> None:
        with self._lock:
            self._failures += 1
            if self._failures >= self.threshold and self.reason is None:
                self.reason = f"{self._failures} consecutive failures, last: {message}"
