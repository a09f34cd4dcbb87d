"""One SQLite database shared by threads and processes: a connection per thread, WAL mode.

The stat cache and the counters both live in small SQLite files that many builds touch at
once; both want the same setup (WAL so readers never wait for a writer, ``synchronous =
NORMAL`` since losing the last transactions after a power cut only costs a re-hash or a
count) and a bounded busy wait, because neither may stall a build for long.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path


class ThreadLocalSqlite:
    """Lazily opened, per-thread connections to ``db_path``, created with ``schema``."""

    def __init__(self, db_path: str | os.PathLike, schema: str, busy_timeout_s: float):
        self.db_path = Path(db_path)
        self.schema = schema
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.db_path, timeout=self.busy_timeout_s, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(self.schema)
            self._local.conn = conn
        return conn
