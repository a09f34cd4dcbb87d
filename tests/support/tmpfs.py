"""Real small or read-only file systems for the full-disk and read-only tests (needs root).

``small_ext4`` is a real ext4 on a loop device, for the writes tmpfs cannot take (O_DIRECT).

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


@contextmanager
def small_ext4(path: Path, size_mb: int = 8):
    """Mount a fresh ext4 of ``size_mb`` (a loop device over a file) at ``path``: a small disk
    that fills for real and, unlike tmpfs, takes O_DIRECT writes, as the store's disk does."""
    path.mkdir(parents=True, exist_ok=True)
    image = path.with_name(path.name + ".img")
    with open(image, "wb") as stream:
        stream.truncate(size_mb << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
    if made.returncode != 0:
        image.unlink()
        pytest.skip(f"cannot make an ext4 image here ({made.stderr.strip() or 'no mkfs.ext4'})")
    done = subprocess.run(["mount", "-o", "loop", str(image), str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        image.unlink()
        pytest.skip(f"cannot mount a loop device here ({done.stderr.strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
        image.unlink(missing_ok=True)
