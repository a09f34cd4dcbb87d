"""Remember file digests by inode and timestamps, so an unchanged multi-GB file is not re-read.

The rule is ccache's: a file whose mtime or ctime is within the filesystem clock's
granularity of the moment we hashed it may still be written to in that same tick without
its timestamps changing, so such a digest is never recorded. ctime is part of the key
because nothing short of ``utime`` + ``rename`` tricks can rewind it; a same-size rewrite
that restores the mtime still moves the ctime.

Any SQLite problem (locked too long, corrupt, read-only) degrades to "not cached": a
stat cache may make a build slower, never wrong. A database another process keeps locked
costs each query at most ``busy_timeout_s`` and the whole stat cache at most
``busy_budget_s``: after that it is bypassed for the rest of this process (one build),
with one warning, and every file is simply hashed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

from trtcas.cas.digest import Digest, hash_file
from trtcas.cas.sqlite import ThreadLocalSqlite

log = logging.getLogger(__name__)

# 2 s covers the coarsest common filesystem clock (FAT); ext4/xfs are far finer.
DEFAULT_GRANULARITY_NS = 2_000_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stat_digest_v2 (
    dev INTEGER NOT NULL, ino INTEGER NOT NULL, kind TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    hex TEXT NOT NULL, digest_size INTEGER NOT NULL,
    PRIMARY KEY (dev, ino, kind)
)
"""


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class StatCache:
    """(dev, ino, kind) + (size, mtime_ns, ctime_ns) -> digest, in SQLite, many processes."""

    def __init__(self, db_path: str | os.PathLike, granularity_ns: int = DEFAULT_GRANULARITY_NS,
                 busy_timeout_s: float = 0.25, busy_budget_s: float = 2.0):
        self.db_path = Path(db_path)
        self.granularity_ns = granularity_ns
        self.busy_budget_s = busy_budget_s
        self._db = ThreadLocalSqlite(self.db_path, _SCHEMA, busy_timeout_s=busy_timeout_s)
        self._busy_spent = 0.0
        self._bypassed = False
        self._lock = threading.Lock()
        # (dev, ino, kind, algo, signature) -> the digest being computed: two actions keyed on
        # one file (every rank's convert reads every shard) hash it once, not once each
        self._in_flight: dict[tuple, Future] = {}

    @property
    def bypassed(self) -> bool:
        return self._bypassed

    def _conn(self) -> sqlite3.Connection:
        if self._bypassed:
            raise sqlite3.OperationalError("stat cache bypassed")
        return self._db.connection()

    def _query(self, sql: str, args: tuple) -> list:
        """Run one statement; time lost to a locked database counts against the budget."""
        start = time.monotonic()
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                self._spend(time.monotonic() - start)
            raise

    def _spend(self, seconds: float) -> None:
        with self._lock:
            self._busy_spent += seconds
            if self._bypassed or self._busy_spent < self.busy_budget_s:
                return
            self._bypassed = True
        log.warning("stat cache %s is locked by another process; bypassing it for the rest of this build "
                    "(files are hashed instead of looked up)", self.db_path)

    def lookup(self, path: str | os.PathLike, algo: str, kind: str | None = None) -> Digest | None:
        """The recorded digest if the file is provably unchanged since it was hashed."""
        try:
            st = os.stat(path)
            rows = self._query(
                "SELECT size, mtime_ns, ctime_ns, hex, digest_size FROM stat_digest_v2 WHERE dev=? AND ino=? AND kind=?",
                (st.st_dev, st.st_ino, kind or algo),
            )
        except (OSError, sqlite3.Error):
            return None
        row = rows[0] if rows else None
        if row is None or tuple(row[:3]) != _signature(st):
            return None
        # digest_size, not the file's size: a compressed blob's content is larger than its file
        return Digest(algo, row[3], row[4])

    def digest_of(
        self,
        path: str | os.PathLike,
        algo: str,
        compute: Callable[[Path, str], Digest] = hash_file,
        kind: str | None = None,
    ) -> Digest:
        """Digest of ``path``, from the cache when its stat signature still matches.

        ``kind`` separates different digests of the same file (e.g. the digest of a
        compressed blob's *decompressed* content); it defaults to ``algo``.
        """
        cached = self.lookup(path, algo, kind)
        if cached is not None:
            return cached
        before = os.stat(path)
        flight = (before.st_dev, before.st_ino, kind or algo, algo, _signature(before))
        with self._lock:
            running = self._in_flight.get(flight)
            if running is None:
                self._in_flight[flight] = mine = Future()
        if running is not None:  # another thread is hashing this very file: wait for its answer
            return running.result()
        try:
            digest = compute(Path(path), algo)
            after = os.stat(path)
            if _signature(before) == _signature(after) and self._old_enough(after):
                self._record(after, kind or algo, digest)
            mine.set_result(digest)
            return digest
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._in_flight[flight]

    def _old_enough(self, st: os.stat_result) -> bool:
        newest = max(st.st_mtime_ns, st.st_ctime_ns)
        return time.time_ns() - newest > self.granularity_ns

    def _record(self, st: os.stat_result, kind: str, digest: Digest) -> None:
        try:
            self._query(
                "INSERT OR REPLACE INTO stat_digest_v2 VALUES (?,?,?,?,?,?,?,?)",
                (st.st_dev, st.st_ino, kind, *_signature(st), digest.hex, digest.size),
            )
        except (OSError, sqlite3.Error):
            pass  # a stat cache that cannot write is a slower build, not a failed one

    def forget(self, path: str | os.PathLike) -> None:
        try:
            st = os.stat(path)
            self._query("DELETE FROM stat_digest_v2 WHERE dev=? AND ino=?", (st.st_dev, st.st_ino))
        except (OSError, sqlite3.Error):
            pass

    def remember_written(self, path: str | os.PathLike, digest: Digest, kind: str | None = None) -> None:
        """Record the digest of a file trtcas itself just wrote from bytes it had hashed
        (a blob, an output), even though it is younger than the clock's granularity.

        The clock rule guards against a writer still writing in the same tick; here the
        writer was us, done and renamed into place (read-only), so re-reading the file to
        learn what we know would only cost a no-op build its O(1)."""
        try:
            self._record(os.stat(path), kind or digest.algo, digest)
        except OSError:
            pass


class NullStatCache:
    """A stat cache that remembers nothing: every lookup hashes (dvc's ``StateNoop``)."""

    def lookup(self, path, algo, kind=None) -> None:
        return None

    def digest_of(self, path, algo, compute=hash_file, kind=None) -> Digest:
        return compute(Path(path), algo)

    def forget(self, path) -> None:
        return None

    def remember_written(self, path, digest, kind=None) -> None:
        return None
