"""What can go wrong talking to a remote cache. A miss (404) is never one of these: the
tiered store turns each of them into a warning and a miss."""

from __future__ import annotations

from trtcas.errors import TrtcasError


class RemoteError(TrtcasError):
    """A remote-cache request failed. A 404 is a miss, never this."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class RemoteUnavailable(RemoteError):
    """Connection refused or reset, timeout, or 5xx, still so after the retries."""


class RemoteRejected(RemoteError):
    """The server answered with a status the protocol has no use for (401, 403, 413, ...)."""


class RemoteDisabled(RemoteError):
    """The circuit breaker is open: the remote is off for the rest of this process."""
