"""Rotary position tables: ``1 / base^(2i/d)`` and the scalings transformers applies to it.

The tables are constants of the network (no position ids: prefill positions are 0..s-1),
so only scalings that do not depend on the run-time length can be written; the others are
refused by name (``dynamic``, ``yarn``, ``longrope`` ...), never approximated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from trtcas.errors import TrtcasError
from trtcas.rules.formats.safetensors import numpy_dtype

ROPE_TYPES = ("default", "linear", "llama3")
# the keys each rope type's parameters may hold; any other changes the math unnoticed
ROPE_KEYS = {
    "default": frozenset(),
    "linear": frozenset({"factor"}),
    "llama3": frozenset({"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}),
}


def rope_kind(scaling: dict) -> str:
    kind = scaling.get("rope_type", scaling.get("type")) or "default"
    if kind not in ROPE_TYPES:
        raise TrtcasError(f"rope type {kind!r} is not supported by the native network; supported: {', '.join(ROPE_TYPES)}")
    extra = sorted(set(scaling) - ROPE_KEYS[kind] - {"rope_type", "type"})
    if extra:
        raise TrtcasError(f"rope parameter(s) {', '.join(extra)} of rope type {kind!r} are not supported; "
                          f"it takes {', '.join(sorted(ROPE_KEYS[kind])) or 'no parameters'}")
    for key in sorted(ROPE_KEYS[kind]):  # each is required (as transformers checks), a positive number
        value = scaling.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise TrtcasError(f"rope type {kind!r} needs {key} as a positive number, got {value!r}")
    if kind == "llama3" and not scaling["low_freq_factor"] < scaling["high_freq_factor"]:
        raise TrtcasError(f"rope type 'llama3' needs low_freq_factor < high_freq_factor, got "
                          f"{scaling['low_freq_factor']!r} and {scaling['high_freq_factor']!r}")
    return kind


def rotary_inverse_frequencies(geometry: Any) -> np.ndarray:
    """``1 / base^(2i/d)`` for the ``d/2`` rotated pairs (``d``: the rotated dims of a head),
    with ``linear`` or ``llama3`` scaling applied as HF's ``rope_init_fn`` does."""
    d = geometry.rotary_dim or geometry.head_size
    inv = 1.0 / geometry.rotary_base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    scaling = dict(geometry.rotary_scaling or ())
    kind = rope_kind(scaling)
    if kind == "default":
        return inv
    factor = float(scaling.get("factor", 1.0))
    if kind == "linear":
        return inv / factor
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old_len = float(scaling.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > old_len / low, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


def rotary_tables(geometry: Any, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of shape ``[1, max_seq_len, rotated/2]`` in the model dtype."""
    angles = np.outer(np.arange(max_seq_len, dtype=np.float64), rotary_inverse_frequencies(geometry))
    dtype = numpy_dtype(geometry.dtype)
    return (np.cos(angles)[None].astype(dtype), np.sin(angles)[None].astype(dtype))
