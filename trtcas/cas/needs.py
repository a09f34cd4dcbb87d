"""What a stored blob needs to stay readable or meaningful: a delta's parent, a manifest's tensors.

gc keeps a blob as long as something kept names it; action entries name their outputs, and
these edges name the rest: a delta frame (``.tcx``) cannot be decoded without its parent,
and a tensor manifest (an action's ``weights`` output) is worthless without its tensors.
Both are found from the blobs themselves (a frame's header, a manifest's JSON), so nothing
has to be recorded beside them and a crash cannot leave the record and the store disagreeing.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from trtcas.cas.blobstore import BlobNotFound, BlobStore, StoredBlob
from trtcas.cas.digest import Digest
from trtcas.cas.manifest import TensorManifest
from trtcas.errors import TrtcasError

MANIFEST_PREFIX = b'{"tensors":['  # TensorManifest.to_bytes is canonical JSON with this start
MAX_MANIFEST_BYTES = 64 << 20


def blob_needs(blobs: BlobStore, blob: StoredBlob) -> tuple[Digest, ...]:
    """The blobs ``blob`` needs (a delta's parent; a manifest's tensors); () for the rest."""
    if blob.frame:
        parent = blobs.parent_of(blob)
        return (parent[0],) if parent else ()
    if blob.digest.size > MAX_MANIFEST_BYTES or blob.digest.size < len(MANIFEST_PREFIX):
        return ()
    try:
        with (blobs.open(blob.digest) if blob.compressed else open(blob.path, "rb")) as stream:
            if stream.read(len(MANIFEST_PREFIX)) != MANIFEST_PREFIX:
                return ()
        return tuple(e.digest for e in TensorManifest.from_bytes(blobs.get_bytes(blob.digest)).entries)
    except (OSError, BlobNotFound, TrtcasError, ValueError, KeyError, TypeError):
        return ()  # unreadable: verify's business, not gc's


def manifest_tensors(blobs: BlobStore, digests: Iterable[Digest]) -> list[Digest]:
    """The tensors named by those of ``digests`` that are stored tensor manifests: what an
    action entry naming them needs besides its own outputs (to be a hit, to be shared)."""
    tensors: list[Digest] = []
    for digest in digests:
        blob = blobs.locate(digest)
        if blob is not None and not blob.frame:
            tensors.extend(blob_needs(blobs, blob))
    return tensors


def needs_map(blobs: BlobStore, stored: Iterable[StoredBlob]) -> dict[Digest, tuple[Digest, ...]]:
    """blob -> what it needs, for every blob that needs something."""
    return {b.digest: needed for b in stored if (needed := blob_needs(blobs, b))}


def closure(needs: Mapping[Digest, tuple[Digest, ...]], roots: Iterable[Digest]) -> set[Digest]:
    """Everything ``roots`` need, transitively (roots excluded unless needed)."""
    found: set[Digest] = set()
    stack = [d for r in roots for d in needs.get(r, ())]
    while stack:
        digest = stack.pop()
        if digest not in found:
            found.add(digest)
            stack.extend(needs.get(digest, ()))
    return found
