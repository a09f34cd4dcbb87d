"""Weight codecs for the blob store: byte planes, and XOR deltas against a parent tensor.

A blob encoded by a codec is a self-describing frame (``frame.py``); decoding never
verifies content, the store hashes what comes out. ``choose_encoding`` picks the codec
that pays for a tensor, judged on a sample; ``frame_info`` and ``decode_blob`` read any
frame without knowing how it was chosen.

Meant integration into ``BlobStore`` (not done here):
- a frame lives at ``<hex>.tcx`` beside today's ``<hex>`` (raw) and ``<hex>.zst``: the
  suffix says "decode me" (a raw blob may begin with any bytes, even this magic), the
  header says how; ``locate`` tries raw, ``.zst``, ``.tcx``; ``iter_blobs`` reads the
  content size from ``frame_info`` on the first ``HEADER_SIZE + 512`` bytes.
- ``put_tensor(data, dtype, parent_digest=None)``: hash the content, ``choose_encoding``
  (the parent's bytes come verified from the store, its depth from its own frame), write
  the frame (or raw) via the usual temp + fsync + rename.
- reads decode with ``iter_decode`` while hashing (the digest is of the content), or into
  the destination's temp file for ``materialize``; a ``CodecError`` is a corrupt blob:
  quarantine, miss. A delta's parent is read (recursively, depth <= MAX_CHAIN_DEPTH) first.
- gc marks ``delta_info(frame).parent`` of every kept delta as kept, transitively.
"""

from trtcas.cas.codecs.byteplane import BYTEPLANE, BytePlaneCodec
from trtcas.cas.codecs.chooser import MAX_CHAIN_DEPTH, MIN_SAVING, RAW, Estimate, choose_encoding, estimate
from trtcas.cas.codecs.frame import HEADER_SIZE, MAGIC
from trtcas.cas.codecs.protocol import (
    Codec,
    CodecError,
    CorruptFrame,
    EncodeHint,
    Parent,
    WrongParent,
    element_size,
)
from trtcas.cas.codecs.registry import CODECS, FrameInfo, codec_named, decode_blob, frame_info
from trtcas.cas.codecs.xor_delta import XOR_DELTA, DeltaInfo, XorDeltaCodec, delta_info

__all__ = [
    "BYTEPLANE", "BytePlaneCodec", "CODECS", "Codec", "CodecError", "CorruptFrame", "DeltaInfo",
    "EncodeHint", "Estimate", "FrameInfo", "HEADER_SIZE", "MAGIC", "MAX_CHAIN_DEPTH", "MIN_SAVING",
    "Parent", "RAW", "WrongParent", "XOR_DELTA", "XorDeltaCodec", "choose_encoding", "codec_named",
    "decode_blob", "delta_info", "element_size", "estimate", "frame_info",
]  # fmt: skip
