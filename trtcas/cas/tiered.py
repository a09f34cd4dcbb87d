"""Local cache first, then a shared remote one: what a build asks "have we run this before?".

The remote is an optimisation and a team's shared memory, never a dependency: a remote that
is unreachable, slow, failing or lying turns into a warning and a miss, and a build goes on
as if it were not configured (pip's ``suppressed_cache_errors`` rule). Two invariants hold
whatever the remote does:

- Nothing unverified is stored locally. A remote hit installs each blob only after its bytes
  hashed to their digest while being written (``BlobStore.put_verified_stream``), and the
  local action entry is written last, once every blob it names is in place.
- A remote action entry never points at missing blobs: uploads send the blobs first (a HEAD
  skips those already there) and the action entry last.

Bytes that did not match their digest make the remote untrusted for that digest for the rest
of the process (``Remote.distrust``), and the remote's circuit breaker turns it off
after a few consecutive failed requests, with one warning, so a dead server costs a few
timeouts instead of one per action.
"""

from __future__ import annotations

import logging
import shutil
import threading
from typing import Collection, NamedTuple

from trtcas.cas.actioncache import ActionResult, entry_problem
from trtcas.cas.blobstore import DigestMismatch
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.cas.needs import manifest_tensors
from trtcas.cas.remote import Remote, RemoteDisabled, RemoteRejected
from trtcas.errors import TrtcasError

log = logging.getLogger(__name__)

LOCAL, REMOTE, MISS = "local", "remote", "miss"
_REFUSED = (401, 403)  # credentials refused: asking again gets the same answer
FREE_SPACE_RESERVE = 16 << 20  # a download never leaves the cache's disk with less than this


class ActionLookup(NamedTuple):
    """What a lookup found and where: ``source`` is "local", "remote" or "miss"."""

    result: ActionResult | None
    source: str


class TieredStore:
    """A local ``ContentStore`` in front of an optional ``Remote``.

    ``upload=False`` makes the remote read-only (CI consumers, laptops on a shared cache they
    may not write). ``warnings`` collects one line per remote fault, for the caller to show
    at the end of a build; each is also logged.
    """

    def __init__(self, local: ContentStore, remote: Remote | None = None, *, upload: bool = True):
        if remote is not None and remote.algo != local.algo:
            raise TrtcasError(
                f"remote cache client hashes with {remote.algo} but the cache dir {local.root} uses {local.algo}"
            )
        self.local = local
        self.remote = remote
        self.upload = upload
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        self._announced_off = False
        # After a 401/403 the same credentials are refused again: stop asking, in that
        # direction only (read-only-for-anonymous servers are common).
        self._lookups_refused = False
        self._uploads_refused = False

    # ---- reading ----------------------------------------------------------------------
    def get_action(self, key: Digest, outputs: Collection[str] = ()) -> ActionLookup:
        """The action's result from the local cache, else from the remote (then made local).

        ``outputs`` are the names the action declares (empty: not declared); an entry that
        does not fit them, or names unsafe outputs, is a miss (``actioncache.entry_problem``).
        """
        result = self.local.actions.get(key, outputs=outputs)
        if result is not None:
            return ActionLookup(result, LOCAL)
        if self._lookups_refused or not self._remote_on():
            return ActionLookup(None, MISS)
        try:
            result = self._fetch_action(key, outputs)
        except Exception as exc:  # a remote fault never fails a build
            message = f"remote cache lookup of action {key.short} failed, treated as a miss: {_one_line(exc)}"
            if _refused(exc):
                self._lookups_refused = True
                message += "; no more lookups in this process"
            self._fault(message, exc)
            result = None
        self.local.counters.add("remote_hit" if result is not None else "remote_miss")
        return ActionLookup(result, REMOTE if result is not None else MISS)

    def _fetch_action(self, key: Digest, outputs: Collection[str] = ()) -> ActionResult | None:
        remote = self.remote
        data = remote.get_action(key)
        if data is None:
            return None
        try:
            result = ActionResult.from_bytes(data)
        except Exception as exc:
            raise TrtcasError(f"its action entry is not a trtcas ActionResult ({_one_line(exc)})") from None
        problem = entry_problem(result, outputs)
        if problem:
            raise TrtcasError(f"its action entry does not fit the action: {problem}; nothing was stored")
        refs = result.referenced()
        if not all(self._fetch_blob(key, digest) for digest in dict.fromkeys(refs)):
            return None
        # a manifest output (a convert's weights) is a hit only with its tensors
        if not all(self._fetch_blob(key, digest) for digest in dict.fromkeys(manifest_tensors(self.local.blobs, refs))):
            return None
        self.local.actions.put(key, result)
        return result

    def _fetch_blob(self, key: Digest, digest: Digest) -> bool:
        """Make ``digest`` local from the remote (verified); False if the remote lacks it."""
        remote, max_blob = self.remote, self.local.settings.remote_max_blob_size
        if digest.algo != self.local.algo:
            raise TrtcasError(f"its action entry names a {digest.algo} blob; this cache uses {self.local.algo}")
        if self.local.blobs.has(digest):
            return True
        if digest.size > max_blob:
            raise TrtcasError(
                f"its action entry names a {digest.size}-byte blob, over this cache's remote-max-blob-size "
                f"({max_blob} bytes; raise it with `trtcas cache config remote-max-blob-size`)"
            )
        _check_free_space(self.local, digest)
        if not remote.trusts(digest):
            log.info("remote hit for %s needs %s, which the remote served wrong before: miss", key.short, digest.short)
            return False
        try:
            fetched = remote.get_blob(digest, lambda body, d=digest: self.local.blobs.put_verified_stream(body, d))
        except DigestMismatch as exc:
            remote.distrust(digest)
            raise TrtcasError(
                f"{remote.url} sent wrong bytes for blob {digest} ({_one_line(exc)}); "
                "nothing was stored, and this remote is not trusted for that blob again in this process"
            ) from None
        if fetched is None:
            log.info("remote entry for %s names %s, which the remote does not have: miss", key.short, digest.short)
            return False
        return True

    def lookup(self, key: Digest, outputs: Collection[str] = ()) -> tuple[ActionResult, str] | None:
        """The executor's view: (result, "cached" or "remote"), or None for a miss."""
        found = self.get_action(key, outputs)
        if found.result is None:
            return None
        return found.result, "remote" if found.source == REMOTE else "cached"

    # ---- writing ----------------------------------------------------------------------
    def record(self, key: Digest, result: ActionResult) -> None:
        """The executor's view of ``put_action``: upload faults are warnings, never errors."""
        self.put_action(key, result)

    def put_action(self, key: Digest, result: ActionResult) -> bool:
        """Record a finished action locally, then share it; True if the remote has it now."""
        self.local.actions.put(key, result)
        return self.upload_action(key, result)

    def upload_action(self, key: Digest, result: ActionResult) -> bool:
        """Upload the blobs ``result`` names (skipping those the remote has), then its entry.

        Returns True if the remote now has the entry; False if uploads are off or it failed
        (with a warning): the local cache is unaffected either way.
        """
        if not self.upload or self._uploads_refused or not self._remote_on():
            return False
        remote = self.remote
        try:
            refs = result.referenced()
            for digest in dict.fromkeys(refs + tuple(manifest_tensors(self.local.blobs, refs))):
                if not remote.head_blob(digest):
                    remote.put_blob(digest, lambda d=digest: self.local.blobs.open(d))
            remote.put_action(key, result.to_bytes())
        except Exception as exc:  # a remote fault never fails a build
            message = f"remote cache upload of action {key.short} failed (nothing half-done is visible): {_one_line(exc)}"
            if _refused(exc):
                self._uploads_refused = True
                message += "; no more uploads in this process"
            self._fault(message, exc)
            return False
        return True

    # ---- health -----------------------------------------------------------------------
    def _remote_on(self) -> bool:
        if self.remote is None:
            return False
        if self.remote.disabled:
            self._announce_off()
            return False
        return True

    def _fault(self, message: str, exc: BaseException) -> None:
        self.local.counters.add("remote_error")
        if not isinstance(exc, RemoteDisabled):  # another thread tripped the breaker: no news
            if not isinstance(exc, (TrtcasError, OSError)):
                log.warning("unexpected remote-cache fault (a bug; please report it)", exc_info=exc)
            self._warn(message)
        if self.remote is not None and self.remote.disabled:
            self._announce_off()

    def _announce_off(self) -> None:
        with self._lock:
            if self._announced_off:
                return
            self._announced_off = True
        self._warn(
            f"remote cache {self.remote.url} disabled for the rest of this process "
            f"({self.remote.disabled_reason}); building without it"
        )

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        with self._lock:
            self.warnings.append(message)


def _check_free_space(local: ContentStore, digest: Digest) -> None:
    """Refuse a download the cache's disk cannot hold (with room to spare)."""
    try:
        free = shutil.disk_usage(local.root).free
    except OSError:
        return
    if digest.size + FREE_SPACE_RESERVE > free:
        raise TrtcasError(
            f"blob {digest.short} ({digest.size} bytes) does not fit in the {free} bytes free under {local.root}; "
            "free space or run `trtcas cache gc`"
        )


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, RemoteRejected) and exc.status in _REFUSED


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, TrtcasError) else f"{type(exc).__name__}: {text}"
