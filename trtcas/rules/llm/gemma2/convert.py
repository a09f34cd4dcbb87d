"""``Gemma2ForCausalLM``: HF checkpoint -> TensorRT-LLM checkpoint names and sharding.

As TensorRT-LLM's Gemma converter (``models/gemma/convert.py``, ``HfParser``):

- every RMSNorm weight is stored as ``1 + w`` (computed in float32, then cast), because
  TensorRT-LLM's ``RmsNorm`` multiplies by its weight and Gemma's multiplies by ``1 + w``;
- ``post_attention_layernorm`` -> ``post_layernorm``; ``pre_feedforward_layernorm`` and
  ``post_feedforward_layernorm`` keep their names; ``gate_proj`` -> ``mlp.fc`` (the GELU
  input), ``up_proj`` -> ``mlp.gate``, ``down_proj`` -> ``mlp.proj``;
- q/k/v fused per rank (KV heads split, or replicated when tp exceeds them), the MLP split
  by columns/rows, the lm_head split by vocabulary rows (read from ``embed_tokens`` when the
  embeddings are tied, as Gemma's are by default).

The HF config is read in both forms (hub checkpoints' ``rope_theta``/``rope_scaling``,
transformers 5's ``rope_parameters``) by the shared decoder's ``hf_rope``. Fields that change
the math and are not implemented (an unsupported RoPE type, bidirectional attention, biases,
another activation) are refused. Without ``layer_types`` (hub configs) the layers alternate
as Gemma 2's do: even layers slide, odd layers attend globally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from trtcas.errors import TrtcasError
from trtcas.rules.formats.safetensors import CODE_OF_DTYPE, TensorSlot
from trtcas.rules.llm.convert import ConvertStep, cast_to, padded_vocab, rank_position
from trtcas.rules.llm.decoder.geometry import LAYER_TYPES
from trtcas.rules.llm.decoder.hf_config import HFLayout, hf_rope
from trtcas.rules.llm.decoder.hf_convert import attention_steps, check_parallelism, step_values
from trtcas.rules.llm.gemma2.config import ARCHITECTURE_NAME, GELU_TANH, GEMMA2_WINDOW, Gemma2Geometry, with_windows
from trtcas.rules.llm.hf import HFCheckpoint, read_tensor
from trtcas.rules.llm.spec import _CODE_OF_TARGET, ConvertError, ConvertSpec

LAYOUT = HFLayout(ARCHITECTURE_NAME)  # q/k/v and o_proj as Llama's
_REQUIRED_HF_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size")


def check_hf_config(config: Mapping, path: Path) -> None:
    """Refuse, in one line, a Gemma 2 config whose math the network does not implement."""
    arch = ARCHITECTURE_NAME
    for key in _REQUIRED_HF_KEYS:
        if key not in config:
            raise ConvertError(f"{path}: HF config lacks {key!r}, which a {arch} config needs")
    for key in (*_REQUIRED_HF_KEYS, "num_key_value_heads", "head_dim", "max_position_embeddings"):
        value = config.get(key)
        if value is None and key not in _REQUIRED_HF_KEYS:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConvertError(f"{path}: HF config {key!r} must be a positive integer, got {value!r}")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ConvertError(f"{path}: {key} is true; biases are not converted for {arch}")
    try:
        partial = hf_rope(config)[2]
    except TrtcasError as exc:
        raise ConvertError(f"{path}: {exc}") from None
    if partial != 1:  # HF's Gemma 2 rotates whole heads whatever the factor says: refuse rather than guess
        raise ConvertError(f"{path}: partial_rotary_factor={partial} is not supported for {arch}")
    act = config.get("hidden_activation") or config.get("hidden_act") or GELU_TANH
    if act != GELU_TANH:
        raise ConvertError(f"{path}: hidden_activation {act!r} is not supported; Gemma 2's GeGLU needs gelu_pytorch_tanh")
    if config.get("use_bidirectional_attention"):
        raise ConvertError(f"{path}: use_bidirectional_attention is true; only causal attention is supported")
    for key in ("attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar"):
        value = config.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
            raise ConvertError(f"{path}: {key} must be a positive number or null, got {value!r}")
    window = config.get("sliding_window")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ConvertError(f"{path}: sliding_window must be a positive integer or null, got {window!r}")
    types = config.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != config["num_hidden_layers"]:
            raise ConvertError(f"{path}: layer_types must list one type per layer ({config['num_hidden_layers']})")
        unknown = sorted(set(types) - set(LAYER_TYPES))
        if unknown:
            raise ConvertError(f"{path}: layer_types {unknown} are not supported; known: {', '.join(LAYER_TYPES)}")


def trtllm_config(hf_config: Mapping, spec: ConvertSpec, checked: bool = False) -> dict:
    """TensorRT-LLM's ``GemmaConfig`` for Gemma 2 (``inter_layernorms``, soft-caps,
    ``query_pre_attn_scalar``) plus ``sliding_window``/``layer_types``."""
    if not checked:
        check_parallelism(hf_config, spec)
    heads, layers = hf_config["num_attention_heads"], hf_config["num_hidden_layers"]
    head_size = hf_config.get("head_dim") or hf_config["hidden_size"] // heads
    tied = bool(hf_config.get("tie_word_embeddings", True))
    theta, scaling, _ = hf_rope(hf_config)
    config = {
        "architecture": ARCHITECTURE_NAME,
        "dtype": spec.dtype,
        "logits_dtype": "float32",
        "vocab_size": hf_config["vocab_size"],
        "max_position_embeddings": hf_config.get("max_position_embeddings", 8192),
        "hidden_size": hf_config["hidden_size"],
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": hf_config.get("num_key_value_heads") or heads,
        "head_size": head_size,
        "hidden_act": GELU_TANH,
        "intermediate_size": hf_config["intermediate_size"],
        "norm_epsilon": hf_config.get("rms_norm_eps", 1e-6),
        "position_embedding_type": "rope_gpt_neox",
        "rotary_base": theta,
        "rotary_scaling": scaling,
        "use_parallel_embedding": spec.vocab_parallel,
        "embedding_sharding_dim": 0,
        "share_embedding_table": tied,
        "tie_word_embeddings": tied,
        "mlp_bias": False,
        "attn_bias": False,
        "inter_layernorms": True,
        "query_pre_attn_scalar": hf_config.get("query_pre_attn_scalar", 256),
        "attn_logit_softcapping": hf_config.get("attn_logit_softcapping", 50.0),
        "final_logit_softcapping": hf_config.get("final_logit_softcapping", 30.0),
        "mapping": {"world_size": spec.world_size, "tp_size": spec.tp, "pp_size": spec.pp},
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
    }
    return with_windows({**config, "sliding_window": hf_config.get("sliding_window", GEMMA2_WINDOW),
                         "layer_types": hf_config.get("layer_types")})


def check_spec(hf_config: Mapping, spec: ConvertSpec, architecture: str) -> None:
    """Refuse what these converters do not make (quantization, pipeline stages) and splits
    TensorRT-LLM cannot make, before any tensor is read."""
    if spec.quantization is not None:
        raise ConvertError(f"quantization {spec.quantization} is not supported for {architecture}; use none")
    if spec.pp != 1:
        raise ConvertError(f"pp={spec.pp}: {architecture} converts with pp=1 only")
    check_parallelism(hf_config, spec)


def geometry(hf_config: Mapping, spec: ConvertSpec) -> Gemma2Geometry:
    check_spec(hf_config, spec, ARCHITECTURE_NAME)
    return Gemma2Geometry.from_config(trtllm_config(hf_config, spec, checked=True))


def _layer_steps(g: Gemma2Geometry, spec: ConvertSpec, layer: int) -> list[ConvertStep]:
    hf, out = f"model.layers.{layer}", f"transformer.layers.{layer}"
    tp, target, norm = spec.tp, _CODE_OF_TARGET[spec.dtype], (g.hidden,)

    def norm_step(hf_name: str, name: str) -> ConvertStep:
        return ConvertStep("norm_plus_one", (f"{hf}.{hf_name}.weight",), (norm,),
                           (TensorSlot(f"{out}.{name}.weight", target, norm),))

    def linear(op: str, source: str, shape: tuple[int, int], name: str, local: tuple[int, int]) -> ConvertStep:
        return ConvertStep(op, (f"{hf}.{source}.weight",), (shape,), (TensorSlot(f"{out}.{name}.weight", target, local),))

    inter = g.intermediate
    return [
        norm_step("input_layernorm", "input_layernorm"),
        *attention_steps(LAYOUT, g, spec, hf, out),
        norm_step("post_attention_layernorm", "post_layernorm"),
        norm_step("pre_feedforward_layernorm", "pre_feedforward_layernorm"),
        linear("column", "mlp.gate_proj", (inter, g.hidden), "mlp.fc", (inter // tp, g.hidden)),
        linear("column", "mlp.up_proj", (inter, g.hidden), "mlp.gate", (inter // tp, g.hidden)),
        linear("row", "mlp.down_proj", (g.hidden, inter), "mlp.proj", (g.hidden, inter // tp)),
        norm_step("post_feedforward_layernorm", "post_feedforward_layernorm"),
    ]


def plan_decoder(g, spec: ConvertSpec, rank: int, layer_steps, final_norm_op: str, tied: bool) -> tuple[ConvertStep, ...]:
    """A whole rank's steps in file order: embedding, ``layer_steps(g, spec, layer)`` for every
    layer, the final norm (``final_norm_op``), the lm_head (from the embedding when ``tied``)."""
    rank_position(g, spec, rank)
    target, table = _CODE_OF_TARGET[spec.dtype], (g.vocab, g.hidden)
    steps = [ConvertStep("embedding", ("model.embed_tokens.weight",), (table,),
                         (TensorSlot("transformer.vocab_embedding.weight", target, (g.embedding_rows, g.hidden)),))]
    for layer in range(g.layers):
        steps.extend(layer_steps(g, spec, layer))
    steps.append(ConvertStep(final_norm_op, ("model.norm.weight",), ((g.hidden,),),
                             (TensorSlot("transformer.ln_f.weight", target, (g.hidden,)),)))
    steps.append(ConvertStep("lm_head", ("model.embed_tokens.weight" if tied else "lm_head.weight",), (table,),
                             (TensorSlot("lm_head.weight", target, (padded_vocab(g.vocab, spec.tp) // spec.tp, g.hidden)),)))
    return tuple(steps)


def plan_rank(hf_config: Mapping, spec: ConvertSpec, rank: int) -> tuple[ConvertStep, ...]:
    """The steps that make ``rank{rank}.safetensors``, in file order; reads no tensor."""
    return plan_decoder(geometry(hf_config, spec), spec, rank, _layer_steps, "norm_plus_one",
                        bool(hf_config.get("tie_word_embeddings", True)))


def run_step(ckpt: HFCheckpoint, hf_config: Mapping, spec: ConvertSpec, rank: int,
             step: ConvertStep) -> Iterator[tuple[str, np.ndarray]]:
    """Run one planned step: its (name, array) output, checked against the plan."""
    g = geometry(hf_config, spec)
    if step.op == "norm_plus_one":
        (name,), (shape,) = step.sources, step.source_shapes
        values = read_tensor(ckpt, name, shape).astype(np.float32) + np.float32(1.0)
    else:
        values = step_values(ckpt, g, spec, rank_position(g, spec, rank), step)
    array = cast_to(values, spec.dtype)
    (planned,) = step.outputs
    produced = TensorSlot(planned.name, CODE_OF_DTYPE[array.dtype], tuple(array.shape))
    if produced != planned:
        raise AssertionError(f"conversion produced {produced}, planned {planned}")
    yield planned.name, array
