"""Codecs by name and by frame id, and the codec-agnostic entry points the store uses.

A blob file's header names its codec, so a reader never needs to know how a blob was
chosen: ``frame_info`` says what a frame is and what it depends on (read from a few
hundred header bytes), ``decode_blob`` decodes any frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from trtcas.cas.codecs.byteplane import BYTEPLANE
from trtcas.cas.codecs.frame import CODEC_NAMES, parse_header
from trtcas.cas.codecs.protocol import Buffer, Codec, CodecError, CorruptFrame, Parent
from trtcas.cas.codecs.xor_delta import XOR_DELTA, DeltaInfo, unpack_delta_extra
from trtcas.cas.digest import Digest, hash_bytes

CODECS: dict[str, Codec] = {c.name: c for c in (BYTEPLANE, XOR_DELTA)}


def codec_named(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(sorted(CODECS))}") from None


@dataclass(frozen=True)
class FrameInfo:
    """A frame's header, as the store needs it: which codec, how big, on what it depends."""

    codec: str
    element_size: int
    content_size: int
    delta: DeltaInfo | None  # set for a delta frame: its parent and chain depth


def frame_info(encoded: Buffer) -> FrameInfo:
    """Read a frame's header only (pass at least the first few hundred bytes)."""
    header, _ = parse_header(encoded)
    name = CODEC_NAMES[header.codec_id]
    delta = unpack_delta_extra(header.extra) if name == XOR_DELTA.name else None
    return FrameInfo(name, header.element_size, header.content_size, delta)


def decode_blob(encoded: Buffer, size: int, parent: Parent | None = None, expected: Digest | None = None) -> memoryview:
    """Decode any frame. With ``expected``, also hash the result and raise ``CorruptFrame``
    on a mismatch (the store does this itself while writing; this is for other readers)."""
    info = frame_info(encoded)
    content = codec_named(info.codec).decode(encoded, size, parent)
    if expected is not None:
        actual = hash_bytes(content, expected.algo)
        if actual != expected:
            raise CorruptFrame(f"codec frame decoded to {actual.short}, not {expected}; the blob is corrupt")
    return content
