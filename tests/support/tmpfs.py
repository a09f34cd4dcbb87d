"""Real small or read-only file systems for the full-disk and read-only tests (needs root).

A tmpfs of a few hundred KiB fills for real (ENOSPC) and a read-only mount refuses writes for
real (EROFS), which no permission bit can fake for root. Where mounting is not allowed the
tests that need it are skipped with the reason, never passed.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, size: str = "1m", read_only: bool = False):
    """Mount a tmpfs of ``size`` at ``path`` for the block (``read_only``: mounted ``ro``)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_read_only(path: Path) -> None:
    """Make a mounted tmpfs read-only (after files were put on it)."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
