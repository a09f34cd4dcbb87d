"""Whole frames of byte planes: content -> frame and frame -> content, block-parallel.

Both weight codecs are this with a different ``extra`` and an optional XOR parent, so the
block loop, the tail handling and the three ways to decode (into a new buffer, into a
caller's buffer, as a stream of blocks) live here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from trtcas.cas import reused_buffers
from trtcas.cas.codecs.frame import Frame, FrameHeader, PackedFrame, frame_head, head_length, pack_frame
from trtcas.cas.codecs.planes import BLOCK_BYTES, PlaneRing, as_uint8, decode_block, encode_block, run_ordered
from trtcas.cas.codecs.protocol import Buffer, CodecError, CorruptFrame


def _prepare(data: Buffer, codec_id: int, element_size: int, extra: bytes, parent: Buffer | None, block_bytes: int):
    """(header, body, parent as uint8 or None) of a frame about to be encoded."""
    content = as_uint8(data)
    size = content.nbytes
    tail_len = size % element_size
    parent_u8 = None
    if parent is not None:
        parent_u8 = as_uint8(parent)
        if parent_u8.nbytes != size:
            raise CodecError(f"a delta parent must be as long as the blob ({parent_u8.nbytes} != {size} bytes)")
    block_bytes -= block_bytes % element_size
    header = FrameHeader(codec_id, element_size, size, block_bytes, extra, content[size - tail_len :].tobytes())
    return header, content[: size - tail_len], parent_u8


def encode_planes(
    data: Buffer,
    codec_id: int,
    element_size: int,
    extra: bytes = b"",
    parent: Buffer | None = None,
    threads: int = 0,
    block_bytes: int = BLOCK_BYTES,
) -> PackedFrame:
    """The frame of ``data`` (XORed with ``parent`` first, if given, which must be as
    long), whole in memory: the store streams instead (``stream_planes``)."""
    header, body, parent_u8 = _prepare(data, codec_id, element_size, extra, parent, block_bytes)

    def one(index: int):
        return encode_block(body, header.block_span(index), element_size, parent_u8)

    entries: list[tuple[int, int]] = []
    parts: list = []
    for block_entries, block_parts in run_ordered(one, range(header.n_blocks), threads):
        entries += block_entries
        parts += block_parts
    return pack_frame(header, entries, parts)


@dataclass(frozen=True, eq=False)
class PlaneStream:
    """A frame encoded block by block, for a writer that places each block's planes as
    they come (from ``head_length`` on) and the head, which needs every block's sizes,
    last at the start. Only the ring's few blocks are held at once, whatever the size of
    the tensor. ``blocks`` yields ([(method, stored length) per plane], [stored planes]);
    a block's raw planes are views of its ring slot, valid until the next block is asked
    for. Closing ``blocks`` early waits for the blocks still encoding."""

    header: FrameHeader
    blocks: Iterator[tuple[list[tuple[int, int]], list]]

    @property
    def head_length(self) -> int:
        return head_length(self.header)

    def head(self, entries: list[tuple[int, int]]) -> bytes:
        return frame_head(self.header, entries)


def stream_planes(
    data: Buffer,
    codec_id: int,
    element_size: int,
    ring: PlaneRing,
    extra: bytes = b"",
    parent: Buffer | None = None,
    threads: int = 0,
) -> PlaneStream:
    """``encode_planes`` as a :class:`PlaneStream`, blocks of the ring's size split into its slots."""
    header, body, parent_u8 = _prepare(data, codec_id, element_size, extra, parent, ring.block_bytes)

    def one(index: int):
        start, end = span = header.block_span(index)
        return encode_block(body, span, element_size, parent_u8, ring.take(index, end - start))

    return PlaneStream(header, run_ordered(one, range(header.n_blocks), threads, window_size=ring.in_flight))


def _check_size(frame: Frame, size: int) -> None:
    if frame.header.content_size != size:
        raise CorruptFrame(f"codec frame holds {frame.header.content_size} bytes but the blob is {size} bytes")


def _parent_view(frame: Frame, parent: Buffer | None) -> np.ndarray | None:
    if parent is None:
        return None
    view = as_uint8(parent)
    if view.nbytes != frame.header.content_size:
        raise CodecError(f"delta parent is {view.nbytes} bytes, the blob {frame.header.content_size}")
    return view


def _block_decoder(frame: Frame, encoded: Buffer, parent: Buffer | None):
    """``decode((index, row), target)``: one block's content into ``target`` (its length),
    XORed with the parent's slice of that block when the frame is a delta."""
    view = memoryview(encoded)
    parent_u8 = _parent_view(frame, parent)

    def decode(block, target: np.ndarray) -> None:
        index, row = block
        start, end = frame.header.block_span(index)
        decode_block(frame, view, row, target, None if parent_u8 is None else parent_u8[start:end])

    return decode


def decode_planes_into(
    frame: Frame, encoded: Buffer, out: Buffer, parent: Buffer | None = None, threads: int = 0
) -> None:
    """Decode into ``out`` (writable, exactly the content size), blocks in parallel."""
    target = np.frombuffer(out, dtype=np.uint8) if memoryview(out).nbytes else np.zeros(0, np.uint8)
    _decode_into_array(frame, encoded, target, parent, threads)


def _decode_into_array(frame: Frame, encoded: Buffer, target: np.ndarray, parent: Buffer | None, threads: int) -> None:
    _check_size(frame, target.nbytes)
    if target.nbytes and not target.flags.writeable:
        raise CodecError("decode_into needs a writable buffer")
    header = frame.header
    decode = _block_decoder(frame, encoded, parent)

    def one(block):
        start, end = header.block_span(block[0])
        decode(block, target[start:end])

    for _ in run_ordered(one, frame.blocks(), threads):
        pass
    if header.tail:
        target[header.body_size :] = np.frombuffer(header.tail, dtype=np.uint8)


def decode_planes(frame: Frame, encoded: Buffer, size: int, parent: Buffer | None = None, threads: int = 0) -> memoryview:
    """The content in a buffer of its own: numpy's (huge-page) allocation, not ``bytearray``
    (a zeroed bytearray is first-touched a 4 KiB page at a time by the decoding threads,
    which halved decode speed on two cores), or one given back inside
    ``reused_buffers.reusing()``."""
    _check_size(frame, size)
    out = reused_buffers.empty(size)
    _decode_into_array(frame, encoded, out, parent, threads)
    return memoryview(out)


def iter_decode_planes(
    frame: Frame, encoded: Buffer, size: int, parent: Buffer | None = None, threads: int = 0
) -> Iterator[memoryview]:
    """The content a block at a time, in order; at most a few blocks are held at once."""
    _check_size(frame, size)
    header = frame.header
    decode = _block_decoder(frame, encoded, parent)

    def one(block):
        start, end = header.block_span(block[0])
        target = np.empty(end - start, dtype=np.uint8)
        decode(block, target)
        return memoryview(target)

    yield from run_ordered(one, frame.blocks(), threads)
    if header.tail:
        yield memoryview(header.tail)
