"""Remote caches: one ``Remote`` protocol, one module per backend, chosen by URL scheme.

``open_remote(url, algo)`` is how the rest of trtcas gets a remote; it never names a
backend class. Backends register by scheme in ``REMOTE_BACKENDS`` through the
``trtcas.remotes`` entry point group (name = scheme, value = a callable with ``(url, algo,
**options)`` returning a Remote; trtcas's own ``http``/``https``, the Bazel HTTP cache
protocol in ``http.py``, are declared there too), so a plugin package adds one the same
way, as bazel-remote keeps one folder per backend behind one cache interface.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Callable, Protocol, TypeVar

from trtcas.cas.digest import Digest
from trtcas.cas.remote.errors import RemoteDisabled, RemoteError, RemoteRejected, RemoteUnavailable
from trtcas.cas.remote.url import redact_url
from trtcas.errors import TrtcasError
from trtcas.registry import Registry

T = TypeVar("T")

__all__ = [
    "Remote", "open_remote", "REMOTE_BACKENDS", "redact_url",
    "RemoteError", "RemoteUnavailable", "RemoteRejected", "RemoteDisabled",
]


class Remote(Protocol):
    """What the tiered store needs of a remote cache.

    Faults raise ``RemoteError`` subclasses; a miss is ``None``/``False``, never an error.
    """

    url: str  # for messages: credentials already removed
    algo: str

    @property
    def disabled(self) -> bool: ...
    @property
    def disabled_reason(self) -> str | None: ...
    def distrust(self, digest: Digest) -> None: ...
    def trusts(self, digest: Digest) -> bool: ...
    def head_blob(self, digest: Digest) -> bool: ...
    def get_blob(self, digest: Digest, consume: Callable[[Any], T]) -> T | None: ...
    def put_blob(self, digest: Digest, open_stream: Callable[[], BinaryIO]) -> None: ...
    def get_action(self, key: Digest) -> bytes | None: ...
    def put_action(self, key: Digest, data: bytes) -> None: ...
    def close(self) -> None: ...


RemoteFactory = Callable[..., Remote]


def http_remote(url: str, algo: str, **options: Any) -> Remote:
    """The Bazel HTTP cache backend (``http.py``), imported only when a URL asks for it."""
    from trtcas.cas.remote.http import HttpRemote

    return HttpRemote(url, algo, **options)


REMOTE_BACKENDS: Registry[RemoteFactory] = Registry("remote cache scheme", entry_point_group="trtcas.remotes")


def open_remote(url: str, algo: str, **options: Any) -> Remote:
    """The remote cache at ``url``, by its scheme; one clear error for an unknown scheme."""
    scheme = url.strip().split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in REMOTE_BACKENDS:
        known = ", ".join(f"{s}://" for s in REMOTE_BACKENDS.names())
        raise TrtcasError(f"remote cache URL {redact_url(url)!r}: unknown scheme (supported: {known})")
    return REMOTE_BACKENDS.get(scheme)(url, algo, **options)
