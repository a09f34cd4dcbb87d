"""A blob as it lies on disk, and the ways reading or storing one fails.

Kept apart from ``blobstore.py`` so the store's users (gc, verify, remotes, outputs) can name
a stored blob and catch a miss without the store's machinery; ``blobstore`` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trtcas.cas.digest import Digest
from trtcas.errors import TrtcasError


class BlobNotFound(TrtcasError):
    """The store has no (valid) blob for a digest: a cache miss."""


class CorruptBlob(BlobNotFound):
    """A stored blob no longer matches its digest; it has been quarantined."""


class ContentChanged(TrtcasError):
    """A source file changed between hashing it and storing it."""


class DigestMismatch(TrtcasError):
    """Bytes from an untrusted source (a remote cache) are not the blob they claim to be."""


@dataclass(frozen=True)
class StoredBlob:
    """A blob as it lies on disk."""

    digest: Digest
    path: Path
    compressed: bool
    stored_size: int
    mtime: float
    frame: bool = False  # a codec frame (``.tcx``): decoded, maybe against a parent

    @property
    def encoding(self) -> str:
        return "tcx" if self.frame else "zstd" if self.compressed else "raw"
