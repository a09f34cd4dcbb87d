"""Atomic file replacement: the only way trtcas writes a file anyone else may read.

Write to a temp file in the destination's own directory (so the rename cannot cross a
filesystem), fsync it, ``os.replace`` it over the target, fsync the directory. Readers see
the old file or the new one, never a partial one, even across a crash (pip's
``adjacent_tmp_file`` + ``replace`` does the same).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def temp_path_beside(path: Path) -> Path:
    """A unique hidden temp name next to ``path``; ``.tmp`` marks it for cleanup."""
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_beside(path)
    try:
        with open(temp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
