"""What a blob file holds, read from the file itself: its content size whatever its encoding,
the digest of a zstd blob's content, and a reflink copy of it. The blob store's helpers, kept
apart so the store itself reads as the policy (locate, verify, put, materialize)."""

from __future__ import annotations

import fcntl
import io
from pathlib import Path

import zstandard

from trtcas.cas.digest import CHUNK, Digest, hash_stream

FICLONE = 0x40049409  # linux/fs.h: share extents (reflink) on btrfs/xfs


def content_size(path: Path, compressed: bool, frame: bool, file_size: int) -> int:
    if compressed:
        return zstd_content_size(path)
    if frame:
        from trtcas.cas import frameblobs

        try:
            return frameblobs.read_header(path).content_size
        except frameblobs.CodecError as exc:
            raise ValueError(str(exc)) from exc
    return file_size


def try_reflink(src: Path, dest: Path) -> bool:
    try:
        with open(src, "rb") as s, open(dest, "wb") as d:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        return True
    except OSError:
        dest.unlink(missing_ok=True)
        return False


def hash_zstd_file(path: Path, algo: str) -> Digest:
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return hash_stream(io.BufferedReader(stream, CHUNK), algo)


def zstd_size_or_none(path: Path) -> int | None:
    """The content size a zstd blob declares, or None when its header cannot be read."""
    try:
        return zstd_content_size(path)
    except (OSError, zstandard.ZstdError):
        return None


def zstd_content_size(path: Path) -> int:
    """The decompressed size recorded in a zstd frame header (we always write it)."""
    with open(path, "rb") as stream:
        params = zstandard.get_frame_parameters(stream.read(18))
    if params.content_size != zstandard.CONTENTSIZE_UNKNOWN:
        return params.content_size
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
        return sum(len(chunk) for chunk in iter(lambda: stream.read(CHUNK), b""))
