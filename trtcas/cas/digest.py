"""Content digests: what a blob *is*, independent of where it lives.

A digest carries its algorithm and size alongside the hash (as Bazel's REAPI ``Digest``
does), so a store can check a length before reading and a reader can tell a truncated blob
from a different one. The text form ``blake3:<hex>/<size>`` is what users see and paste.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import blake3

from trtcas.cas.mapped_files import map_for_hash
from trtcas.errors import TrtcasError

DEFAULT_ALGO = "blake3"
ALGOS = ("blake3", "sha256")
CHUNK = 1 << 20
# Above this size blake3's multithreaded mmap path beats single-threaded streaming.
PARALLEL_HASH_THRESHOLD = 8 << 20

_HEX_LEN = {"blake3": 64, "sha256": 64}
_TEXT_RE = re.compile(r"^(?P<algo>[a-z0-9]+):(?P<hex>[0-9a-f]+)/(?P<size>\d+)$")


class BadDigest(TrtcasError):
    """A digest string that cannot be parsed, or names an unknown algorithm."""


@dataclass(frozen=True, order=True)
class Digest:
    """A content address: algorithm, lowercase hex hash, and byte size."""

    algo: str
    hex: str
    size: int

    def __str__(self) -> str:
        return f"{self.algo}:{self.hex}/{self.size}"

    @property
    def short(self) -> str:
        """A 12-hex-digit form for logs and explanations."""
        return f"{self.algo}:{self.hex[:12]}"

    @classmethod
    def parse(cls, text: str) -> "Digest":
        match = _TEXT_RE.match(text.strip())
        if not match:
            raise BadDigest(f"not a digest: {text!r} (expected ALGO:HEX/SIZE, e.g. blake3:ab12.../1024)")
        algo, hexd, size = match["algo"], match["hex"], int(match["size"])
        check_algo(algo)
        if len(hexd) != _HEX_LEN[algo]:
            raise BadDigest(f"not a digest: {text!r} ({algo} hashes have {_HEX_LEN[algo]} hex digits)")
        return cls(algo, hexd, size)


def check_algo(algo: str) -> str:
    if algo not in ALGOS:
        raise BadDigest(f"unknown hash algorithm {algo!r}; use one of {', '.join(ALGOS)}")
    return algo


def new_hasher(algo: str = DEFAULT_ALGO, parallel: bool = False):
    """A hashlib-style object (``update``/``hexdigest``) for ``algo``."""
    check_algo(algo)
    if algo == "blake3":
        return blake3.blake3(max_threads=blake3.blake3.AUTO if parallel else 1)
    import hashlib  # sha256 stores only: blake3 ones never load it

    return hashlib.sha256()


def hash_bytes(data: bytes | memoryview, algo: str = DEFAULT_ALGO) -> Digest:
    hasher = new_hasher(algo, parallel=len(data) >= PARALLEL_HASH_THRESHOLD)
    hasher.update(data)
    return Digest(algo, hasher.hexdigest(), len(data))


def hash_stream(stream: BinaryIO, algo: str = DEFAULT_ALGO) -> Digest:
    """Hash a readable stream in bounded memory."""
    hasher = new_hasher(algo)
    size = 0
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        hasher.update(chunk)
        size += len(chunk)
    return Digest(algo, hasher.hexdigest(), size)


def hash_file(path: str | os.PathLike, algo: str = DEFAULT_ALGO) -> Digest:
    """Hash a file; large blake3 files go through mmap on all cores (memory stays bounded:
    pages are the page cache's, not ours)."""
    path = Path(path)
    size = path.stat().st_size
    if algo == "blake3" and size >= PARALLEL_HASH_THRESHOLD:
        hasher = new_hasher(algo, parallel=True)
        mapping = map_for_hash(path)  # kept for the action that reads the file next, if any
        if mapping is None:
            hasher.update_mmap(path)
        else:
            hasher.update(mapping)
            size = len(mapping)
        return Digest(algo, hasher.hexdigest(), size)
    with open(path, "rb") as stream:
        return hash_stream(stream, algo)
