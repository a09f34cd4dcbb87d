"""Tensors in the CAS: one blob per tensor, a manifest per set, and back to arrays or files.

Rules reach the store only through their run context, which offers ``put_bytes`` and
``get_bytes`` (and, where the store has weight codecs, ``put_tensor``); these helpers take
any such object. A tensor is handed to the store as a view of the array (no copy) with its
dtype, and with its *parent*, the same-named tensor of the same shape and dtype in the
manifest this action produced last time, so a fine-tune is stored as deltas.
``SafetensorsOutput`` is the output format (see ``graph.outputs``) that places a manifest
as a ``.safetensors`` file, and knows a file it placed by its stat signature, so a no-op
build re-reads nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import numpy as np

from trtcas.cas.atomic import atomic_writer, fsync_file
from trtcas.cas.digest import Digest
from trtcas.cas.manifest import TensorEntry, TensorManifest
from trtcas.cas.ordered_pool import ordered_results
from trtcas.cas.reused_buffers import reusing
from trtcas.errors import TrtcasError
from trtcas.rules.formats.safetensors import (
    SlotFileWriter,
    TensorSlot,
    dtype_code,
    hash_tensors,
    numpy_dtype,
    raw_bytes,
)


class BlobWriter(Protocol):
    def put_bytes(self, data: bytes) -> Digest: ...


class BlobReader(Protocol):
    def get_bytes(self, digest: Digest) -> bytes: ...


def store_tensors(blobs: BlobWriter, tensors: Iterable[tuple[str, np.ndarray]],
                  previous: TensorManifest | None = None) -> TensorManifest:
    """Store each tensor as its own blob; returns the manifest (safetensors dtype codes).

    ``previous``: the manifest of an earlier version of these tensors; a tensor whose name,
    dtype and shape match one there is offered to the store with that one as its delta
    parent (the store decides whether a delta pays)."""
    parents = {e.name: e for e in previous.entries} if previous is not None else {}
    put_tensors = getattr(blobs, "put_tensors", None)
    slots: list[tuple[str, str, tuple[int, ...]]] = []

    def requests():
        for name, array in tensors:
            code, shape = dtype_code(array.dtype), tuple(array.shape)
            slots.append((name, code, shape))
            old = parents.get(name)
            parent = old.digest if old is not None and old.dtype == code and old.shape == shape else None
            yield raw_bytes(array), code, parent

    if put_tensors is not None:
        digests = list(put_tensors(requests()))
    else:  # a plain blob writer (a farm worker's): one at a time, raw
        digests = [blobs.put_bytes(bytes(data)) for data, _, _ in requests()]
    entries = [TensorEntry(name, code, shape, digest) for (name, code, shape), digest in zip(slots, digests, strict=True)]
    return TensorManifest.of(entries)


def placed_file_writer(path: Path, slots: Iterable[TensorSlot]) -> SlotFileWriter:
    """A writer of the exact file ``SafetensorsOutput.place`` would write for these tensors
    (it lays out a manifest, whose entries are in name order), for a rule to prepare the
    placed file while it stores the tensors (``RunContext.prepare_output``)."""
    return SlotFileWriter(path, sorted(slots, key=lambda slot: slot.name))


def written_while_passing(writer: SlotFileWriter, tensors: Iterable[tuple[str, np.ndarray]]
                          ) -> Iterator[tuple[str, np.ndarray]]:
    """``tensors``, each also written to ``writer`` as it passes."""
    for name, array in tensors:
        writer.write(name, array)
        yield name, array


def previous_manifest(ctx: Any, output: str) -> TensorManifest | None:
    """The manifest ``output`` of this action held in the target's last build (delta
    parents for a fine-tune), or None: no earlier build, or it is gone from the store."""
    previous = getattr(ctx, "previous_output", None)
    digest = previous(output) if previous is not None else None
    if digest is None:
        return None
    try:
        return TensorManifest.from_bytes(ctx.get_bytes(digest))
    except (TrtcasError, ValueError, KeyError, TypeError):
        return None


def load_tensors(blobs: BlobReader, manifest: TensorManifest) -> dict[str, np.ndarray]:
    """name -> read-only array, read (and verified) from the store: mapped where a tensor is
    stored raw, the decoded buffer itself where it is encoded, never copied again."""
    read = getattr(blobs, "get_view", None) or blobs.get_bytes
    return {
        e.name: np.frombuffer(read(e.digest), dtype=numpy_dtype(e.dtype)).reshape(e.shape)
        for e in manifest.entries
    }


def _same_tensors(a: TensorManifest, b: TensorManifest) -> bool:
    def view(m: TensorManifest) -> dict:
        return {e.name: (numpy_dtype(e.dtype), e.shape, e.digest) for e in m.entries}
    return view(a) == view(b)


def _kind(algo: str) -> str:
    """The stat cache's name for "the manifest digest of a .safetensors file"."""
    return f"{algo}+safetensors-manifest"


PLACE_DECODERS = 2  # tensors decoded at once while placing: each holds one decoded tensor


class SafetensorsOutput:
    """An output that is a tensor manifest, placed as one ``.safetensors`` file (streamed,
    atomic, read-only); a file that already holds exactly these tensors is left alone.

    The stat cache maps the placed file's (inode, size, mtime, ctime) to the manifest's
    digest, so "already holds these tensors" costs a stat; a file it does not know (edited,
    or placed by another tool) is hashed tensor by tensor and compared."""

    def up_to_date(self, blobs: Any, statcache: Any, digest: Digest, dest: Path) -> bool:
        try:
            if statcache.lookup(dest, digest.algo, _kind(digest.algo)) == digest:
                return True
            manifest = TensorManifest.from_bytes(blobs.get_bytes(digest))
            same = dest.is_file() and _same_tensors(hash_tensors(dest, digest.algo), manifest)
        except (OSError, TrtcasError, ValueError):
            return False
        if same:
            statcache.digest_of(dest, digest.algo, lambda *_: digest, kind=_kind(digest.algo))
        return same

    def place(self, blobs: Any, digest: Digest, dest: Path) -> None:
        """Write the file from the store: tensors decoded (and verified) ``PLACE_DECODERS``
        at a time, ahead of the writes, which run on the file writer's own threads, so
        decoding, the copies and the disk overlap (a cache hit on a fresh output dir is
        bound by the disk, as ``cp`` is, not by one thread doing each in turn)."""
        manifest = TensorManifest.from_bytes(blobs.get_bytes(digest))
        slots = [TensorSlot(e.name, dtype_code(e.dtype), e.shape) for e in manifest.entries]
        with reusing(), atomic_writer(dest, mode=0o444) as pending, SlotFileWriter(pending.temp, slots) as writer, \
                ThreadPoolExecutor(max_workers=PLACE_DECODERS, thread_name_prefix="trtcas-place") as pool:
            decoded = ordered_results(pool, lambda entry: blobs.content_view(entry.digest), manifest.entries, PLACE_DECODERS)
            for entry, view in zip(manifest.entries, decoded, strict=True):
                writer.write(entry.name, np.frombuffer(view, dtype=numpy_dtype(entry.dtype)).reshape(entry.shape))
            writer.finish()
            fsync_file(pending.temp)
        # placed_file_writer() writes these same bytes: keep the two layouts one

    def remember(self, statcache: Any, digest: Digest, dest: Path) -> None:
        """Record that ``dest`` (just placed, or just checked) holds the manifest ``digest``."""
        statcache.remember_written(dest, digest, _kind(digest.algo))


SAFETENSORS_OUTPUT = SafetensorsOutput()
