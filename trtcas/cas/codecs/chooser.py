"""Choosing a tensor's encoding: cheaply, on a sample, and only when it pays.

Without a parent there is nothing to choose between: the tensor is encoded as byte planes
at once, and the frame is kept only if it saves enough (an incompressible plane costs a
64 KiB probe, not a full try; see ``planes.compress_plane``). A sample first would only
add work: ~1 MiB encoded per tensor, ~7% of a cold convert.

With a parent, a choice must cost far less than the compression it decides on, so for a
large tensor both candidates are tried on a sample (``SAMPLE_SLICES`` slices spread over
the tensor, about 1 MiB in all, single-threaded) and only the winner is encoded in full;
the full encoding is then checked against the threshold again (a sample can flatter).
Small tensors are encoded outright: the sample would be the tensor.

Order: a delta against the parent first (when there is one, as long, and the chain is not
too deep), because a fine-tune's delta saves 4-60x where byte planes save ~1.5x; byte
planes otherwise. A delta is kept only if it beats byte planes clearly
(``DELTA_ADVANTAGE``): it costs a parent read on every decode and pins the parent in gc.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trtcas.cas.codecs.byteplane import BYTEPLANE
from trtcas.cas.codecs.frame import PackedFrame
from trtcas.cas.codecs.plane_frames import encode_planes
from trtcas.cas.codecs.planes import as_uint8
from trtcas.cas.codecs.protocol import Buffer, Codec, EncodeHint, Parent, element_size
from trtcas.cas.codecs.xor_delta import XOR_DELTA, DeltaInfo, pack_delta_extra

RAW = "raw"
MIN_SAVING = 0.10
MIN_ENCODE_BYTES = 64 << 10  # below this, a frame's header and a decode are not worth it
MAX_CHAIN_DEPTH = 4
SAMPLE_SLICES = 8
SAMPLE_SLICE_BYTES = 128 << 10
DELTA_ADVANTAGE = 1.25  # a delta must be this much smaller than byte planes to be chosen


@dataclass(frozen=True, eq=False)
class Estimate:
    """A codec's ratio (content / encoded) as judged on a sample. When the sample was the
    whole tensor, ``frame`` is the finished encoding, so it is not encoded twice."""

    codec: str
    ratio: float
    sampled_bytes: int
    frame: PackedFrame | None = None


def _sample_spans(size: int, esize: int) -> list[tuple[int, int]]:
    """Element-aligned slices spread evenly over ``size`` bytes (all of it if small)."""
    if size <= SAMPLE_SLICES * SAMPLE_SLICE_BYTES * 2:
        return [(0, size)]
    step = (size - SAMPLE_SLICE_BYTES) // (SAMPLE_SLICES - 1)
    starts = [i * step - (i * step) % esize for i in range(SAMPLE_SLICES)]
    return [(a, a + SAMPLE_SLICE_BYTES) for a in starts]


def _gather(content: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    if len(spans) == 1 and spans[0] == (0, content.nbytes):
        return content
    return np.concatenate([content[a:b] for a, b in spans])


def estimate(data: Buffer, esize: int, parent: Parent | None = None) -> Estimate:
    """The ratio of byte planes (or, with ``parent``, of the XOR delta) on a sample,
    encoded on one thread: the choice must stay cheap next to the encoding."""
    content = as_uint8(data)
    spans = _sample_spans(content.nbytes, esize)
    sample = _gather(content, spans)
    whole = sample is content
    if parent is None:
        codec, extra, base = BYTEPLANE, b"", None
    else:
        codec, base = XOR_DELTA, _gather(as_uint8(parent.data), spans)
        extra = pack_delta_extra(DeltaInfo(parent.digest, parent.chain_depth + 1))
    frame = encode_planes(sample, codec.codec_id, esize, extra, base, threads=1)
    return Estimate(codec.name, sample.nbytes / len(frame), sample.nbytes, frame if whole else None)


def _delta_allowed(size: int, parent: Parent | None, max_chain_depth: int) -> bool:
    return (
        parent is not None
        and memoryview(parent.data).nbytes == size
        and parent.chain_depth + 1 <= max_chain_depth
    )


@dataclass(frozen=True, eq=False)
class Candidate:
    """An encoding worth trying in full: its codec and the parent a delta is taken
    against; ``frame`` when the sample was the whole tensor (already encoded)."""

    codec: Codec
    element_size: int
    parent: Parent | None = None
    frame: PackedFrame | None = None

    def hint(self, min_saving: float, threads: int = 0) -> EncodeHint:
        return EncodeHint(self.element_size, self.parent, min_saving, threads)


def encoding_candidates(
    data: Buffer,
    dtype_hint: str | int | None,
    parent: Parent | None = None,
    *,
    min_saving: float = MIN_SAVING,
    max_chain_depth: int = MAX_CHAIN_DEPTH,
) -> list[Candidate]:
    """The encodings to try in full, best first; none when raw is as good (too small, or
    no candidate saved ``min_saving`` on its sample). A full encoding may still fall short
    (a sample can flatter): then the next is tried, and raw after the last."""
    size = memoryview(data).nbytes
    if size < MIN_ENCODE_BYTES:
        return []
    esize = element_size(dtype_hint)
    if not _delta_allowed(size, parent, max_chain_depth):
        return [Candidate(BYTEPLANE, esize)]
    need = 1.0 / (1.0 - min_saving)
    planes = estimate(data, esize)
    delta = estimate(data, esize, parent)
    candidates = []
    if delta.ratio >= need and delta.ratio >= DELTA_ADVANTAGE * planes.ratio:
        candidates.append(Candidate(XOR_DELTA, esize, parent, delta.frame))
    if planes.ratio >= need:
        candidates.append(Candidate(BYTEPLANE, esize, None, planes.frame))
    return candidates


def choose_encoding(
    data: Buffer,
    dtype_hint: str | int | None,
    parent: Parent | None = None,
    *,
    min_saving: float = MIN_SAVING,
    max_chain_depth: int = MAX_CHAIN_DEPTH,
    threads: int = 0,
) -> tuple[str, PackedFrame | None]:
    """(codec name, frame) for the best encoding that saves at least ``min_saving``, or
    ``("raw", None)`` when none does (store the bytes as they are): the whole frame in
    memory, for callers without a file to stream it to."""
    for cand in encoding_candidates(data, dtype_hint, parent, min_saving=min_saving, max_chain_depth=max_chain_depth):
        if cand.frame is not None:  # the sample was the whole tensor
            return cand.codec.name, cand.frame
        encoded = cand.codec.encode(data, cand.hint(min_saving, threads))
        if encoded is not None:
            return cand.codec.name, encoded
    return RAW, None
