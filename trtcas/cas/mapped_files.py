"""Whole-file read-only mappings shared, within one action, by the hash of its source inputs
and the action's own reads of them.

Why: a cold convert hashes each checkpoint file for its key, then maps the same file again
to read its tensors, so the kernel builds and tears down the page tables of the whole model
twice (~0.25 s of CPU per 2.2 GB, on a machine with two cores). Inside ``sharing()`` (the
runner opens it around an action whose rule reads its sources through mappings), a large
file is hashed through a mapping that is kept, and ``shared(path)`` hands that mapping to
the action if the file is still the one hashed (same inode, size and timestamps); else the
reader maps the file itself, as outside the block. Leaving the block drops the mappings; a
view still in use keeps its pages until it goes. Per thread: an action's key and its run
happen on one thread; another thread's hash is not shared.

A kept mapping keeps the file's pages in the process's page tables (they count in its RSS,
though the kernel can still reclaim them), so one block keeps at most ``budget()`` bytes:
a 70B checkpoint's shards beyond it are hashed and read as before, one mapping at a time.
"""

from __future__ import annotations

import mmap
import os
import threading
from contextlib import contextmanager
from typing import Iterator

_local = threading.local()
BUDGET_MAX = 8 << 30  # bytes kept mapped by one block, at most (and a quarter of the RAM)


def budget() -> int:
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
    return min(BUDGET_MAX, ram // 4)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@contextmanager
def sharing(active: bool = True) -> Iterator[None]:
    """Keep the mappings of files hashed in this thread, for the block (``active=False``:
    a block that shares nothing, for callers that decide per action)."""
    if not active or getattr(_local, "maps", None) is not None:
        yield  # nothing to share, or an outer block owns the mappings
        return
    _local.maps = {}
    try:
        yield
    finally:
        _local.maps = None


def map_for_hash(path: str | os.PathLike) -> mmap.mmap | None:
    """A mapping of the whole file to hash through, kept for ``shared``; None outside
    ``sharing()`` (the caller hashes as it would anyway)."""
    maps = getattr(_local, "maps", None)
    if maps is None:
        return None
    with open(path, "rb") as stream:
        identity = _identity(os.fstat(stream.fileno()))
        if sum(entry[0][2] for entry in maps.values()) + identity[2] > budget():
            return None
        mapping = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
    maps[identity[:2]] = (identity, mapping)
    return mapping


def shared(path: str | os.PathLike) -> mmap.mmap | None:
    """The mapping this thread hashed ``path`` through, if the file is unchanged since."""
    maps = getattr(_local, "maps", None)
    if not maps:
        return None
    try:
        identity = _identity(os.stat(path))
    except OSError:
        return None
    entry = maps.get(identity[:2])
    return entry[1] if entry is not None and entry[0] == identity else None
