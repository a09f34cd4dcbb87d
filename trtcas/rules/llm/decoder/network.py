"""A TensorRT-LLM checkpoint rank -> a TensorRT network made of TensorRT's own layers.

The cache shares one engine build among tensor-parallel ranks whose networks are
structurally identical, and refits it with each rank's weights. That only works if the
rank lives in the weights alone, so the network built here is the same for every rank of
a checkpoint: the same layers, attributes and shapes, with the rank's shard of every
tensor entering as a constant named by its TensorRT-LLM weight name (so
``Refitter.set_named_weights`` finds it on a GPU). The one per-rank value that is not a
checkpoint tensor, the first vocabulary row of a vocab-parallel embedding, is a named
constant too (:data:`VOCAB_START`), not an attribute. Whether two ranks really are
identical is decided by their structural digests (``rules.canonical``), not assumed here.

TensorRT-LLM's own network builder (``LLaMAForCausalLM`` + ``trtllm-build``) cannot be
installed on these machines and its TensorRT backend left its main branch in 2026, so only
the native path exists: ``IAttention``, ``IRotaryEmbeddingLayer``, ``IDistCollectiveLayer``
and plain layers, which full TensorRT and TensorRT-RTX share.

The network is the context (prefill) phase of a decoder of the Llama family (Llama, Mistral,
Qwen2, Qwen3, Phi-3: what differs is a field of :class:`DecoderGeometry`), without a KV cache:
``input_ids [batch, seq] int32 -> logits [batch, seq, vocab]``. Choices and why:

- RMSNorm is built from reduce/elementwise/unary layers in float32, not from
  ``add_normalization``: ``INormalizationLayer`` computes ``(x - mean) / sqrt(var + eps)``
  (LayerNorm) and has no RMS mode, and Llama's RMSNorm subtracts no mean. As in HF, the
  normalized value is cast back to the model dtype before the weight multiplies it.
- ``IAttention`` does not scale ``Q Kᵀ``: TensorRT requires Q to be multiplied by the
  attention scale first, so Q is multiplied by ``1/sqrt(head_size)`` after RoPE.
- Attention is marked decomposable by default: TensorRT has fused kernels only for some
  head sizes and dtypes (the tiny test model's head size 8 has none, and the build fails
  with "Attention operation was not supported by a dedicated kernel"); decomposable lets it
  fall back to two matmuls and a softmax there and changes nothing where a fused kernel
  exists. ``decomposable_attention=False`` makes such a build fail instead of run slowly.
- The causal mask is ``UPPER_LEFT`` (``j <= i``); in prefill ``seq_q == seq_kv``, where it
  equals ``LOWER_RIGHT``. A layer with a sliding window shorter than ``max_seq_len`` gets a
  boolean mask instead (causal and windowed, sliced from a constant table to the run's
  length); a window of at least ``max_seq_len`` cuts nothing and is written as full attention,
  so such a network is structurally the full-attention one.
- q/k/v biases are added after the fused qkv matmul; Qwen3's per-head q/k RMSNorm is applied
  over ``head_size`` after the heads are transposed out (the same values: it normalizes the
  last axis only); a partial rotary rotates the first ``rotary_dim`` dims of each head.
- RoPE caches are ``[batch, seq, head_size/2]`` (no position ids), sliced at build/run time
  from a ``[1, max_seq_len, head_size/2]`` table (``WRAP`` repeats row 0 over the batch),
  because the layer requires the caches' batch to equal the input's.
- With ``tp > 1`` the row-parallel outputs (attention dense, mlp proj, a vocab-parallel
  embedding) are summed by an ``ALL_REDUCE`` collective over the group ``[0 .. tp-1]`` (the
  same list on every rank). The lm_head is column-parallel; by default its logits are
  all-gathered (as TensorRT-LLM's ``lm_head`` with ``gather_output=True``), so every rank
  outputs ``[batch, seq, vocab]``; ``gather_logits=False`` leaves each rank its shard
  ``[batch, seq, padded_vocab / tp]``.
- Pipeline parallelism (``pp_size > 1``) is refused: a middle stage has no embedding and no
  lm_head and exchanges hidden states, which this builder does not model.

Building an engine from it goes through ``trt.diagnose.build_with_diagnosis``, which names
the layer that failed.

TensorRT is never imported here: the backend's module is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from trtcas.errors import TrtcasError
from trtcas.rules.llm.decoder.geometry import DecoderGeometry, check_weights, expected_weights
from trtcas.rules.llm.decoder.rope import rotary_tables
from trtcas.rules.messages import require
from trtcas.rules.trt.backend import Backend
from trtcas.rules.trt.layers import _TRT_DTYPE, LayerWriter
from trtcas.rules.trt.network import ParsedNetwork, Profile

INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"
# The first vocabulary row a vocab-parallel rank holds: a per-rank int32 constant [1, 1].
VOCAB_START = "transformer.vocab_embedding.vocab_start"
# --------------------------------------------------------------------------- the network holder


@dataclass(frozen=True, eq=False, kw_only=True)
class DecoderNetwork(ParsedNetwork):
    """A rank's decoder network, usable wherever a :class:`ParsedNetwork` is (``parser`` is
    None: the network was written, not parsed).

    ``constants`` are all named constants by name: the checkpoint tensors
    (``weight_names``) and the values derived from the config and rank (RoPE tables, scales,
    :data:`VOCAB_START`, int64 shape pieces). TensorRT does not copy constant weights, so
    holding them here keeps their memory alive as long as the network; those the engine
    reports refittable are what a refit of this rank must supply.
    ``profiles`` are the optimization profiles a build needs (empty for static shapes).
    """

    geometry: DecoderGeometry
    rank: int
    max_batch_size: int
    max_seq_len: int
    gather_logits: bool
    profiles: tuple[Profile, ...]
    constants: Mapping[str, np.ndarray] = field(repr=False)
    weight_names: tuple[str, ...] = field(repr=False)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(batch, seq, vocab)``, or ``(batch, seq, padded_vocab / tp)`` for sharded logits;
        ``-1`` for dims the profile decides."""
        return tuple(int(d) for d in self.network.get_output(0).shape)


def build_decoder_network(backend: Backend, checkpoint_config: Mapping[str, Any], rank: int,
                          weights: Mapping[str, np.ndarray], max_batch_size: int, max_seq_len: int, *,
                          dynamic_shapes: bool = False, gather_logits: bool = True,
                          decomposable_attention: bool = True, log_severity: str = "info",
                          supported: tuple[str, ...] | None = None, stack_parallel_linears: bool = False,
                          ) -> DecoderNetwork:
    """Write rank ``rank``'s prefill network from its weights (as :func:`read_rank_weights` gives).

    Static shapes (default) fix ``input_ids`` to ``[max_batch_size, max_seq_len]``;
    ``dynamic_shapes`` makes both dims ``-1`` and returns the profile ``[1, 1] ..
    [max_batch_size, max_seq_len]`` (opt = max) in ``profiles``.
    """
    geometry = DecoderGeometry.from_config(checkpoint_config, supported=supported)
    for name, value in (("max_batch_size", max_batch_size), ("max_seq_len", max_seq_len)):
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
               f"{name} must be a positive integer, got {value!r}")
    require(isinstance(rank, int) and 0 <= rank < geometry.tp, f"rank {rank!r} is outside 0..{geometry.tp - 1}")
    check_weights(expected_weights(geometry), geometry.tp, rank, weights)

    trt = backend.trt
    logger = backend.logger(log_severity)
    builder = trt.Builder(logger)
    if builder is None:
        raise TrtcasError(f"{backend.flavour} {backend.version} could not create a builder")
    network = builder.create_network(0)
    writer = LayerWriter(trt, network, geometry.dtype, decomposable_attention, stack_parallel_linears)
    batch, seq = (-1, -1) if dynamic_shapes else (max_batch_size, max_seq_len)
    ids = network.add_input(INPUT_NAME, trt.int32, (batch, seq))
    logits = decoder(writer, geometry, rank, weights, ids, max_seq_len, gather_logits)
    logits.name = OUTPUT_NAME
    network.mark_output(logits)

    profiles = (Profile({INPUT_NAME: ((1, 1), (max_batch_size, max_seq_len), (max_batch_size, max_seq_len))}),) \
        if dynamic_shapes else ()
    return DecoderNetwork(
        backend=backend, source=f"{checkpoint_config['architecture']} rank {rank} of tp={geometry.tp}",
        parser=None, network=network, builder=builder, logger=logger, geometry=geometry, rank=rank,
        max_batch_size=max_batch_size, max_seq_len=max_seq_len, gather_logits=gather_logits,
        profiles=profiles, constants=dict(writer.constants), weight_names=tuple(expected_weights(geometry)))


# (writer, geometry, weights, prefix, normed hidden, input ids) -> the block's output
MlpBlock = Callable[[LayerWriter, Any, Mapping[str, np.ndarray], str, Any, Any], Any]


def decoder(w: LayerWriter, g: DecoderGeometry, rank: int, weights: Mapping[str, np.ndarray], ids: Any,
            max_seq_len: int, gather_logits: bool, mlp: MlpBlock | None = None) -> Any:
    """``input_ids -> logits``: embedding, the layers, the final norm and the lm_head.

    ``mlp`` writes a layer's feed-forward block (``(w, g, weights, prefix, h, ids) -> out``,
    all-reduced across ranks): the gated MLP unless an architecture has its own (an MoE)."""
    x = embedding(w, g, rank, weights, ids)
    rope = rope_caches(w, g, ids, max_seq_len)
    for i in range(g.layers):
        p = f"transformer.layers.{i}"
        h = w.rms_norm(x, f"{p}.input_layernorm.weight", weights, g.norm_epsilon)
        mask = window_mask(w, ids, g.window(i, max_seq_len), max_seq_len)
        x = w.elementwise(x, attention_block(w, g, weights, f"{p}.attention", h, ids, rope, mask), "SUM",
                          f"{p}.attention.residual")
        h = w.rms_norm(x, f"{p}.post_layernorm.weight", weights, g.norm_epsilon)
        out = mlp(w, g, weights, f"{p}.mlp", h, ids) if mlp is not None else gated_mlp(w, g, weights, f"{p}.mlp", h)
        x = w.elementwise(x, out, "SUM", f"{p}.mlp.residual")
    x = w.rms_norm(x, "transformer.ln_f.weight", weights, g.norm_epsilon)
    return lm_head(w, g, weights, x, ids, gather_logits)


def lm_head(w: LayerWriter, g: Any, weights: Mapping[str, np.ndarray], x: Any, ids: Any, gather_logits: bool) -> Any:
    """Column-parallel lm_head; the shards all-gathered unless ``gather_logits`` is off; cast
    to ``logits_dtype``."""
    logits = w.linear(x, "lm_head", weights)
    if g.tp > 1 and gather_logits:
        logits = gather_vocab(w, g, logits, ids)
    if g.logits_dtype != g.dtype:
        logits = w.cast(logits, getattr(w.trt.DataType, _TRT_DTYPE[g.logits_dtype]), "lm_head.to_logits_dtype")
    return logits


def embedding(w: LayerWriter, g: Any, rank: int, weights: Mapping[str, np.ndarray], ids: Any) -> Any:
    """Gather rows of the table; a vocab-parallel rank looks up only its own rows (others
    give zeros) and the ranks' rows are summed, TRT-LLM's parallel embedding. The rank's
    first row is the constant :data:`VOCAB_START`, so the layers are the same on every rank."""
    name = "transformer.vocab_embedding"
    table = w.constant(f"{name}.weight", weights[f"{name}.weight"])
    if not g.vocab_parallel:
        return w.named(w.net.add_gather(table, ids, 0), f"{name}.gather")
    rows = g.embedding_rows
    start = w.constant(VOCAB_START, np.array([[rank * rows]], np.int32))
    local = w.elementwise(ids, start, "SUB", f"{name}.local_ids")
    floor = w.constant(f"{name}.first_row", np.zeros((1, 1), np.int32))
    ceiling = w.constant(f"{name}.last_row", np.full((1, 1), rows - 1, np.int32))
    clamped = w.elementwise(w.elementwise(local, floor, "MAX", f"{name}.clamp_low"), ceiling, "MIN",
                            f"{name}.clamp_high")
    inside = w.cast(w.elementwise(local, clamped, "EQUAL", f"{name}.owned"), w.trt_dtype, f"{name}.owned_mask")
    rows_out = w.named(w.net.add_gather(table, clamped, 0), f"{name}.gather")
    mask = w.shuffle(inside, f"{name}.owned_mask.expand", reshape=(0, 0, 1))
    return w.collective(w.elementwise(rows_out, mask, "PROD", f"{name}.mask"), g.tp, f"{name}.all_reduce")


def rope_caches(w: LayerWriter, g: Any, ids: Any, max_seq_len: int) -> tuple[Any, Any]:
    """The (cos, sin) caches ``[batch, seq, rotated/2]`` sliced from constant tables."""
    cos_table, sin_table = rotary_tables(g, max_seq_len)
    cache_size = w.shape_with(ids, (g.rotated // 2,), "rotary_embedding.cache_size")
    return tuple(w.slice(w.constant(f"rotary_embedding.{part}", table), (0, 0, 0), cache_size,
                         f"rotary_embedding.{part}_cache", wrap=True)
                 for part, table in (("cos", cos_table), ("sin", sin_table)))


def window_mask(w: LayerWriter, ids: Any, window: int | None, max_seq_len: int) -> Any | None:
    """A causal sliding-window mask ``[1, 1, seq, seq]`` (key j visible from query i when
    ``i - window < j <= i``, transformers' ``sliding_window_overlay``), or None for full
    causal attention. One constant table per window, sliced to the run's sequence length."""
    if window is None:
        return None
    rows, cols = np.arange(max_seq_len)[:, None], np.arange(max_seq_len)[None, :]
    table = ((cols <= rows) & (cols > rows - window))[None, None]
    name = f"attention.window_{window}"
    seq = w.named(w.net.add_gather(w.named(w.net.add_shape(ids), f"{name}.ids_shape"),
                                   w.constant("shape.seq_index", np.array([1, 1], np.int32)), 0), f"{name}.seq_seq")
    size = w.named(w.net.add_concatenation([w.constant("shape.ones.2", np.ones(2, np.int64)), seq]), f"{name}.size")
    return w.slice(w.constant(f"{name}.mask", table), (0, 0, 0, 0), size, f"{name}.slice")


def split_heads(w: LayerWriter, g: Any, qkv: Any, ids: Any, p: str) -> dict[str, Any]:
    """A rank's fused ``[b, s, (h + 2 kv) d]`` projection as ``[b, n, s, d]`` q, k and v."""
    d = g.head_size
    parts = {"q": (0, g.heads_per_rank), "k": (g.heads_per_rank, g.kv_heads_per_rank),
             "v": (g.heads_per_rank + g.kv_heads_per_rank, g.kv_heads_per_rank)}
    split = {}
    for part, (first, count) in parts.items():
        size = w.shape_with(ids, (count * d,), f"{p}.{part}_size")
        flat = w.slice(qkv, (0, 0, first * d), size, f"{p}.{part}")
        split[part] = w.shuffle(flat, f"{p}.{part}.heads", reshape=(0, 0, count, d), then_transpose=(0, 2, 1, 3))
    return split


def rotate(w: LayerWriter, g: Any, x: Any, rope: tuple[Any, Any], name: str) -> Any:
    """RoPE on ``[b, n, s, d]`` heads: rotated halves, partial when ``g.rotated < head_size``."""
    layer = w.net.add_rotary_embedding(x, rope[0], rope[1], False, 0 if g.rotated == g.head_size else g.rotated)
    return w.named(layer, name)


def attention_block(w: LayerWriter, g: Any, weights: Mapping[str, np.ndarray], p: str, h: Any, ids: Any,
                    rope: tuple[Any, Any], mask: Any | None = None, scale: float | None = None) -> Any:
    """Self-attention of the normed hidden state ``h``: fused qkv (biases optional) split by
    heads, optional per-head q/k RMSNorm, RoPE (partial when ``g.rotated < head_size``),
    ``IAttention`` (causal, or under ``mask``), dense and its all-reduce. ``p`` is the
    weights' prefix (``transformer.layers.N.attention``); ``scale`` defaults to
    ``1/sqrt(head_size)``. Returns the block's output, before the residual."""
    trt, d = w.trt, g.head_size
    split = split_heads(w, g, w.linear(h, f"{p}.qkv", weights), ids, p)
    rotated = {}
    for part in ("q", "k"):
        x = split[part]
        if g.qk_norm:  # over head_size: the same whether heads are before or after the transpose
            x = w.rms_norm(x, f"{p}.{part}_layernorm.weight", weights, g.norm_epsilon)
        rotated[part] = rotate(w, g, x, rope, f"{p}.{part}.rotary")
    factor = 1.0 / math.sqrt(d) if scale is None else scale
    scale_name = "attention.query_scale" if scale is None else f"attention.query_scale.{factor!r}"
    q = w.elementwise(rotated["q"], w.scalar(scale_name, factor, rank=4), "PROD",
                      f"{p}.q.scale")
    causal = trt.CausalMaskKind.UPPER_LEFT if mask is None else trt.CausalMaskKind.NONE
    attention = w.net.add_attention_v2(q, rotated["k"], split["v"], trt.AttentionNormalizationOp.SOFTMAX, causal)
    attention.name = f"{p}.core"
    attention.decomposable = w.decomposable_attention
    if mask is not None:
        attention.mask = mask
    context = w.shuffle(attention.get_output(0), f"{p}.context", transpose=(0, 2, 1, 3),
                        reshape=(0, 0, g.heads_per_rank * d))
    out = w.linear(context, f"{p}.dense", weights)
    return w.collective(out, g.tp, f"{p}.all_reduce") if g.tp > 1 else out


def gated_mlp(w: LayerWriter, g: Any, weights: Mapping[str, np.ndarray], p: str, h: Any,
              activation: str = "silu") -> Any:
    """``proj(act(fc(h)) * gate(h))`` and its all-reduce: TRT-LLM's ``fc`` is HF's gate_proj
    (the activation applies to it), ``gate`` is HF's up_proj. ``activation``: ``silu`` or
    ``gelu_tanh`` (GeGLU)."""
    trt = w.trt
    fc, up = w.parallel_linears(h, f"{p}.fc_gate", (f"{p}.fc", f"{p}.gate"), weights)
    if activation == "silu":
        sigmoid = w.named(w.net.add_activation(fc, trt.ActivationType.SIGMOID), f"{p}.sigmoid")
        act = w.elementwise(fc, sigmoid, "PROD", f"{p}.silu")
    elif activation == "gelu_tanh":
        act = w.named(w.net.add_activation(fc, trt.ActivationType.GELU_TANH), f"{p}.gelu_tanh")
    else:
        raise TrtcasError(f"MLP activation {activation!r} is not supported; use silu or gelu_tanh")
    out = w.linear(w.elementwise(act, up, "PROD", f"{p}.gated"), f"{p}.proj", weights)
    return w.collective(out, g.tp, f"{p}.all_reduce") if g.tp > 1 else out


def gated_mlp_pairs(names: Iterable[str]) -> list[tuple[str, str]]:
    """The ``(fc, gate)`` weight names of every gated MLP among ``names``: the tensors
    :func:`gated_mlp` stacks when the writer stacks parallel linears (so a loader can lay
    them back to back: ``rules.trt.mapped_weights``)."""
    present = set(names)
    return [(name, name.removesuffix(".fc.weight") + ".gate.weight") for name in sorted(present)
            if name.endswith(".mlp.fc.weight") and name.removesuffix(".fc.weight") + ".gate.weight" in present]


def gather_vocab(w: LayerWriter, g: Any, logits: Any, ids: Any) -> Any:
    """All-gather the vocabulary shards. The collective concatenates along dim 0, so the
    vocabulary axis is moved first and back; the padding rows of a vocabulary tp does not
    divide are cut off."""
    moved = w.shuffle(logits, "lm_head.vocab_first", transpose=(2, 0, 1))
    gathered = w.collective(moved, g.tp, "lm_head.all_gather", gather=True)
    full = w.shuffle(gathered, "lm_head.vocab_last", transpose=(1, 2, 0))
    if g.padded_vocab == g.vocab:
        return full
    return w.slice(full, (0, 0, 0), w.shape_with(ids, (g.vocab,), "lm_head.vocab_size"), "lm_head.unpad")
