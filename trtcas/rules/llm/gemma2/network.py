"""A Gemma 2 TensorRT-LLM checkpoint rank -> a TensorRT network of TensorRT's own layers.

The prefill network of HF's ``Gemma2ForCausalLM`` (``input_ids [batch, seq] int32 ->
logits [batch, seq, vocab]``), rank-independent in structure like the Llama network
(``rules/llm/llama/network.py``, whose embedding, RoPE caches and logit gather it shares).
What Gemma 2 adds, and how:

- embeddings are multiplied by ``sqrt(hidden)`` rounded to the model dtype (HF's
  ``Gemma2TextScaledWordEmbedding``);
- RMSNorm multiplies by its stored weight (``1 + w``, added at conversion) *in float32* and
  then casts, unlike Llama's cast-then-multiply (HF's comment: "Llama does x.to(float16) * w
  whilst Gemma2 is (x * w).to(float16)");
- four norms per layer: input, post-attention (before the residual add, after the
  all-reduce), pre- and post-feed-forward;
- GeGLU: ``GELU_TANH(fc(x)) * gate(x)``, TensorRT's tanh-approximated GELU activation;
- attention scores are scaled by ``query_pre_attn_scalar ** -0.5`` and soft-capped
  (``cap * tanh(s / cap)``) before the mask and softmax. ``IAttention`` has no place for a
  function between ``Q Kᵀ`` and its softmax, so attention is written from matmul,
  elementwise and softmax layers (``trt.layers.decomposed_attention``);
- layers whose ``layer_types`` entry is ``sliding_attention`` mask keys more than
  ``sliding_window - 1`` positions back; when the window covers ``max_seq_len`` the mask is
  plain causal (the same network as a global layer's);
- final logits are soft-capped in the model dtype, then cast to ``logits_dtype``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from trtcas.rules.llm.gemma2.config import Gemma2Geometry, check_weights, expected_weights, rotary_tables
from trtcas.rules.llm.llama.network import INPUT_NAME, OUTPUT_NAME, _embedding, _gather_logits
from trtcas.rules.messages import require
from trtcas.rules.trt.backend import Backend
from trtcas.rules.trt.layers import _TRT_DTYPE, LayerWriter, decomposed_attention, soft_cap
from trtcas.rules.trt.network import ParsedNetwork, Profile
from trtcas.errors import TrtcasError


@dataclass(frozen=True, eq=False, kw_only=True)
class WrittenNetwork(ParsedNetwork):
    """A network written with TensorRT's layers (``parser`` is None), with the optimization
    ``profiles`` a build needs (empty for static shapes) and every named constant by name
    (``constants``: checkpoint tensors and derived tables; TensorRT does not copy constant
    weights, so holding them keeps their memory alive, and the evaluator reads bf16 ones here)."""

    profiles: tuple[Profile, ...]
    constants: Mapping[str, np.ndarray] = field(repr=False)


def start_network(backend: Backend, log_severity: str, dtype: str, max_batch_size: int, max_seq_len: int,
                  dynamic_shapes: bool, decomposable_attention: bool = True) -> tuple[Any, Any, LayerWriter, Any]:
    """(builder, logger, writer, input_ids) of a fresh network; checks the shape arguments."""
    for name, value in (("max_batch_size", max_batch_size), ("max_seq_len", max_seq_len)):
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"{name} must be a positive integer, got {value!r}")
    logger = backend.logger(log_severity)
    builder = backend.trt.Builder(logger)
    if builder is None:
        raise TrtcasError(f"{backend.flavour} {backend.version} could not create a builder")
    network = builder.create_network(0)
    writer = LayerWriter(backend.trt, network, dtype, decomposable_attention)
    batch, seq = (-1, -1) if dynamic_shapes else (max_batch_size, max_seq_len)
    return builder, logger, writer, network.add_input(INPUT_NAME, backend.trt.int32, (batch, seq))


def finish_network(backend: Backend, builder: Any, logger: Any, writer: LayerWriter, logits: Any, source: str,
                   max_batch_size: int, max_seq_len: int, dynamic_shapes: bool) -> ParsedNetwork:
    """Mark ``logits`` as the output; the ParsedNetwork with its profile and constants."""
    logits.name = OUTPUT_NAME
    writer.net.mark_output(logits)
    profiles = (Profile({INPUT_NAME: ((1, 1), (max_batch_size, max_seq_len), (max_batch_size, max_seq_len))}),) \
        if dynamic_shapes else ()
    return WrittenNetwork(backend=backend, source=source, parser=None, network=writer.net, builder=builder,
                         logger=logger, profiles=profiles, constants=dict(writer.constants))


def rotary_caches(w: LayerWriter, head_size: int, base: float, ids: Any, max_seq_len: int) -> tuple[Any, Any]:
    """RoPE ``[batch, seq, head_size/2]`` caches sliced from ``[1, max_seq_len, ...]`` tables
    (``WRAP`` repeats row 0 over the batch), as the Llama network does."""
    cos_table, sin_table = rotary_tables(head_size, base, max_seq_len, w.dtype)
    size = w.shape_with(ids, (head_size // 2,), "rotary_embedding.cache_size")
    return tuple(w.slice(w.constant(f"rotary_embedding.{part}", table), (0, 0, 0), size,
                         f"rotary_embedding.{part}_cache", wrap=True)
                 for part, table in (("cos", cos_table), ("sin", sin_table)))


def qkv_heads(w: LayerWriter, qkv: Any, ids: Any, p: str, heads: int, kv_heads: int, d: int,
              cos: Any, sin: Any) -> tuple[Any, Any, Any]:
    """Split a rank's fused ``[b, s, (h + 2 kv) d]`` projection into ``[b, n, s, d]`` q, k, v,
    with RoPE (rotated halves) applied to q and k."""
    parts = {"q": (0, heads), "k": (heads, kv_heads), "v": (heads + kv_heads, kv_heads)}
    out = {}
    for part, (first, count) in parts.items():
        size = w.shape_with(ids, (count * d,), f"{p}.attention.{part}_size")
        flat = w.slice(qkv, (0, 0, first * d), size, f"{p}.attention.{part}")
        out[part] = w.shuffle(flat, f"{p}.attention.{part}.heads", reshape=(0, 0, count, d),
                              then_transpose=(0, 2, 1, 3))
    for part in ("q", "k"):
        out[part] = w.named(w.net.add_rotary_embedding(out[part], cos, sin, False, 0), f"{p}.attention.{part}.rotary")
    return out["q"], out["k"], out["v"]


def gemma_rms_norm(w: LayerWriter, x: Any, weight_name: str, weights: Mapping[str, np.ndarray], epsilon: float) -> Any:
    """``cast((x32 / sqrt(mean(x32²) + eps)) * w32)``: Gemma's RMSNorm with ``w`` = ``1 + w_hf``."""
    trt, prefix = w.trt, weight_name.removesuffix(".weight")
    fp32 = trt.DataType.FLOAT
    x32 = w.cast(x, fp32, f"{prefix}.to_float")
    mean = w.named(w.net.add_reduce(w.elementwise(x32, x32, "PROD", f"{prefix}.square"), trt.ReduceOperation.AVG,
                                    1 << 2, True), f"{prefix}.mean")
    eps = w.scalar("rms_norm.epsilon", epsilon, "float32")
    root = w.named(w.net.add_unary(w.elementwise(mean, eps, "SUM", f"{prefix}.add_epsilon"), trt.UnaryOperation.SQRT),
                   f"{prefix}.sqrt")
    weight = w.cast(w.shuffle(w.constant(weight_name, weights[weight_name]), f"{prefix}.weight.expand",
                              reshape=(1, 1, -1)), fp32, f"{prefix}.weight.to_float")
    scaled = w.elementwise(w.elementwise(x32, root, "DIV", f"{prefix}.normalize"), weight, "PROD", f"{prefix}.scale")
    return w.cast(scaled, w.trt_dtype, f"{prefix}.to_dtype")


def build_gemma2_network(backend: Backend, checkpoint_config: Mapping[str, Any], rank: int,
                         weights: Mapping[str, np.ndarray], max_batch_size: int, max_seq_len: int, *,
                         dynamic_shapes: bool = False, gather_logits: bool = True, log_severity: str = "info",
                         **_ignored: Any) -> WrittenNetwork:
    """Write rank ``rank``'s Gemma 2 prefill network from its weights."""
    g = Gemma2Geometry.from_config(checkpoint_config)
    require(isinstance(rank, int) and 0 <= rank < g.tp, f"rank {rank!r} is outside 0..{g.tp - 1}")
    check_weights(expected_weights(g), rank, weights, "Gemma 2", g.tp)
    builder, logger, w, ids = start_network(backend, log_severity, g.dtype, max_batch_size, max_seq_len, dynamic_shapes)
    x = _embedding(w, g, rank, weights, ids)
    x = w.elementwise(x, w.scalar("embedding.normalizer", math.sqrt(g.hidden)), "PROD", "transformer.embedding_scale")
    cos, sin = rotary_caches(w, g.head_size, g.rotary_base, ids, max_seq_len)
    for i in range(g.layers):
        x = _layer(w, g, weights, i, x, ids, cos, sin, max_seq_len)
    x = gemma_rms_norm(w, x, "transformer.ln_f.weight", weights, g.norm_epsilon)
    logits = w.linear(x, "lm_head", weights)
    if g.tp > 1 and gather_logits:
        logits = _gather_logits(w, g, logits, ids)
    if g.final_softcap is not None:
        logits = soft_cap(w, logits, g.final_softcap, "lm_head.soft_cap")
    if g.logits_dtype != g.dtype:
        logits = w.cast(logits, getattr(w.trt.DataType, _TRT_DTYPE[g.logits_dtype]), "lm_head.to_logits_dtype")
    return finish_network(backend, builder, logger, w, logits, f"{checkpoint_config['architecture']} rank {rank} of "
                          f"tp={g.tp}", max_batch_size, max_seq_len, dynamic_shapes)


def _layer(w: LayerWriter, g: Gemma2Geometry, weights: Mapping[str, np.ndarray], i: int, x: Any, ids: Any,
           cos: Any, sin: Any, max_seq_len: int) -> Any:
    p, eps = f"transformer.layers.{i}", g.norm_epsilon
    h = gemma_rms_norm(w, x, f"{p}.input_layernorm.weight", weights, eps)
    q, k, v = qkv_heads(w, w.linear(h, f"{p}.attention.qkv", weights), ids, p, g.heads_per_rank,
                        g.kv_heads_per_rank, g.head_size, cos, sin)
    context = decomposed_attention(w, q, k, v, ids, name=f"{p}.attention.core",
                                   scale=g.query_pre_attn_scalar ** -0.5, max_seq_len=max_seq_len,
                                   softcap=g.attn_softcap, window=g.window_of(i, max_seq_len))
    out = w.linear(context, f"{p}.attention.dense", weights)
    if g.tp > 1:
        out = w.collective(out, g.tp, f"{p}.attention.all_reduce")
    out = gemma_rms_norm(w, out, f"{p}.post_layernorm.weight", weights, eps)
    x = w.elementwise(x, out, "SUM", f"{p}.attention.residual")

    h = gemma_rms_norm(w, x, f"{p}.pre_feedforward_layernorm.weight", weights, eps)
    fc = w.linear(h, f"{p}.mlp.fc", weights)  # HF gate_proj: the GELU applies to it
    gelu = w.named(w.net.add_activation(fc, w.trt.ActivationType.GELU_TANH), f"{p}.mlp.gelu")
    out = w.linear(w.elementwise(gelu, w.linear(h, f"{p}.mlp.gate", weights), "PROD", f"{p}.mlp.gated"),
                   f"{p}.mlp.proj", weights)
    if g.tp > 1:
        out = w.collective(out, g.tp, f"{p}.mlp.all_reduce")
    out = gemma_rms_norm(w, out, f"{p}.post_feedforward_layernorm.weight", weights, eps)
    return w.elementwise(x, out, "SUM", f"{p}.mlp.residual")
