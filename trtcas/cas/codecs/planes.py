"""Byte planes: the transform and the plane compressor that both weight codecs share.

A float's bytes are not alike: in bf16 the high byte (sign + 7 exponent bits) of normally
distributed weights carries ~2.7 bits of entropy, the low byte (mantissa) ~8. Interleaved,
zstd sees noise; split into planes, the exponent plane compresses ~2.9x and the mantissa
plane is stored raw, without spending time on it.

The plane compressor is zstd with *tuned* parameters rather than level 1: on an exponent
plane, level 1 spends its time finding 4-byte matches that do not pay (ratio 2.71, ~190-320
MB/s a core); minimum match 7 with the smallest hash table leaves almost everything to zstd's
Huffman literal coder, which is what such a plane needs (ratio 2.94, near its 2.99 entropy
bound, ~640-800 MB/s compress, ~1.2 GB/s decompress, one core; XOR-delta planes gain too).
``benchmarks/codecs_bench.py`` has the figures. They are ordinary zstd frames: any zstd
decodes them. Each zstd frame carries its content checksum, so a flipped payload bit in a
compressed plane fails loudly instead of decoding to wrong bytes.

Work is split into blocks (``BLOCK_BYTES`` of content) that run on a shared thread pool:
zstd and numpy's copies release the GIL, so blocks scale with cores, and a streaming
reader holds only a few blocks at once.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import zstandard

from trtcas.cas.codecs.frame import METHOD_RAW, METHOD_ZSTD, Frame
from trtcas.cas.codecs.protocol import Buffer, CorruptFrame
from trtcas.cas.huge_pages import private_buffer
from trtcas.cas.ordered_pool import ordered_results

BLOCK_BYTES = 8 << 20  # content bytes per block: >= 1 MiB planes keep zstd's ratio, many blocks keep cores busy
PROBE_BYTES = 64 << 10  # a plane is first tried on this much of itself
PROBE_MIN_SAVING = 0.03  # a probe saving less than this means the plane is stored raw untried
PLANE_MIN_SAVING = 0.02  # a compressed plane must save this much, else it is stored raw

PLANE_PARAMS = zstandard.ZstdCompressionParameters(
    window_log=17,
    hash_log=6,
    chain_log=7,
    search_log=1,
    min_match=7,
    target_length=0,
    strategy=zstandard.STRATEGY_FAST,
    write_checksum=True,
    write_content_size=True,
)

T = TypeVar("T")
R = TypeVar("R")
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    """One compressor per thread: zstandard's compressors are not thread-safe."""
    comp = getattr(_local, "compressor", None)
    if comp is None:
        comp = _local.compressor = zstandard.ZstdCompressor(compression_params=PLANE_PARAMS)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstandard.ZstdDecompressor()
    return dec


@functools.lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="trtcas-codec")


def thread_count(threads: int) -> int:
    return threads if threads > 0 else (os.cpu_count() or 1)


def run_ordered(fn: Callable[[T], R], items: Iterable[T], threads: int, window_size: int = 0) -> Iterator[R]:
    """``map(fn, items)`` on the shared pool, in order, ``window_size`` items in flight (0:
    twice the threads); see ``ordered_pool``."""
    threads = thread_count(threads)
    if threads == 1:
        return (fn(item) for item in items)  # a generator, closable like the pooled one
    return ordered_results(_pool(threads), fn, items, window_size or 2 * threads)


_UINT_OF_SIZE = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_LITTLE_ENDIAN = sys.byteorder == "little"


def split_planes(block: np.ndarray, element_size: int, into: np.ndarray | None = None) -> list[np.ndarray]:
    """Byte ``k`` of every element, for each ``k``; the planes are consecutive slices of
    ``into`` (as long as ``block``) when it is given, else fresh arrays.

    On a little-endian machine byte ``k`` of an element is ``(element >> 8k) & 0xff``:
    a shift with a truncating cast into the plane runs 2-3x faster than numpy's strided
    one-byte copy (7.7 vs 2.7 GB/s for a bf16 block here), and the split touches every
    weight byte once per build. Elsewhere, the strided copy."""
    if element_size == 1:
        return [block]
    if not _LITTLE_ENDIAN:
        rows = block.reshape(-1, element_size)
        return [np.ascontiguousarray(rows[:, k]) for k in range(element_size)]
    elements = block.view(_UINT_OF_SIZE[element_size])
    n = elements.size
    if into is None:
        planes = [np.empty(n, dtype=np.uint8) for _ in range(element_size)]
    else:
        planes = [into[k * n : (k + 1) * n] for k in range(element_size)]
    np.copyto(planes[0], elements, casting="unsafe")
    for k in range(1, element_size):
        np.right_shift(elements, 8 * k, out=planes[k], casting="unsafe")
    return planes


def merge_planes(planes: list[np.ndarray], target: np.ndarray) -> None:
    """The inverse of ``split_planes``: interleave the planes into ``target``.

    For 2-byte elements on a little-endian machine, ``hi << 8 | lo`` computed as uint16
    straight into the target runs 2x faster than numpy's strided one-byte copies (1.1 vs
    2.4 ms for an 8 MiB bf16 block here; every weight byte of a cache hit passes through
    it). Wider elements keep the strided copies, which beat shifts that need temporaries."""
    if len(planes) == 2 and _LITTLE_ENDIAN:
        merged = target.view(np.uint16)
        np.left_shift(planes[1], 8, out=merged, dtype=np.uint16)
        np.bitwise_or(merged, planes[0], out=merged)
        return
    columns = target.reshape(-1, len(planes))
    for k, plane in enumerate(planes):
        columns[:, k] = plane


def _xor_scratch(nbytes: int) -> np.ndarray:
    """This thread's buffer for a block's XOR with its parent: it is split into planes at
    once, so one buffer per thread serves every block (fresh pages cost a zeroing each).
    A mapping of its own, like :class:`PlaneRing`'s, for the same reason."""
    scratch = getattr(_local, "xor_scratch", None)
    if scratch is None or scratch.nbytes < nbytes:
        _local.xor_scratch = None
        scratch = _local.xor_scratch = np.frombuffer(private_buffer(max(nbytes, BLOCK_BYTES)), dtype=np.uint8)
    return scratch[:nbytes]


class PlaneRing:
    """A few block-sized buffers that a streamed encode (``plane_frames.stream_planes``)
    splits successive blocks' planes into, round robin, on one thread's behalf.

    A block's raw planes are views of its slot, so a slot may be reused only once that
    block is written: the stream keeps fewer blocks in flight than there are slots, and
    its consumer writes each block before asking for the next. Whatever the tensor's size,
    a worker holds ``slots`` blocks (a buffer for a whole tensor's planes, as the store
    used before, grew to the largest tensor: a 70B model's 2 GB embedding, per worker).

    Fresh buffers per block would cost the kernel a page fault and a zeroed page for every
    stored byte (~9% of a cold convert's CPU on two cores); the ring is first touched once
    and reused tensor after tensor. It is a mapping of its own (``mmap``), not
    ``malloc``'s: glibc raises its mmap threshold to the size of a freed block, so a freed
    large buffer made every later buffer up to that size come from the heap, which kept
    ~1.5 GB of a following network action's decoded weights resident after it ended."""

    def __init__(self, slots: int, block_bytes: int = BLOCK_BYTES) -> None:
        if slots < 2:
            raise ValueError("a plane ring needs at least two slots: one written, one filled")
        self.slots = slots
        self.block_bytes = block_bytes
        self._buffer: np.ndarray | None = None

    @property
    def in_flight(self) -> int:
        """Blocks a stream may have encoding at once while one more is being written."""
        return self.slots - 1

    def take(self, index: int, nbytes: int) -> np.ndarray:
        """The slot for block ``index``: ``nbytes`` (at most a block) of it."""
        if nbytes > self.block_bytes:
            raise ValueError(f"a {nbytes}-byte block does not fit a ring of {self.block_bytes}-byte slots")
        if self._buffer is None:
            self._buffer = np.frombuffer(private_buffer(self.slots * self.block_bytes), dtype=np.uint8)
        start = (index % self.slots) * self.block_bytes
        return self._buffer[start : start + nbytes]


def compress_plane(plane: np.ndarray) -> tuple[int, bytes | memoryview]:
    """(method, stored bytes) of one plane: zstd when it saves, the plane itself otherwise.

    A large plane is first tried on a probe from its middle, so an incompressible mantissa
    plane costs a 64 KiB trial, not a full failed compression."""
    n = plane.nbytes
    comp = _compressor()
    if n >= 4 * PROBE_BYTES:
        mid = (n - PROBE_BYTES) // 2
        probe = plane[mid : mid + PROBE_BYTES]
        if len(comp.compress(probe)) > (1.0 - PROBE_MIN_SAVING) * PROBE_BYTES:
            return METHOD_RAW, memoryview(plane).cast("B")
    packed = comp.compress(plane)
    if len(packed) > (1.0 - PLANE_MIN_SAVING) * n:
        return METHOD_RAW, memoryview(plane).cast("B")
    return METHOD_ZSTD, packed


def encode_block(
    body: np.ndarray,
    span: tuple[int, int],
    element_size: int,
    parent: np.ndarray | None,
    planes_into: np.ndarray | None = None,
) -> tuple[list[tuple[int, int]], list[bytes | memoryview]]:
    """Table entries and stored planes of one block (XORed with ``parent`` first if given).

    ``planes_into``: where this block's planes go (as long as the block); a plane stored
    raw is then a view of it (see :class:`PlaneRing`)."""
    start, end = span
    block = body[start:end]
    if parent is not None:  # a one-byte element's block is its own plane, which may be stored raw
        out = _xor_scratch(end - start) if element_size > 1 else planes_into
        block = np.bitwise_xor(block, parent[start:end], out=out)
    entries, parts = [], []
    for plane in split_planes(block, element_size, planes_into):
        method, stored = compress_plane(plane)
        entries.append((method, len(stored)))
        parts.append(stored)
    return entries, parts


def decode_block(
    frame: Frame,
    encoded: memoryview,
    row: list[tuple[int, int, int]],
    target: np.ndarray,
    parent: np.ndarray | None,
) -> None:
    """Decode one block's planes into ``target`` (its slice of the content), then XOR with
    the parent's slice if the frame is a delta."""
    esize = frame.header.element_size
    plane_len = target.nbytes // esize
    decoded = []
    for method, offset, length in row:
        stored = encoded[offset : offset + length]
        if method == METHOD_RAW:
            decoded.append(np.frombuffer(stored, dtype=np.uint8))
            continue
        try:
            raw = _decompressor().decompress(stored, max_output_size=plane_len)
        except zstandard.ZstdError as exc:
            raise CorruptFrame(f"codec frame plane at byte {offset} does not decompress ({exc})") from exc
        if len(raw) != plane_len:
            raise CorruptFrame(f"codec frame plane at byte {offset} decompressed to {len(raw)} bytes, not {plane_len}")
        decoded.append(np.frombuffer(raw, dtype=np.uint8))
    merge_planes(decoded, target)
    if parent is not None:
        np.bitwise_xor(target, parent, out=target)


def as_uint8(data: Buffer) -> np.ndarray:
    """A flat uint8 view of any buffer (no copy)."""
    view = memoryview(data)
    if view.nbytes == 0:
        return np.zeros(0, np.uint8)
    return np.frombuffer(view.cast("B") if view.format != "B" or view.ndim != 1 else view, dtype=np.uint8)
