"""What a weight codec is, what it is told, and how it fails.

A codec turns the bytes of one tensor into a self-describing frame (see ``frame.py``) and
back. It is told only what the store knows without reading the tensor: the element size,
and for a delta codec the parent blob (its digest, its bytes, and how deep a delta chain
that parent already sits on). It never hashes content: the store verifies the digest of
the *decoded* bytes, whatever the encoding, so a codec's own checks are only there to fail
loudly and early on a frame that is structurally wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Union

import numpy as np

from trtcas.cas.digest import Digest
from trtcas.errors import TrtcasError

if TYPE_CHECKING:
    from trtcas.cas.codecs.frame import PackedFrame

Buffer = Union[bytes, bytearray, memoryview]

# Safetensors dtype names (what a TensorManifest records) -> bytes per element.
_ELEMENT_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
    # names people write (TensorRT-LLM configs, CLIs)
    "FP8": 1, "INT8": 1, "FP16": 2, "BFLOAT16": 2, "FLOAT16": 2, "FP32": 4, "FLOAT32": 4, "FP64": 8,
}  # fmt: skip
ELEMENT_SIZES = (1, 2, 4, 8)


class CodecError(TrtcasError):
    """A weight codec could not encode or decode a blob."""


class CorruptFrame(CodecError):
    """An encoded blob is not a well-formed frame: truncated, bit-flipped, or not a frame.

    The store should quarantine the blob and count it as a miss, as for any corrupt blob.
    """


class WrongParent(CodecError):
    """A delta frame was given a parent other than the one it was encoded against."""


def element_size(dtype_hint: str | int | np.dtype | None) -> int:
    """Bytes per element for a safetensors dtype name, a numpy dtype, or an int.

    Unknown dtypes count as 1 byte: byte planes of a 1-byte type are the data itself, so a
    wrong guess costs ratio, never correctness.
    """
    if dtype_hint is None:
        return 1
    if isinstance(dtype_hint, int):
        size = dtype_hint
    elif isinstance(dtype_hint, str) and dtype_hint.upper() in _ELEMENT_SIZES:
        size = _ELEMENT_SIZES[dtype_hint.upper()]
    else:
        try:
            size = np.dtype(dtype_hint).itemsize
        except TypeError:
            return 1
    return size if size in ELEMENT_SIZES else 1


@dataclass(frozen=True, eq=False)
class Parent:
    """The blob a delta is taken against, as the store resolved and verified it.

    ``chain_depth`` is how many deltas deep the parent itself is stored (0 when it is
    stored raw or by a non-delta codec); its child is ``chain_depth + 1`` deep, and the
    store bounds that so reading a blob never walks a long chain.
    """

    digest: Digest
    data: Buffer
    chain_depth: int = 0


@dataclass(frozen=True, eq=False)
class EncodeHint:
    """What the store tells a codec about a blob before it is encoded.

    ``min_saving``: an encoding that saves less than this fraction is not worth a decode on
    every read, and ``encode`` returns None (store raw); None keeps every frame (tests,
    measurements). ``threads``: 0 means all cores.
    """

    element_size: int = 1
    parent: Parent | None = None
    min_saving: float | None = 0.10
    threads: int = 0


class Codec(Protocol):
    """A weight codec. Frames name their codec in the header, so decode needs no name.

    Frames come back as their unjoined pieces (``PackedFrame``), decoded content as a
    ``memoryview`` over a fresh numpy buffer (bytes-like: write it, hash it, compare it;
    ``bytes(x)`` copies). Large ``bytes`` and
    ``bytearray`` objects are filled a 4 KiB page fault at a time, numpy's buffers use huge
    pages: the difference was 1.7 vs 8.6 GB/s, more than the codecs' own cost."""

    name: str
    codec_id: int

    def encode(self, data: Buffer, hint: EncodeHint) -> PackedFrame | None:
        """The frame of ``data`` (as its unjoined pieces: ``PackedFrame.view()`` joins
        them), or None when it saves less than ``hint.min_saving``."""
        ...

    def stream(self, data: Buffer, hint: EncodeHint, ring: Any) -> Any:
        """The frame of ``data`` block by block (a ``plane_frames.PlaneStream`` over a
        ``planes.PlaneRing``), for a writer that decides at the end whether it saved enough."""
        ...

    def decode(self, encoded: Buffer, size: int, parent: Parent | None = None) -> memoryview:
        """The ``size`` content bytes of a frame (raises ``CorruptFrame``, ``WrongParent``)."""
        ...

    def decode_into(self, encoded: Buffer, out: Buffer, parent: Parent | None = None) -> None:
        """Decode into a writable buffer of exactly the content size (e.g. an mmap)."""
        ...

    def iter_decode(self, encoded: Buffer, size: int, parent: Parent | None = None) -> Iterator[memoryview]:
        """The content in order, a block at a time, in bounded memory (hash while writing)."""
        ...


def check_element_size(codec: str, size: int) -> None:
    if size not in ELEMENT_SIZES:
        raise CodecError(f"{codec} needs an element size in {ELEMENT_SIZES}, got {size}")


def saves_enough(encoded_size: int, size: int, min_saving: float | None) -> bool:
    """Whether an encoding of ``size`` bytes into ``encoded_size`` is worth decoding on
    every read. An empty blob never is: raw costs nothing. ``None``: keep any frame."""
    if min_saving is None:
        return True
    return size > 0 and encoded_size <= (1.0 - min_saving) * size
