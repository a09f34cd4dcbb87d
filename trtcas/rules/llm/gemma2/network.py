"""A Gemma 2 TensorRT-LLM checkpoint rank -> a TensorRT network of TensorRT's own layers.

The prefill network of HF's ``Gemma2ForCausalLM`` (``input_ids [batch, seq] int32 ->
logits [batch, seq, vocab]``), rank-independent in structure like the shared decoder's
(``decoder/network.py``), whose embedding, RoPE caches, gated MLP and lm_head blocks it
composes. What Gemma 2 adds, and how:

- embeddings are multiplied by ``sqrt(hidden)`` rounded to the model dtype (HF's
  ``Gemma2TextScaledWordEmbedding``);
- RMSNorm multiplies by its stored weight (``1 + w``, added at conversion) *in float32* and
  then casts, unlike Llama's cast-then-multiply (HF: "Llama does x.to(float16) * w whilst
  Gemma2 is (x * w).to(float16)");
- four norms per layer: input, post-attention (after the all-reduce, before the residual
  add), pre- and post-feed-forward (the latter after the MLP's all-reduce);
- GeGLU: ``GELU_TANH(fc(x)) * gate(x)``, TensorRT's tanh-approximated GELU;
- attention scores are scaled by ``query_pre_attn_scalar ** -0.5`` and soft-capped
  (``cap * tanh(s / cap)``) before the mask and softmax. ``IAttention`` has no place for a
  function between ``Q Kᵀ`` and its softmax, so attention is written from matmul,
  elementwise and softmax layers (``trt.layers.decomposed_attention``), which TensorRT's
  attention fusion may still recognize;
- ``sliding_attention`` layers mask keys ``sliding_window`` or more positions back; where the
  window covers ``max_seq_len`` the layer is plain causal;
- final logits are soft-capped after the lm_head, in ``logits_dtype`` (float32): HF caps in
  the model dtype, which only differs by rounding.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from trtcas.errors import TrtcasError
from trtcas.rules.llm.decoder.geometry import check_weights
from trtcas.rules.llm.decoder.network import (
    INPUT_NAME,
    OUTPUT_NAME,
    DecoderNetwork,
    embedding,
    gated_mlp,
    lm_head,
    rope_caches,
    rotate,
    split_heads,
)
from trtcas.rules.llm.gemma2.config import Gemma2Geometry, expected_weights
from trtcas.rules.messages import require
from trtcas.rules.trt.backend import Backend
from trtcas.rules.trt.layers import LayerWriter, decomposed_attention, soft_cap
from trtcas.rules.trt.network import Profile


def start_network(backend: Backend, g: Any, rank: int, log_severity: str, max_batch_size: int, max_seq_len: int,
                  dynamic_shapes: bool, decomposable_attention: bool = True,
                  stack_parallel_linears: bool = False) -> tuple[Any, Any, LayerWriter, Any]:
    """(builder, logger, writer, input_ids) of a fresh network; checks the shape and rank arguments."""
    for name, value in (("max_batch_size", max_batch_size), ("max_seq_len", max_seq_len)):
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"{name} must be a positive integer, got {value!r}")
    require(isinstance(rank, int) and 0 <= rank < g.tp, f"rank {rank!r} is outside 0..{g.tp - 1}")
    logger = backend.logger(log_severity)
    builder = backend.trt.Builder(logger)
    if builder is None:
        raise TrtcasError(f"{backend.flavour} {backend.version} could not create a builder")
    network = builder.create_network(0)
    writer = LayerWriter(backend.trt, network, g.dtype, decomposable_attention, stack_parallel_linears)
    batch, seq = (-1, -1) if dynamic_shapes else (max_batch_size, max_seq_len)
    return builder, logger, writer, network.add_input(INPUT_NAME, backend.trt.int32, (batch, seq))


def finish_network(backend: Backend, builder: Any, logger: Any, w: LayerWriter, logits: Any, g: Any, rank: int,
                   max_batch_size: int, max_seq_len: int, dynamic_shapes: bool, gather_logits: bool,
                   weight_names: tuple[str, ...]) -> DecoderNetwork:
    """Mark ``logits`` as the output; the network with its profile, geometry and constants."""
    logits.name = OUTPUT_NAME
    w.net.mark_output(logits)
    profiles = (Profile({INPUT_NAME: ((1, 1), (max_batch_size, max_seq_len), (max_batch_size, max_seq_len))}),) \
        if dynamic_shapes else ()
    return DecoderNetwork(backend=backend, source=f"{g.architecture} rank {rank} of tp={g.tp}", parser=None,
                          network=w.net, builder=builder, logger=logger, geometry=g, rank=rank,
                          max_batch_size=max_batch_size, max_seq_len=max_seq_len, gather_logits=gather_logits,
                          profiles=profiles, constants=dict(w.constants), weight_names=weight_names)


def attention_heads(w: LayerWriter, g: Any, qkv: Any, ids: Any, p: str, rope: tuple[Any, Any]) -> tuple[Any, Any, Any]:
    """A rank's fused ``[b, s, (h + 2 kv) d]`` projection as ``[b, n, s, d]`` q, k, v, with RoPE
    (rotated halves) on q and k."""
    out = split_heads(w, g, qkv, ids, p)
    for part in ("q", "k"):
        out[part] = rotate(w, g, out[part], rope, f"{p}.{part}.rotary")
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
                         dynamic_shapes: bool = False, gather_logits: bool = True, decomposable_attention: bool = True,
                         log_severity: str = "info", stack_parallel_linears: bool = False) -> DecoderNetwork:
    """Write rank ``rank``'s Gemma 2 prefill network from its weights."""
    g = Gemma2Geometry.from_config(checkpoint_config)
    builder, logger, w, ids = start_network(backend, g, rank, log_severity, max_batch_size, max_seq_len,
                                            dynamic_shapes, decomposable_attention, stack_parallel_linears)
    expected = expected_weights(g)
    check_weights(expected, g.tp, rank, weights)
    x = embedding(w, g, rank, weights, ids)
    x = w.elementwise(x, w.scalar("embedding.normalizer", math.sqrt(g.hidden)), "PROD", "transformer.embedding_scale")
    rope = rope_caches(w, g, ids, max_seq_len)
    for i in range(g.layers):
        x = _layer(w, g, weights, i, x, ids, rope, max_seq_len)
    x = gemma_rms_norm(w, x, "transformer.ln_f.weight", weights, g.norm_epsilon)
    logits = lm_head(w, g, weights, x, ids, gather_logits)
    if g.final_softcap is not None:
        logits = soft_cap(w, logits, g.final_softcap, "lm_head.soft_cap", g.logits_dtype)
    return finish_network(backend, builder, logger, w, logits, g, rank, max_batch_size, max_seq_len, dynamic_shapes,
                          gather_logits, tuple(expected))


def _layer(w: LayerWriter, g: Gemma2Geometry, weights: Mapping[str, np.ndarray], i: int, x: Any, ids: Any,
           rope: tuple[Any, Any], max_seq_len: int) -> Any:
    p, eps = f"transformer.layers.{i}", g.norm_epsilon
    h = gemma_rms_norm(w, x, f"{p}.input_layernorm.weight", weights, eps)
    q, k, v = attention_heads(w, g, w.linear(h, f"{p}.attention.qkv", weights), ids, f"{p}.attention", rope)
    context = decomposed_attention(w, q, k, v, ids, name=f"{p}.attention.core",
                                   scale=g.query_pre_attn_scalar ** -0.5, max_seq_len=max_seq_len,
                                   softcap=g.attn_softcap, window=g.window(i, max_seq_len))
    out = w.linear(context, f"{p}.attention.dense", weights)
    if g.tp > 1:
        out = w.collective(out, g.tp, f"{p}.attention.all_reduce")
    out = gemma_rms_norm(w, out, f"{p}.post_layernorm.weight", weights, eps)
    x = w.elementwise(x, out, "SUM", f"{p}.attention.residual")
    h = gemma_rms_norm(w, x, f"{p}.pre_feedforward_layernorm.weight", weights, eps)
    out = gemma_rms_norm(w, gated_mlp(w, g, weights, f"{p}.mlp", h, activation="gelu_tanh"),
                         f"{p}.post_feedforward_layernorm.weight", weights, eps)
    return w.elementwise(x, out, "SUM", f"{p}.mlp.residual")
