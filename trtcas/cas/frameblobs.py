"""Blobs stored as codec frames (``<hex>.tcx``): reading their headers and contents from disk.

A frame's header says which codec made it and, for a delta, which parent it decodes
against (``cas.codecs``); the suffix only says "decode me", because a raw blob may begin
with any bytes, the frame magic included. The codecs import numpy, so this module is
imported only when a frame is actually met: a no-op build never pays for it.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np

from trtcas.cas.codecs import MIN_SAVING, CodecError, FrameInfo, Parent, decode_blob, frame_info
from trtcas.cas.codecs.chooser import Candidate, encoding_candidates
from trtcas.cas.codecs.planes import PlaneRing, thread_count
from trtcas.cas.codecs.protocol import saves_enough
from trtcas.cas.digest import Digest
from trtcas.cas.direct_io import DirectFile

HEADER_PROBE = 4096  # a frame header with its parent record fits well within this
RING_MAX_IN_FLIGHT = 8  # blocks one writer keeps encoding at most (8 MiB each)


def read_header(path: Path) -> FrameInfo:
    """The header of the frame at ``path`` (raises ``CodecError`` when it is not one)."""
    with open(path, "rb") as stream:
        return frame_info(stream.read(HEADER_PROBE))


def read_frame(path: Path) -> memoryview:
    """A frame file's bytes, in a numpy buffer (huge pages: faster than ``bytes``)."""
    return memoryview(np.fromfile(path, dtype=np.uint8))


def decode(encoded: memoryview, size: int, parent: Parent | None) -> memoryview:
    """The content of a frame (not yet verified: the store hashes it)."""
    info = frame_info(encoded)
    if info.content_size != size:
        raise CodecError(f"frame holds {info.content_size} bytes, its digest says {size}")
    return decode_blob(encoded, size, parent)


def parent_of(info: FrameInfo) -> tuple[Digest, int] | None:
    """(parent digest, the parent's own chain depth) of a delta frame, else None."""
    if info.delta is None:
        return None
    return info.delta.parent, info.delta.chain_depth - 1


def write_encoded(out: DirectFile, data: memoryview, candidate: Candidate, ring: PlaneRing) -> bool:
    """Write ``data``'s frame as ``candidate`` encodes it into ``out``: each block's planes
    as they come (from the head's length on), the head last at the start, so only the
    ring's few blocks are held. False when the frame does not save enough (``out`` then
    holds a partial frame: discard it); a first block that saves less than half of it
    gives up at once, so an incompressible tensor is not written twice."""
    if candidate.frame is not None:
        for part in candidate.frame.parts:
            out.write(part)
        return True
    stream = candidate.codec.stream(data, candidate.hint(MIN_SAVING), ring)
    first_start, first_end = stream.header.block_span(0)
    at = stream.head_length
    entries: list[tuple[int, int]] = []
    with closing(stream.blocks) as blocks:
        for index, (block_entries, parts) in enumerate(blocks):
            for part in parts:
                out.pwrite(part, at)
                at += memoryview(part).nbytes
            entries += block_entries
            if index == 0 and not saves_enough(at - stream.head_length, first_end - first_start, MIN_SAVING / 2):
                return False
    if not saves_enough(at, data.nbytes, MIN_SAVING):
        return False
    out.pwrite(stream.head(entries), 0)
    return True


def plane_ring() -> PlaneRing:
    """A ring for one writing thread: a block in flight per core. The store runs several
    writers at once (``put_tensors``), so their blocks together keep every core encoding
    while one writer waits for the disk; each slot is fresh memory the first time (on the
    VM here, faulting in a huge page costs ~1 GB/s), so two blocks per core cost more CPU
    than they saved (tp=1 cold convert, two cores: 4.81 -> 4.59 s of CPU with one)."""
    return PlaneRing(min(thread_count(0), RING_MAX_IN_FLIGHT) + 1)


def as_parent(digest: Digest, content: memoryview, depth: int) -> Parent:
    return Parent(digest, content, depth)


__all__ = ["CodecError", "frame_info", "HEADER_PROBE", "as_parent", "decode", "encoding_candidates", "parent_of", "plane_ring",
           "read_frame", "read_header", "write_encoded"]
