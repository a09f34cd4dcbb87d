"""TensorRT's native LLM layers: rotary embedding, attention, and the ones the evaluator
refuses by name (MoE, KV-cache update).

Semantics are those of the TensorRT operator documentation:

- ``IRotaryEmbeddingLayer``: input ``[b, n, s, h]``; caches ``[b, s, h/2]``, or
  ``[max_pos + 1, h/2]`` indexed by ``position_ids [b, s]`` (input 3). Only the first
  ``rotary_embedding_dim`` (0: all) of ``h`` rotate; pairs are the two halves, or adjacent
  elements when ``interleaved``.
- ``IAttention`` (seen in a network as an ATTENTION_INPUT and an ATTENTION_OUTPUT layer):
  ``softmax(Q Kᵀ + mask) V`` with *no* scale (TensorRT requires Q or K to be pre-scaled);
  a bool mask allows where True, a float mask is added; ``causal_kind`` UPPER_LEFT allows
  ``j <= i``, LOWER_RIGHT ``j <= i + s_kv - s_q``; GQA repeats each KV head over
  ``n_q / n_kv`` query heads; ``key_value_lengths`` masks padded keys.
The attention is computed at its input boundary layer; the output boundary passes it on.
"""

from __future__ import annotations

import numpy as np

from trtcas.rules.evaluate.dtypes import wide


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, interleaved: bool) -> np.ndarray:
    if interleaved:
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = odd * cos + even * sin
        return out
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def rotary_embedding(c):
    x, cos, sin = wide(c.input(0)), wide(c.input(1)), wide(c.input(2))
    if x.ndim != 4:
        raise c.fail(f"a rank-{x.ndim} input (the layer takes [b, n, s, h])")
    dim = int(c.layer.rotary_embedding_dim) or x.shape[-1]
    positions = c.input(3, required=False)
    if positions is not None:
        positions = positions.astype(np.int64)
        cos, sin = cos[positions], sin[positions]  # [b, s, dim/2]
    if cos.shape[-1] * 2 != dim:
        raise c.fail(f"caches of width {cos.shape[-1]} for a rotary dim of {dim}")
    cos, sin = cos[:, None], sin[:, None]  # broadcast over heads
    rotated = _rotate(x[..., :dim], cos, sin, bool(c.layer.interleaved))
    return [np.concatenate([rotated, x[..., dim:]], axis=-1)]


def _attention_object(c):
    return c.layer.attention


def attention_input(c):
    att = _attention_object(c)
    if att.query_form.name != "PADDED_BHND" or att.key_value_form.name != "PADDED_BHND":
        raise c.fail(f"attention IO forms {att.query_form.name}/{att.key_value_form.name} (only PADDED_BHND)")
    if att.normalization_quantize_scale is not None:
        raise c.fail("a quantized attention normalization")
    q, k, v = (wide(c.value_of(att.get_input(i))) for i in range(3))
    n_q, n_kv = q.shape[1], k.shape[1]
    if n_q % n_kv:
        raise c.fail(f"{n_q} query heads over {n_kv} key/value heads")
    k, v = np.repeat(k, n_q // n_kv, axis=1), np.repeat(v, n_q // n_kv, axis=1)
    scores = q @ np.swapaxes(k, -1, -2)
    s_q, s_kv = scores.shape[-2:]
    allowed = np.ones((s_q, s_kv), bool)
    kind = att.causal_kind.name
    rows, cols = np.arange(s_q)[:, None], np.arange(s_kv)[None, :]
    if kind == "UPPER_LEFT":
        allowed = cols <= rows
    elif kind == "LOWER_RIGHT":
        allowed = cols <= rows + (s_kv - s_q)
    elif kind != "NONE":
        raise c.fail(f"CausalMaskKind.{kind}")
    allowed = np.broadcast_to(allowed, scores.shape)
    mask = c.value_of(att.mask) if att.mask is not None else None
    if mask is not None and mask.dtype == np.bool_:
        allowed = allowed & mask
    elif mask is not None:
        scores = scores + wide(mask)
    lengths = c.value_of(att.key_value_lengths) if att.key_value_lengths is not None else None
    if lengths is not None:
        allowed = allowed & (cols[None, None] < lengths.astype(np.int64).reshape(-1, 1, 1, 1))
    norm = att.norm_op.name
    if norm == "SOFTMAX":
        scores = np.where(allowed, scores, -np.inf)
        top = np.max(scores, axis=-1, keepdims=True)
        weights = np.exp(scores - np.where(np.isfinite(top), top, 0))
        total = weights.sum(axis=-1, keepdims=True)
        probs = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    elif norm == "NONE":
        probs = np.where(allowed, scores, 0.0)
    else:
        raise c.fail(f"AttentionNormalizationOp.{norm}")
    return [probs @ v]


def attention_output(c):
    return [c.input(0)]


def moe(c):
    layer = c.layer
    facts = ", ".join(f"{name}={getattr(layer, name, '?')}" for name in ("activation_type", "quantization_to_type"))
    raise c.fail(f"MoE ({facts}): its routing, SwiGLU parameters and quantization are set through "
                 "setters whose semantics the public API does not define precisely enough to evaluate")


def kv_cache_update(c):
    raise c.fail("KV-cache update (the evaluator models the prefill phase without a cache)")


LAYERS = {
    "ROTARY_EMBEDDING": rotary_embedding, "ATTENTION_INPUT": attention_input,
    "ATTENTION_OUTPUT": attention_output, "MOE": moe, "KV_CACHE_UPDATE": kv_cache_update,
}
