"""The ``xor_delta`` codec: a fine-tuned tensor as byte planes of (child XOR parent).

A fine-tune moves most weights by less than half a bf16 ulp, so most XORed elements are
zero and the rest differ in a few low mantissa bits; their planes shrink 5-700x where the
tensor alone shrinks ~1.5x. Decoding needs the parent's bytes, so the frame records the
parent's digest (the store resolves it) and how deep the delta chain is (the store bounds
it: reading a blob must not walk an unbounded chain, and gc must keep every parent that a
kept delta names).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from trtcas.cas.codecs.frame import CODEC_IDS, Frame, PackedFrame, frame_of, parse_header
from trtcas.cas.codecs.plane_frames import (
    PlaneStream,
    decode_planes,
    decode_planes_into,
    encode_planes,
    iter_decode_planes,
    stream_planes,
)
from trtcas.cas.codecs.planes import BLOCK_BYTES, PlaneRing
from trtcas.cas.codecs.protocol import (
    Buffer,
    CodecError,
    CorruptFrame,
    EncodeHint,
    Parent,
    WrongParent,
    check_element_size,
    saves_enough,
)
from trtcas.cas.digest import BadDigest, Digest

_EXTRA = struct.Struct("<HH")  # chain depth, length of the parent digest's text
MAX_DEPTH_FIELD = 0xFFFF


@dataclass(frozen=True)
class DeltaInfo:
    """What a delta frame depends on: read from its header alone, without decoding."""

    parent: Digest
    chain_depth: int  # 1 for a delta against a non-delta blob, parent's depth + 1 otherwise


def pack_delta_extra(info: DeltaInfo) -> bytes:
    text = str(info.parent).encode()
    return _EXTRA.pack(info.chain_depth, len(text)) + text


def unpack_delta_extra(extra: bytes) -> DeltaInfo:
    if len(extra) < _EXTRA.size:
        raise CorruptFrame("xor_delta frame has no parent record")
    depth, text_len = _EXTRA.unpack_from(extra)
    if _EXTRA.size + text_len != len(extra) or depth < 1:
        raise CorruptFrame("xor_delta frame's parent record is malformed")
    try:
        return DeltaInfo(Digest.parse(extra[_EXTRA.size :].decode()), depth)
    except (UnicodeDecodeError, BadDigest) as exc:
        raise CorruptFrame(f"xor_delta frame's parent digest is unreadable ({exc})") from exc


def delta_info(encoded: Buffer) -> DeltaInfo:
    """The parent and chain depth of a delta frame, from its header (a few hundred bytes
    suffice: gc and the store read only this)."""
    header, _ = parse_header(encoded)
    if header.codec_id != CODEC_IDS["xor_delta"]:
        raise CorruptFrame(f"codec frame is {header.codec_name}, not xor_delta")
    return unpack_delta_extra(header.extra)


@dataclass(frozen=True)
class XorDeltaCodec:
    """XOR with the parent, then byte planes + tuned zstd. ``threads``: 0 = all cores;
    ``block_bytes`` only shapes new frames (a frame records its own)."""

    name: str = "xor_delta"
    codec_id: int = CODEC_IDS["xor_delta"]
    threads: int = 0
    block_bytes: int = BLOCK_BYTES

    def _extra(self, data: Buffer, hint: EncodeHint) -> tuple[Parent, bytes]:
        """(parent, the frame's extra bytes naming it), after checking they fit together."""
        parent = hint.parent
        if parent is None:
            raise CodecError("xor_delta needs a parent blob to encode against")
        check_element_size(self.name, hint.element_size)
        _check_parent_bytes(parent, memoryview(data).nbytes)
        depth = parent.chain_depth + 1
        if depth > MAX_DEPTH_FIELD:
            raise CodecError(f"delta chain of depth {depth} is too deep to record")
        return parent, pack_delta_extra(DeltaInfo(parent.digest, depth))

    def encode(self, data: Buffer, hint: EncodeHint) -> PackedFrame | None:
        parent, extra = self._extra(data, hint)
        encoded = encode_planes(data, self.codec_id, hint.element_size, extra, parent.data,
                                hint.threads or self.threads, self.block_bytes)
        return encoded if saves_enough(len(encoded), memoryview(data).nbytes, hint.min_saving) else None

    def stream(self, data: Buffer, hint: EncodeHint, ring: PlaneRing) -> PlaneStream:
        parent, extra = self._extra(data, hint)
        return stream_planes(data, self.codec_id, hint.element_size, ring, extra, parent.data,
                             hint.threads or self.threads)

    def _frame_and_parent(self, encoded: Buffer, parent: Parent | None) -> tuple[Frame, Buffer]:
        frame = frame_of(encoded, self.codec_id)
        info = unpack_delta_extra(frame.header.extra)
        if parent is None:
            raise CodecError(f"this blob is a delta; decoding it needs its parent {info.parent}")
        if parent.digest != info.parent:
            raise WrongParent(f"delta was encoded against {info.parent}, but was given {parent.digest}")
        _check_parent_bytes(parent, frame.header.content_size)
        return frame, parent.data

    def decode(self, encoded: Buffer, size: int, parent: Parent | None = None) -> memoryview:
        frame, parent_bytes = self._frame_and_parent(encoded, parent)
        return decode_planes(frame, encoded, size, parent_bytes, self.threads)

    def decode_into(self, encoded: Buffer, out: Buffer, parent: Parent | None = None) -> None:
        frame, parent_bytes = self._frame_and_parent(encoded, parent)
        decode_planes_into(frame, encoded, out, parent_bytes, self.threads)

    def iter_decode(self, encoded: Buffer, size: int, parent: Parent | None = None) -> Iterator[memoryview]:
        frame, parent_bytes = self._frame_and_parent(encoded, parent)
        return iter_decode_planes(frame, encoded, size, parent_bytes, self.threads)


def _check_parent_bytes(parent: Parent, size: int) -> None:
    """The parent's bytes must be as long as its digest says and as the blob (a delta of
    a different-sized tensor is not a fine-tune of it)."""
    got = memoryview(parent.data).nbytes
    if got != parent.digest.size:
        raise WrongParent(f"parent bytes are {got} long but its digest {parent.digest} says {parent.digest.size}")
    if got != size:
        raise CodecError(f"a delta parent must be as long as the blob ({got} != {size} bytes)")


XOR_DELTA = XorDeltaCodec()
