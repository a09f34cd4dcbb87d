"""Atomic file replacement: the only way trtcas writes a file anyone else may read.

``atomic_writer(path)`` hands out a temp file in the destination's own directory (so the
rename cannot cross a filesystem); on a clean exit it is fsynced, given its mode, moved over
the target with ``os.replace`` and the directory is fsynced. Readers see the old file or the
new one, never a partial one, even across a crash; on an exception the temp file is removed
and the target is untouched (pip's ``adjacent_tmp_file`` + ``replace`` does the same).
"""

from __future__ import annotations

import functools
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Sequence

if TYPE_CHECKING:
    from trtcas.cas.direct_io import DirectFile

TEMP_SUFFIX = ".tmp"  # gc/verify remove stale ``.*.tmp`` files left by dead writers
DIRECT_MIN_BYTES = 1 << 20  # smaller files cost less through the page cache than aligned


def temp_path_beside(path: Path) -> Path:
    """A unique hidden temp name next to ``path``; ``.tmp`` marks it for cleanup."""
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"


def fsync_file(path: Path) -> None:
    """Make a file written by other means (a ``SlotFileWriter``) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """The temp file of one atomic write.

    Write through ``open()``, or fill ``temp`` by other means (hardlink, reflink, copy).
    ``retarget`` names the destination late (a content-addressed write knows its name only
    once the bytes are hashed); ``discard`` drops the write (the content was already there).
    """

    def __init__(self, target: Path):
        self.target = target
        self.temp = temp_path_beside(target)
        self._handle: BinaryIO | None = None
        self._discarded = False

    def open(self) -> BinaryIO:
        if self._handle is None:
            self._handle = open(self.temp, "wb")
        return self._handle

    def open_positional(self, direct: bool) -> "DirectFile":
        """The temp file as a ``direct_io.DirectFile`` (``pwrite`` at any offset, or
        ``write``); ``direct``: around the page cache, for a large file nobody reads soon."""
        from trtcas.cas.direct_io import DirectFile  # noqa: PLC0415 (imports numpy)

        if self._handle is None:
            self._handle = DirectFile(self.temp, direct=direct)  # type: ignore[assignment]
        return self._handle  # type: ignore[return-value]

    def write_parts(self, parts: Sequence[bytes | memoryview]) -> None:
        """Write ``parts`` in order (a frame's pieces go to the file without being joined);
        a large file is written around the page cache."""
        stream = self.open_positional(direct=sum(memoryview(part).nbytes for part in parts) >= DIRECT_MIN_BYTES)
        for part in parts:
            stream.write(part)

    def retarget(self, target: Path) -> None:
        self.target = Path(target)

    def discard(self) -> None:
        self._discarded = True

    def _close(self, sync: bool) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.flush()
            if sync:
                os.fsync(self._handle.fileno())
            else:
                start_writeback(self._handle.fileno())
            self._handle.close()

    def _commit(self, mode: int | None, durable: bool = True) -> None:
        self._close(sync=durable and not self._discarded)
        if self._discarded:
            self.temp.unlink(missing_ok=True)
            return
        if mode is not None:
            os.chmod(self.temp, mode)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.temp, self.target)
        if durable:
            fsync_dir(self.target.parent)

    def _abort(self) -> None:
        try:
            self._close(sync=False)
        except OSError:
            pass  # closing flushes; on a full disk that fails again, hiding the first error
        finally:
            self.temp.unlink(missing_ok=True)


@contextmanager
def atomic_writer(path: str | os.PathLike, mode: int | None = None, durable: bool = True) -> Iterator[AtomicFile]:
    """Replace ``path`` atomically and durably with what the block writes (see AtomicFile).

    ``durable=False`` skips the fsyncs: the caller makes many files durable at once
    (``sync_filesystem``) before anything that trusts them is recorded."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = AtomicFile(path)
    try:
        yield pending
        pending._commit(mode, durable)
    except OSError as exc:
        pending._abort()
        if exc.filename is None:  # a failed write() names no file: name the one being written
            raise OSError(exc.errno, exc.strerror, str(pending.target)) from exc
        raise
    except BaseException:
        pending._abort()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    with atomic_writer(path, mode) as pending:
        pending.open().write(data)


SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    import ctypes  # noqa: PLC0415 (only writers of batches need it)
    import ctypes.util  # noqa: PLC0415

    try:
        call = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return call


def start_writeback(fd: int) -> None:
    """Start writing a file's dirty pages to disk now, without waiting (Linux
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``). A batch of files made durable by one
    ``syncfs`` at its end would otherwise leave all their writeback to that moment (below
    the kernel's background threshold nothing is written early): started per file, the disk
    works while the next blobs are encoded, and the final flush finds little left. Only a
    head start: durability still comes from the flush."""
    call = _sync_file_range()
    if call is not None:
        call(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


def sync_filesystem(path: str | os.PathLike) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (Linux ``syncfs``; else
    ``sync``): one flush for a batch of files written with ``durable=False``."""
    import ctypes  # noqa: PLC0415 (only writers of batches need it)
    import ctypes.util  # noqa: PLC0415

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        os.sync()
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)
