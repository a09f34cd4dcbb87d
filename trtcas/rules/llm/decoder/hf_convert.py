"""HF decoder checkpoint -> TensorRT-LLM tensors, for every architecture of the shared decoder.

Names and sharding follow TensorRT-LLM's converters (``models/llama/convert.py``,
``models/qwen/convert.py``, ``models/phi3/convert.py``): q/k/v (separate or Phi-3's fused
``qkv_proj``) become one ``attention.qkv`` of this rank's query heads then its key and value
heads (split when tp divides them, replicated otherwise), with their biases split the same
way (Qwen2); ``o_proj`` is row-split into ``attention.dense``; ``gate_proj``/``up_proj``
(or the halves of Phi-3's ``gate_up_proj``) are column-split into ``mlp.fc``/``mlp.gate``;
``down_proj`` is row-split into ``mlp.proj``; Qwen3's ``q_norm``/``k_norm`` are replicated
as ``attention.q_layernorm``/``k_layernorm``; the embedding is replicated or vocab-split;
the lm_head is vocab-split with zero rows padding the vocabulary to a multiple of tp.

Only :class:`~trtcas.rules.llm.decoder.hf_config.HFLayout` differs between architectures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np

from trtcas.rules.formats.safetensors import CODE_OF_DTYPE, TensorSlot
from trtcas.rules.llm.convert import (
    ConvertStep,
    RankPosition,
    cast_to,
    head_slice,
    kv_heads_of_rank,
    padded_vocab,
    quantize_int8_per_channel,
    rank_position,
)
from trtcas.rules.llm.decoder.geometry import DecoderGeometry
from trtcas.rules.llm.decoder.hf_config import HFLayout, hf_rope, hf_windows
from trtcas.rules.llm.hf import HFCheckpoint, read_tensor
from trtcas.rules.llm.spec import _CODE_OF_TARGET, ConvertError, ConvertSpec


def geometry(layout: HFLayout, hf_config: Mapping, spec: ConvertSpec) -> DecoderGeometry:
    """The model's one geometry, as the converted checkpoint will describe it; the splits
    are checked first, with the messages a converter user needs."""
    check_parallelism(hf_config, spec)
    return DecoderGeometry.from_config(trtllm_config(layout, hf_config, spec, checked=True), pipeline_ok=True)


def check_parallelism(hf_config: Mapping, spec: ConvertSpec) -> None:
    """Refuse splits TensorRT-LLM cannot make, before any tensor is read.

    Heads and the MLP are split in equal whole parts; KV heads are split when tp divides
    them and replicated when they divide tp (``dup_kv_weight``); anything else has no TRT-LLM
    layout.
    """
    g, tp = _HFSizes.of(hf_config), spec.tp
    if g.heads % g.kv_heads:
        raise ConvertError(f"num_attention_heads={g.heads} is not a multiple of num_key_value_heads={g.kv_heads}")
    if g.heads % tp:
        raise ConvertError(f"tp={tp} does not divide num_attention_heads={g.heads}")
    if g.kv_heads % tp and tp % g.kv_heads:
        raise ConvertError(
            f"tp={tp} neither divides num_key_value_heads={g.kv_heads} nor is a multiple of it; "
            "TensorRT-LLM can only split or replicate whole KV heads"
        )
    if g.intermediate % tp:
        raise ConvertError(f"tp={tp} does not divide intermediate_size={g.intermediate}")
    if spec.vocab_parallel and g.vocab % tp:
        raise ConvertError(f"tp={tp} does not divide vocab_size={g.vocab}; convert without vocab_parallel")
    if g.layers % spec.pp:
        raise ConvertError(f"pp={spec.pp} does not divide num_hidden_layers={g.layers}")


def _linear_outputs(prefix: str, out_rows: int, in_cols: int, spec: ConvertSpec) -> tuple[TensorSlot, ...]:
    target = _CODE_OF_TARGET[spec.dtype]
    if spec.quantization == "W8A16":
        return (TensorSlot(f"{prefix}.weight", "I8", (in_cols, out_rows)),
                TensorSlot(f"{prefix}.per_channel_scale", target, (out_rows,)))
    return (TensorSlot(f"{prefix}.weight", target, (out_rows, in_cols)),)


def attention_steps(layout: HFLayout, g: DecoderGeometry, spec: ConvertSpec, hf: str, out: str) -> list[ConvertStep]:
    target = _CODE_OF_TARGET[spec.dtype]
    q_rows, kv_rows = g.heads * g.head_size, g.kv_heads * g.head_size
    if layout.fused_qkv:
        qkv_sources, qkv_shapes = (f"{hf}.self_attn.qkv_proj.weight",), ((q_rows + 2 * kv_rows, g.hidden),)
    else:
        qkv_sources = tuple(f"{hf}.self_attn.{p}_proj.weight" for p in "qkv")
        qkv_shapes = ((q_rows, g.hidden), (kv_rows, g.hidden), (kv_rows, g.hidden))
    steps = [ConvertStep("qkv", qkv_sources, qkv_shapes,
                         _linear_outputs(f"{out}.attention.qkv", g.qkv_rows, g.hidden, spec))]
    if g.qkv_bias:
        steps.append(ConvertStep("qkv", tuple(f"{hf}.self_attn.{p}_proj.bias" for p in "qkv"),
                                 ((q_rows,), (kv_rows,), (kv_rows,)),
                                 (TensorSlot(f"{out}.attention.qkv.bias", target, (g.qkv_rows,)),)))
    if g.qk_norm:
        for part in "qk":
            steps.append(ConvertStep("replicate", (f"{hf}.self_attn.{part}_norm.weight",), ((g.head_size,),),
                                     (TensorSlot(f"{out}.attention.{part}_layernorm.weight", target, (g.head_size,)),)))
    steps.append(ConvertStep("row", (f"{hf}.self_attn.o_proj.weight",), ((g.hidden, q_rows),),
                             _linear_outputs(f"{out}.attention.dense", g.hidden, q_rows // spec.tp, spec)))
    return steps


def _mlp_steps(layout: HFLayout, g: DecoderGeometry, spec: ConvertSpec, hf: str, out: str) -> list[ConvertStep]:
    local = g.intermediate // spec.tp
    if layout.fused_gate_up:  # [gate; up] rows: each half column-split on its own
        fused, shape = (f"{hf}.mlp.gate_up_proj.weight",), ((2 * g.intermediate, g.hidden),)
        gate_up = [ConvertStep(op, fused, shape, _linear_outputs(f"{out}.mlp.{name}", local, g.hidden, spec))
                   for op, name in (("column_half0", "fc"), ("column_half1", "gate"))]
    else:
        gate_up = [ConvertStep("column", (f"{hf}.mlp.{source}.weight",), ((g.intermediate, g.hidden),),
                               _linear_outputs(f"{out}.mlp.{name}", local, g.hidden, spec))
                   for source, name in (("gate_proj", "fc"), ("up_proj", "gate"))]
    return gate_up + [ConvertStep("row", (f"{hf}.mlp.down_proj.weight",), ((g.hidden, g.intermediate),),
                                  _linear_outputs(f"{out}.mlp.proj", g.hidden, local, spec))]


def _layer_steps(layout: HFLayout, g: DecoderGeometry, spec: ConvertSpec, hf_layer: int,
                 local_layer: int) -> list[ConvertStep]:
    hf, out = f"model.layers.{hf_layer}", f"transformer.layers.{local_layer}"
    target, norm = _CODE_OF_TARGET[spec.dtype], (g.hidden,)
    return [
        ConvertStep("replicate", (f"{hf}.input_layernorm.weight",), (norm,),
                    (TensorSlot(f"{out}.input_layernorm.weight", target, norm),)),
        *attention_steps(layout, g, spec, hf, out),
        ConvertStep("replicate", (f"{hf}.post_attention_layernorm.weight",), (norm,),
                    (TensorSlot(f"{out}.post_layernorm.weight", target, norm),)),
        *_mlp_steps(layout, g, spec, hf, out),
    ]


def plan_rank(layout: HFLayout, hf_config: Mapping, spec: ConvertSpec, rank: int) -> tuple[ConvertStep, ...]:
    """The steps that make ``rank{rank}.safetensors``, in file order; reads no tensor.

    With ``tie_word_embeddings`` the lm_head is read from ``embed_tokens`` whether or not the
    file also has an ``lm_head.weight``, as transformers ties them on load.
    """
    g = geometry(layout, hf_config, spec)
    pos = rank_position(g, spec, rank)
    target = _CODE_OF_TARGET[spec.dtype]
    table = (g.vocab, g.hidden)
    steps: list[ConvertStep] = []
    if pos.first_stage:
        rows = g.vocab // spec.tp if spec.vocab_parallel else g.vocab
        steps.append(ConvertStep("embedding", ("model.embed_tokens.weight",), (table,),
                                 (TensorSlot("transformer.vocab_embedding.weight", target, (rows, g.hidden)),)))
    for local, hf_layer in enumerate(pos.layers):
        steps.extend(_layer_steps(layout, g, spec, hf_layer, local))
    if pos.last_stage:
        steps.append(ConvertStep("replicate", ("model.norm.weight",), ((g.hidden,),),
                                 (TensorSlot("transformer.ln_f.weight", target, (g.hidden,)),)))
        head_source = "model.embed_tokens.weight" if g.tied else "lm_head.weight"
        head_rows = padded_vocab(g.vocab, spec.tp) // spec.tp
        steps.append(ConvertStep("lm_head", (head_source,), (table,),
                                 (TensorSlot("lm_head.weight", target, (head_rows, g.hidden)),)))
    return tuple(steps)


def _fused_qkv(ckpt: HFCheckpoint, g: DecoderGeometry, spec: ConvertSpec, tp_rank: int,
               step: ConvertStep) -> np.ndarray:
    """``[q_r; k_r; v_r]``: this rank's query heads, then its (possibly replicated) KV heads,
    from three tensors or from one fused ``[q; k; v]`` (weights or biases alike)."""
    per_rank = g.heads // spec.tp
    q = head_slice(range(tp_rank * per_rank, (tp_rank + 1) * per_rank), g.head_size)
    kv = head_slice(kv_heads_of_rank(g.kv_heads, spec.tp, tp_rank), g.head_size)
    if len(step.sources) == 3:
        return np.concatenate([read_tensor(ckpt, name, shape, rows=rows)
                               for name, shape, rows in zip(step.sources, step.source_shapes, (q, kv, kv))])
    (name,), (shape,) = step.sources, step.source_shapes
    k_at, v_at = g.heads * g.head_size, (g.heads + g.kv_heads) * g.head_size
    return np.concatenate([read_tensor(ckpt, name, shape, rows=slice(start + rows.start, start + rows.stop))
                           for start, rows in ((0, q), (k_at, kv), (v_at, kv))])


def _lm_head(ckpt: HFCheckpoint, spec: ConvertSpec, tp_rank: int, step: ConvertStep) -> np.ndarray:
    """This rank's rows of the vocabulary, zero rows past its end (``pad_vocab_size``)."""
    (name,), ((vocab, hidden),) = step.sources, step.source_shapes
    rows = padded_vocab(vocab, spec.tp) // spec.tp
    start = tp_rank * rows
    values = read_tensor(ckpt, name, (vocab, hidden), rows=slice(start, min(start + rows, vocab)))
    missing = rows - values.shape[0]
    return np.concatenate([values, np.zeros((missing, hidden), values.dtype)]) if missing else values


def step_values(ckpt: HFCheckpoint, g: DecoderGeometry, spec: ConvertSpec, pos: RankPosition,
                 step: ConvertStep) -> np.ndarray:
    """The values of a step's (unquantized) output in the HF dtype, read and split for this rank."""
    tp, r = spec.tp, pos.tp_rank
    (name, *_), (shape, *_) = step.sources, step.source_shapes
    if step.op == "qkv":
        return _fused_qkv(ckpt, g, spec, r, step)
    if step.op == "lm_head":
        return _lm_head(ckpt, spec, r, step)
    if step.op == "replicate" or (step.op == "embedding" and not spec.vocab_parallel):
        return read_tensor(ckpt, name, shape)
    if step.op in ("column", "embedding"):
        size = shape[0] // tp
        return read_tensor(ckpt, name, shape, rows=slice(r * size, (r + 1) * size))
    if step.op.startswith("column_half"):  # one half of a fused [gate; up], then its column split
        size, first = shape[0] // 2 // tp, int(step.op[-1]) * (shape[0] // 2)
        return read_tensor(ckpt, name, shape, rows=slice(first + r * size, first + (r + 1) * size))
    if step.op == "row":
        size = shape[1] // tp
        return read_tensor(ckpt, name, shape, cols=slice(r * size, (r + 1) * size))
    raise AssertionError(f"unknown step op {step.op!r}")


def run_step(layout: HFLayout, ckpt: HFCheckpoint, hf_config: Mapping, spec: ConvertSpec, rank: int,
             step: ConvertStep) -> Iterator[tuple[str, np.ndarray]]:
    """Run one planned step: its (name, array) outputs, checked against the plan."""
    g = geometry(layout, hf_config, spec)
    pos = rank_position(g, spec, rank)
    values = step_values(ckpt, g, spec, pos, step)
    if step.outputs[0].dtype == "I8":
        arrays = quantize_int8_per_channel(values, spec.dtype)
    else:
        arrays = (cast_to(values, spec.dtype),)
    for planned, array in zip(step.outputs, arrays, strict=True):
        produced = TensorSlot(planned.name, CODE_OF_DTYPE[array.dtype], tuple(array.shape))
        if produced != planned:
            raise AssertionError(f"conversion produced {produced}, planned {planned}")
        yield planned.name, array


def trtllm_config(layout: HFLayout, hf_config: Mapping, spec: ConvertSpec, checked: bool = False) -> dict:
    """The checkpoint's ``config.json``: TRT-LLM's ``PretrainedConfig`` plus the decoder's fields.

    Field names and values follow TensorRT-LLM's ``from_hugging_face`` (``rope_gpt_neox``,
    ``rotary_base`` from the rope theta, ``rotary_scaling`` from the rope scaling,
    ``head_size``, ``attn_bias``, ``qk_layernorm``, ``rotary_dim``); ``sliding_window`` and
    ``layer_types`` say which layers attend within a window; ``mapping`` carries only
    world/tp/pp sizes, which every TRT-LLM version's ``Mapping`` accepts.
    """
    if not checked:
        check_parallelism(hf_config, spec)
    g = _HFSizes.of(hf_config)
    theta, scaling, partial = hf_rope(hf_config)
    window, types = hf_windows(layout, hf_config)
    rotary_dim = int(g.head_size * partial)
    config = {
        "architecture": layout.architecture,
        "dtype": spec.dtype,
        "logits_dtype": "float32",
        "vocab_size": g.vocab,
        "max_position_embeddings": hf_config.get("max_position_embeddings"),
        "hidden_size": g.hidden,
        "num_hidden_layers": g.layers,
        "num_attention_heads": g.heads,
        "num_key_value_heads": g.kv_heads,
        "head_size": g.head_size,
        "hidden_act": "silu",
        "intermediate_size": g.intermediate,
        "norm_epsilon": hf_config["rms_norm_eps"],
        "position_embedding_type": "rope_gpt_neox",
        "rotary_base": theta,
        "rotary_scaling": scaling,
        "use_parallel_embedding": spec.vocab_parallel,
        "embedding_sharding_dim": 0,
        "tie_word_embeddings": g.tied,
        "mlp_bias": False,
        "attn_bias": layout.qkv_bias,
        "disable_weight_only_quant_plugin": spec.quantization == "W8A16",
        "mapping": {"world_size": spec.world_size, "tp_size": spec.tp, "pp_size": spec.pp},
        "quantization": {"quant_algo": spec.quantization, "kv_cache_quant_algo": None},
    }
    if layout.qk_norm:
        config["qk_layernorm"] = True
    if rotary_dim != g.head_size:
        config["rotary_dim"] = rotary_dim
    if window is not None:
        config["sliding_window"] = window
        if types is not None:
            config["layer_types"] = list(types)
    return config


@dataclass(frozen=True)
class _HFSizes:
    """The sizes a HF config states, under trtcas's names (before any conversion choice)."""

    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_size: int
    layers: int
    vocab: int
    tied: bool

    @classmethod
    def of(cls, config: Mapping) -> "_HFSizes":
        heads = config["num_attention_heads"]
        return cls(hidden=config["hidden_size"], intermediate=config["intermediate_size"], heads=heads,
                   kv_heads=config.get("num_key_value_heads") or heads,
                   head_size=config.get("head_dim") or config["hidden_size"] // heads,
                   layers=config["num_hidden_layers"], vocab=config["vocab_size"],
                   tied=bool(config.get("tie_word_embeddings", False)))
