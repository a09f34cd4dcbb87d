"""Blobs stored as codec frames (``<hex>.tcx``): reading their headers and contents from disk.

A frame's header says which codec made it and, for a delta, which parent it decodes
against (``cas.codecs``); the suffix only says "decode me", because a raw blob may begin
with any bytes, the frame magic included. The codecs import numpy, so this module is
imported only when a frame is actually met: a no-op build never pays for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trtcas.cas.codecs import RAW as RAW_ENCODING
from trtcas.cas.codecs import CodecError, FrameInfo, PackedFrame, Parent, choose_encoding, decode_blob, frame_info
from trtcas.cas.codecs.planes import PlaneArena
from trtcas.cas.digest import Digest

HEADER_PROBE = 4096  # a frame header with its parent record fits well within this


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


def encode(data: memoryview, dtype: str | None, parent: Parent | None, max_chain_depth: int,
           arena: PlaneArena | None = None) -> PackedFrame | None:
    """The frame worth storing for ``data`` (a delta against ``parent`` or byte planes), or
    None when raw bytes are as good (the chooser saw less than its minimum saving).

    ``arena``: the calling thread's plane buffer; the frame's raw planes are views of it, so
    the frame must be written before the thread encodes again."""
    into = arena.take(data.nbytes) if arena is not None else None
    codec, frame = choose_encoding(data, dtype, parent, max_chain_depth=max_chain_depth, planes_into=into)
    return None if codec == RAW_ENCODING else frame


def as_parent(digest: Digest, content: memoryview, depth: int) -> Parent:
    return Parent(digest, content, depth)


__all__ = ["CodecError", "frame_info", "HEADER_PROBE", "PlaneArena", "as_parent", "decode", "encode", "parent_of", "read_frame", "read_header"]
