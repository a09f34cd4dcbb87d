"""Leases: a running build says "I am using this cache", so gc keeps what it uses.

Pins are written when a build ends; until then nothing named what the build had looked up
or stored, and a concurrent ``gc`` could evict the entry a build just hit, or a blob it had
just found already stored (``put`` of existing content writes nothing). A lease closes that
gap: one small file per running build under ``<cache>/leases/``, holding its start time,
and appended with every blob the build re-used without writing it. gc keeps everything
used since the oldest live lease started and every blob a lease names (see ``cas.gc``).

A lease whose process is gone (SIGKILL, power cut) is stale: gc ignores and removes it, so a
crashed build cannot hold the cache forever. Liveness is the process id on this host; a
lease written by another host (a cache dir on a shared file system) counts while its file
is younger than ``FOREIGN_LEASE_S``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from trtcas.cas.digest import Digest

FOREIGN_LEASE_S = 24 * 3600


@dataclass(frozen=True)
class LeaseInfo:
    """A live lease as gc sees it."""

    path: Path
    started: float
    blobs: frozenset[str]  # digest texts the build re-used


class Lease:
    """The lease file of one build; ``note`` records a re-used blob (thread-safe: one
    ``O_APPEND`` write per line)."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        host = os.uname().nodename.replace("/", "_")[:64]
        self.path = root / f"{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}.lease"
        self.started = time.time()
        head = json.dumps({"host": host, "pid": os.getpid(), "started": self.started})
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, (head + "\n").encode())

    def note(self, digest: Digest) -> None:
        try:
            os.write(self._fd, f"{digest}\n".encode())
        except OSError:
            pass  # a lease that cannot grow still protects by its start time

    def release(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
        self.path.unlink(missing_ok=True)


@contextmanager
def hold_lease(store) -> Iterator[Lease]:
    """Hold a lease on ``store`` (a ContentStore) for the block; re-used blobs are noted."""
    lease = Lease(store.layout.leases_root)
    store.blobs.reuse_listener = lease.note
    try:
        yield lease
    finally:
        store.blobs.reuse_listener = None
        lease.release()


def live_leases(root: Path, remove_stale: bool = True) -> list[LeaseInfo]:
    """Leases of builds still running; stale ones are removed when ``remove_stale``."""
    leases = []
    if not root.is_dir():
        return leases
    this_host = os.uname().nodename.replace("/", "_")[:64]
    for path in root.glob("*.lease"):
        try:
            lines = path.read_text().splitlines()
            head = json.loads(lines[0])
            alive = pid_alive(int(head["pid"])) if head["host"] == this_host else \
                time.time() - path.stat().st_mtime < FOREIGN_LEASE_S
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue  # being written right now, or unreadable: neither protects nor is removed
        if alive:
            leases.append(LeaseInfo(path, float(head["started"]), frozenset(lines[1:])))
        elif remove_stale:
            path.unlink(missing_ok=True)
    return leases


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
