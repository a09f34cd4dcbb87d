"""Persistent hit/miss counters for ``trtcas cache stats``.

Counting must never fail or slow a build: increments are kept in memory and written in one
transaction by ``flush()`` (called at the end of a build, and at exit). One commit per cache
hit was measured at 0.56 ms, half the cost of a cached action. Every SQLite error is
swallowed: a lost increment is a slightly wrong hit rate, nothing more.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import threading
import weakref
from pathlib import Path

from trtcas.cas.sqlite import ThreadLocalSqlite

_LIVE: "weakref.WeakSet[Counters]" = weakref.WeakSet()
_SCHEMA = "CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"


@atexit.register
def _flush_all() -> None:
    for counters in list(_LIVE):
        counters.flush()


class Counters:
    """Named integer counters in ``<cache>/stats.sqlite``, shared by all processes."""

    def __init__(self, db_path: str | os.PathLike):
        self.db_path = Path(db_path)
        self._db = ThreadLocalSqlite(self.db_path, _SCHEMA, busy_timeout_s=2)  # once per build: a locked file costs a lost count, not a stall
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()
        _LIVE.add(self)

    def _conn(self) -> sqlite3.Connection:
        return self._db.connection()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._pending[name] = self._pending.get(name, 0) + amount

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            with self._conn() as conn:
                conn.execute("BEGIN")
                conn.executemany(
                    "INSERT INTO counter VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                    sorted(pending.items()),
                )
                conn.execute("COMMIT")
        except sqlite3.Error:
            pass

    def read(self) -> dict[str, int]:
        """Stored counts plus this process's unflushed ones."""
        self.flush()
        if not self.db_path.exists():
            return {}
        try:
            return dict(self._conn().execute("SELECT name, value FROM counter").fetchall())
        except sqlite3.Error:
            return {}
