"""Placing a build's declared outputs in the output directory, by output format.

Most outputs are files: the blob's bytes (hardlinked or reflinked out of the store where it
can). A rule may declare another format for an output (``Rule.output_formats``), e.g. a
tensor manifest assembled into a ``.safetensors`` file; formats register by name in
``OUTPUT_FORMATS`` (entry point group ``trtcas.output_formats``). Each format also says
whether a destination already holds the output, so a no-op build rewrites nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from trtcas.cas.blobstore import BlobStore
from trtcas.cas.digest import Digest
from trtcas.cas.statcache import StatCache
from trtcas.registry import Registry


class OutputFormat(Protocol):
    def up_to_date(self, blobs: BlobStore, statcache: StatCache, digest: Digest, dest: Path) -> bool: ...
    def place(self, blobs: BlobStore, digest: Digest, dest: Path) -> None: ...


class FileOutput:
    """The blob's bytes, as a read-only file."""

    def up_to_date(self, blobs: BlobStore, statcache: StatCache, digest: Digest, dest: Path) -> bool:
        try:
            return dest.is_file() and dest.stat().st_size == digest.size and statcache.digest_of(dest, blobs.algo) == digest
        except OSError:
            return False

    def place(self, blobs: BlobStore, digest: Digest, dest: Path) -> None:
        blobs.materialize(digest, dest)


OUTPUT_FORMATS: Registry[OutputFormat] = Registry(
    "output format", entry_point_group="trtcas.output_formats", builtin={"file": FileOutput()}
)
