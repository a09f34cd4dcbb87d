"""Weight codecs for the blob store: byte planes, and XOR deltas against a parent tensor.

A blob encoded by a codec is a self-describing frame (``frame.py``); decoding never
verifies content, the store hashes what comes out. ``choose_encoding`` picks the codec
that pays for a tensor, judged on a sample; ``frame_info`` and ``decode_blob`` read any
frame without knowing how it was chosen.

How the store uses them (``cas/blobstore.py``, ``cas/frameblobs.py``): a frame lives at
``<hex>.tcx`` beside raw ``<hex>`` and ``<hex>.zst`` (the suffix says "decode me", the header
says how); ``put_tensor`` hashes the content once, ``choose_encoding`` picks, and the frame's
pieces (``PackedFrame``) are written to the blob file without being joined; reads decode
and hash the content, a ``CodecError`` is a corrupt blob (quarantined, a miss); gc keeps
the parent of every kept delta.
"""

from trtcas.cas.codecs.byteplane import BYTEPLANE, BytePlaneCodec
from trtcas.cas.codecs.chooser import MAX_CHAIN_DEPTH, MIN_SAVING, RAW, Estimate, choose_encoding, estimate
from trtcas.cas.codecs.frame import HEADER_SIZE, MAGIC, PackedFrame
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
    "PackedFrame", "Parent", "RAW", "WrongParent", "XOR_DELTA", "XorDeltaCodec", "choose_encoding", "codec_named",
    "decode_blob", "delta_info", "element_size", "estimate", "frame_info",
]  # fmt: skip
