"""Large files written around the page cache (``O_DIRECT``).

Why: on a machine with few cores the cold convert of a checkpoint is CPU-bound, and a
buffered write makes the kernel copy every byte into the page cache and keep book on every
page (0.8 s of CPU per 1.5 GB of blobs here, ~15% of a two-core convert). With
``O_DIRECT`` the disk's DMA reads the bytes from the process's memory instead. The store's
blobs and a placed checkpoint are written once and not read back soon, so the page cache
buys them nothing; durability still comes from the caller's fsync/syncfs (``O_DIRECT``
skips the cache, not the device's write cache or the metadata).

``O_DIRECT`` wants the memory, the file offset and the length of every write aligned to the
device's block. ``DirectFile`` takes writes of any size at any offset, in any order (a
checkpoint's tensors arrive out of file order), and turns them into aligned ones: the
aligned interior of each write goes to the disk straight from the caller's buffer when that
is aligned too, else through an aligned staging buffer; the partial blocks at its edges
wait in memory until the writes beside them complete them. ``flush`` (and ``close``) writes
what is left (the last block padded with zeros) and truncates the file to its length. Where the
filesystem refuses ``O_DIRECT`` (older tmpfs, some network filesystems) the same object writes
through the page cache, with the same result on disk.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from trtcas.cas.huge_pages import private_buffer

BLOCK = 4096  # the alignment every Linux block device accepts (512-byte ones too)
STAGING_BYTES = 8 << 20  # one aligned write's most, when the caller's buffer is not aligned
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_local = threading.local()


@dataclass
class _PartialBlock:
    """A block that some writes touched but none yet filled: its bytes and the spans written."""

    data: bytearray = field(default_factory=lambda: bytearray(BLOCK))
    spans: list[tuple[int, int]] = field(default_factory=list)

    def add(self, start: int, piece: memoryview) -> None:
        self.data[start : start + len(piece)] = piece
        self.spans.append((start, start + len(piece)))

    def complete(self) -> bool:
        covered = 0
        for start, end in sorted(self.spans):
            if start > covered:
                return False
            covered = max(covered, end)
        return covered >= BLOCK


class DirectFile:
    """A file opened for writing with ``O_DIRECT`` where the filesystem allows it (see the
    module docstring). File-like enough for ``AtomicFile``: ``write`` appends, ``pwrite``
    writes at an offset, ``flush``/``fileno``/``close``/``closed``. Each byte is written at
    most once; ``flush`` or ``close`` must be called for the file to hold what was written.
    ``pwrite`` may be called from several threads at once (at different offsets); the
    rest from one."""

    def __init__(self, path: str | os.PathLike, mode: int = 0o644, direct: bool = True):
        """``direct=False``: through the page cache from the start (a file too small to pay)."""
        self.path = os.fspath(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.direct = direct and bool(_O_DIRECT)
        try:
            self._fd = os.open(self.path, flags | _O_DIRECT, mode) if self.direct else os.open(self.path, flags, mode)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.direct = False  # the filesystem has no O_DIRECT: write through the page cache
            self._fd = os.open(self.path, flags, mode)
        self.closed = False
        self._lock = threading.RLock()  # partial blocks and the length: writers at other offsets share them
        self._position = 0  # where ``write`` appends
        self._length = 0  # one past the last byte written
        self._partial: dict[int, _PartialBlock] = {}

    # ------------------------------------------------------------------ file-like
    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes | memoryview) -> int:
        written = self.pwrite(data, self._position)
        self._position += written
        return written

    def flush(self) -> None:
        """Write the blocks not yet complete as they stand (the file's last one padded with
        zeros; an unwritten gap reads as zeros anyway) and cut the file to its length, so an
        fsync after this makes everything written so far durable. The blocks stay held: a
        later write that completes one writes it whole again."""
        with self._lock:
            if not self.direct:
                return
            for index in sorted(self._partial):
                self._aligned_write(memoryview(self._partial[index].data), index * BLOCK)
            if os.fstat(self._fd).st_size != self._length:
                os.ftruncate(self._fd, self._length)

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.flush()
        finally:
            self.closed = True
            os.close(self._fd)

    # ------------------------------------------------------------------ writing
    def pwrite(self, data: bytes | memoryview, offset: int) -> int:
        view = memoryview(data).cast("B")
        end = offset + len(view)
        with self._lock:
            self._length = max(self._length, end)
        if not self.direct:
            _pwrite_all(self._fd, view, offset)
            return len(view)
        first = -(-offset // BLOCK) * BLOCK  # the aligned interior [first, last)
        last = end // BLOCK * BLOCK
        if last <= first:
            self._partial_write(view, offset)
            return len(view)
        self._partial_write(view[: first - offset], offset)
        self._partial_write(view[last - offset :], last)
        self._aligned_write(view[first - offset : last - offset], first)
        return len(view)

    def _partial_write(self, view: memoryview, offset: int) -> None:
        """Keep bytes that fill no whole block until their block is complete."""
        with self._lock:
            self._hold(view, offset)

    def _hold(self, view: memoryview, offset: int) -> None:
        if not self.direct:  # another thread's write fell back since this one began
            _pwrite_all(self._fd, view, offset)
            return
        while view:
            index, start = divmod(offset, BLOCK)
            piece = view[: BLOCK - start]
            block = self._partial.setdefault(index, _PartialBlock())
            block.add(start, piece)
            if block.complete():
                del self._partial[index]
                self._aligned_write(memoryview(block.data), index * BLOCK)
            view, offset = view[len(piece) :], offset + len(piece)

    def _aligned_write(self, view: memoryview, offset: int) -> None:
        """Write whole blocks at a block offset: from ``view`` itself when its memory is
        aligned, else through the staging buffer."""
        if not view:
            return
        if not self.direct:
            _pwrite_all(self._fd, view, offset)
            return
        source = np.frombuffer(view, dtype=np.uint8)
        if source.ctypes.data % BLOCK == 0:
            self._write_or_fall_back(view, offset)
            return
        staging = _staging_buffer()
        for at in range(0, len(view), STAGING_BYTES):
            chunk = source[at : at + STAGING_BYTES]
            np.copyto(np.frombuffer(staging, dtype=np.uint8, count=chunk.size), chunk)
            self._write_or_fall_back(staging[: chunk.size], offset + at)

    def _write_or_fall_back(self, view: memoryview, offset: int) -> None:
        try:
            _pwrite_all(self._fd, view, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._stop_direct()  # the filesystem took the open but not the alignment
            _pwrite_all(self._fd, view, offset)

    def _stop_direct(self) -> None:
        """Write through the page cache from now on; partial blocks are written as they are."""
        with self._lock:
            self._unset_direct()

    def _unset_direct(self) -> None:
        if not self.direct:
            return  # another thread's write got there first
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~_O_DIRECT)
        self.direct = False
        partial, self._partial = self._partial, {}
        for index, block in partial.items():
            for start, end in block.spans:
                _pwrite_all(self._fd, memoryview(block.data)[start:end], index * BLOCK + start)


def _staging_buffer() -> memoryview:
    """This thread's aligned staging buffer (huge pages: see ``huge_pages``). One per thread
    and kept, not one per file: fresh pages cost the kernel a fault and a zeroing each."""
    staging = getattr(_local, "staging", None)
    if staging is None:
        staging = _local.staging = private_buffer(STAGING_BYTES)
    return staging


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
