"""Tensors in the CAS: one blob per tensor, a manifest per set, and back to arrays or files.

Rules reach the store only through their run context, which offers ``put_bytes`` and
``get_bytes``; these helpers take any such object. ``SafetensorsOutput`` is the output
format (see ``graph.outputs``) that places a manifest as a ``.safetensors`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np

from trtcas.cas.digest import Digest
from trtcas.cas.manifest import TensorEntry, TensorManifest
from trtcas.errors import TrtcasError
from trtcas.rules.formats.safetensors import (
    TensorSlot,
    dtype_code,
    hash_tensors,
    numpy_dtype,
    raw_bytes,
    write_streamed,
)


class BlobWriter(Protocol):
    def put_bytes(self, data: bytes) -> Digest: ...


class BlobReader(Protocol):
    def get_bytes(self, digest: Digest) -> bytes: ...


def store_tensors(blobs: BlobWriter, tensors: Iterable[tuple[str, np.ndarray]]) -> TensorManifest:
    """Store each tensor as its own blob; returns the manifest (safetensors dtype codes)."""
    entries = []
    for name, array in tensors:
        digest = blobs.put_bytes(bytes(raw_bytes(array)))
        entries.append(TensorEntry(name, dtype_code(array.dtype), tuple(array.shape), digest))
    return TensorManifest.of(entries)


def load_tensors(blobs: BlobReader, manifest: TensorManifest) -> dict[str, np.ndarray]:
    """name -> array, read (and verified) from the store."""
    return {
        e.name: np.frombuffer(blobs.get_bytes(e.digest), dtype=numpy_dtype(e.dtype)).reshape(e.shape)
        for e in manifest.entries
    }


def _same_tensors(a: TensorManifest, b: TensorManifest) -> bool:
    def view(m: TensorManifest) -> dict:
        return {e.name: (numpy_dtype(e.dtype), e.shape, e.digest) for e in m.entries}
    return view(a) == view(b)


class SafetensorsOutput:
    """An output that is a tensor manifest, placed as one ``.safetensors`` file (streamed,
    atomic, read-only); a file that already holds exactly these tensors is left alone."""

    def up_to_date(self, blobs: Any, statcache: Any, digest: Digest, dest: Path) -> bool:
        try:
            manifest = TensorManifest.from_bytes(blobs.get_bytes(digest))
            return dest.is_file() and _same_tensors(hash_tensors(dest, digest.algo), manifest)
        except (OSError, TrtcasError, ValueError):
            return False

    def place(self, blobs: Any, digest: Digest, dest: Path) -> None:
        manifest = TensorManifest.from_bytes(blobs.get_bytes(digest))
        slots = [TensorSlot(e.name, dtype_code(e.dtype), e.shape) for e in manifest.entries]

        def chunks(entry: TensorEntry):
            with blobs.open(entry.digest) as stream:
                while chunk := stream.read(1 << 20):
                    yield chunk

        write_streamed(dest, slots, ((e.name, chunks(e)) for e in manifest.entries), mode=0o444)


SAFETENSORS_OUTPUT = SafetensorsOutput()
