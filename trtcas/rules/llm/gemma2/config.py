"""The one description of a Gemma 2 model's shape, read from its TensorRT-LLM ``config.json``.

TensorRT-LLM's ``GemmaConfig`` (``architecture = "Gemma2ForCausalLM"``) carries Gemma 2's
additions as ``query_pre_attn_scalar``, ``attn_logit_softcapping`` and
``final_logit_softcapping``; trtcas adds ``sliding_window`` and ``layer_types`` (which layers
attend through the window), because its network is the whole prefill computation and has no
runtime ``max_attention_window_size`` to carry them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from trtcas.rules.formats.safetensors import numpy_dtype
from trtcas.rules.llm.checkpoint import _REQUIRED_KEYS, _mapping
from trtcas.rules.messages import name_list, require
from trtcas.errors import TrtcasError

ARCHITECTURE_NAME = "Gemma2ForCausalLM"
LAYER_TYPES = ("sliding_attention", "full_attention")
_FLOAT_DTYPES = ("float16", "bfloat16", "float32")


def positive_int(config: Mapping[str, Any], key: str, default: Any = None) -> int:
    value = config.get(key, default)
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"config {key} must be a positive integer, got {value!r}")
    return value


def optional_positive(config: Mapping[str, Any], key: str) -> float | None:
    value = config.get(key)
    require(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0),
            f"config {key} must be a positive number or null, got {value!r}")
    return None if value is None else float(value)


def default_layer_types(layers: int) -> tuple[str, ...]:
    """Gemma 2's pattern when a config does not list it: even layers slide, odd are global."""
    return tuple("sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers))


@dataclass(frozen=True)
class Gemma2Geometry:
    """Sizes and choices of a Gemma 2 checkpoint, per rank where split; rank-independent."""

    dtype: str
    logits_dtype: str
    vocab: int
    padded_vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_size: int
    tp: int
    vocab_parallel: bool
    norm_epsilon: float
    rotary_base: float
    query_pre_attn_scalar: float
    attn_softcap: float | None
    final_softcap: float | None
    sliding_window: int | None
    layer_types: tuple[str, ...]

    @property
    def heads_per_rank(self) -> int:
        return self.heads // self.tp

    @property
    def kv_heads_per_rank(self) -> int:
        return max(self.kv_heads // self.tp, 1)

    @property
    def qkv_rows(self) -> int:
        return (self.heads_per_rank + 2 * self.kv_heads_per_rank) * self.head_size

    @property
    def embedding_rows(self) -> int:
        return self.vocab // self.tp if self.vocab_parallel else self.vocab

    @property
    def lm_head_rows(self) -> int:
        return self.padded_vocab // self.tp

    def window_of(self, layer: int, max_seq_len: int) -> int | None:
        """The sliding window of ``layer``, or None when it attends globally or the window
        covers every position a ``max_seq_len`` network can hold."""
        if self.layer_types[layer] != "sliding_attention" or self.sliding_window is None:
            return None
        return self.sliding_window if self.sliding_window < max_seq_len else None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Gemma2Geometry":
        """Check a TensorRT-LLM Gemma 2 config for what the network supports; one line per problem."""
        for key in _REQUIRED_KEYS:
            require(key in config, f"TensorRT-LLM config lacks {key!r}; re-run the conversion")
        require(config["architecture"] == ARCHITECTURE_NAME,
                f"architecture {config['architecture']!r} is not {ARCHITECTURE_NAME}")
        _, tp, pp = _mapping(config)
        require(pp == 1, f"pp_size={pp}: pipeline-parallel checkpoints are not supported; convert with pp=1")
        dtype, logits_dtype = config["dtype"], config.get("logits_dtype", "float32")
        for key, value in (("dtype", dtype), ("logits_dtype", logits_dtype)):
            require(value in _FLOAT_DTYPES, f"{key} {value!r} is not one of {', '.join(_FLOAT_DTYPES)}")
        vocab, hidden = positive_int(config, "vocab_size"), positive_int(config, "hidden_size")
        layers, heads = positive_int(config, "num_hidden_layers"), positive_int(config, "num_attention_heads")
        kv_heads = positive_int(config, "num_key_value_heads", heads)
        head_size = positive_int(config, "head_size", hidden // heads)
        require(head_size % 2 == 0, f"head_size {head_size} must be even (RoPE rotates pairs)")
        intermediate = positive_int(config, "intermediate_size")
        for key, expected in (("hidden_act", "gelu_pytorch_tanh"), ("position_embedding_type", "rope_gpt_neox")):
            value = config.get(key, expected)
            require(value == expected, f"{key} {value!r} is not supported; the Gemma 2 network needs {expected!r}")
        for key in ("mlp_bias", "attn_bias"):
            require(not config.get(key), f"{key} is true; biases are not part of the Gemma 2 network")
        require(config.get("rotary_scaling") is None,
                f"rotary_scaling {config.get('rotary_scaling')!r} is not supported by the Gemma 2 network")
        quant = config.get("quantization") or {}
        require(quant.get("quant_algo") is None and quant.get("kv_cache_quant_algo") is None,
                f"quantization {quant!r} is not supported for {ARCHITECTURE_NAME}; convert without quantization")
        require(heads % kv_heads == 0, f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
        require(heads % tp == 0, f"tp_size={tp} does not divide num_attention_heads={heads}")
        require(kv_heads % tp == 0 or tp % kv_heads == 0,
                f"tp_size={tp} neither divides nor is a multiple of num_key_value_heads={kv_heads}")
        require(intermediate % tp == 0, f"tp_size={tp} does not divide intermediate_size={intermediate}")
        parallel = bool(config.get("use_parallel_embedding", False)) and tp > 1
        if parallel:
            require(config.get("embedding_sharding_dim", 0) == 0,
                    "embedding_sharding_dim 1 is not supported; shard the embedding by vocabulary rows (dim 0)")
            require(vocab % tp == 0, f"use_parallel_embedding with tp_size={tp} needs it to divide vocab_size={vocab}")
        layer_types = tuple(config.get("layer_types") or default_layer_types(layers))
        require(len(layer_types) == layers, f"layer_types names {len(layer_types)} layers, the model has {layers}")
        unknown = sorted(set(layer_types) - set(LAYER_TYPES))
        require(not unknown, f"layer_types {name_list(unknown)} are not supported; known: {', '.join(LAYER_TYPES)}")
        window = config.get("sliding_window")
        require(window is None or (isinstance(window, int) and not isinstance(window, bool) and window >= 1),
                f"sliding_window must be a positive integer or null, got {window!r}")
        scalar = config.get("query_pre_attn_scalar")
        if scalar is None:
            raise TrtcasError("TensorRT-LLM Gemma 2 config lacks query_pre_attn_scalar; re-run the conversion")
        require(isinstance(scalar, (int, float)) and scalar > 0, f"query_pre_attn_scalar must be positive, got {scalar!r}")
        return cls(
            dtype=dtype, logits_dtype=logits_dtype, vocab=vocab, padded_vocab=-(-vocab // tp) * tp, hidden=hidden,
            intermediate=intermediate, layers=layers, heads=heads, kv_heads=kv_heads, head_size=head_size, tp=tp,
            vocab_parallel=parallel, norm_epsilon=float(config.get("norm_epsilon", 1e-6)),
            rotary_base=float(config.get("rotary_base", 10000.0)), query_pre_attn_scalar=float(scalar),
            attn_softcap=optional_positive(config, "attn_logit_softcapping"),
            final_softcap=optional_positive(config, "final_logit_softcapping"),
            sliding_window=window, layer_types=layer_types)


def expected_weights(g: Gemma2Geometry) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor one rank's file must hold: name -> (shape, dtype name). Rank-independent."""
    dt, norm = g.dtype, (g.hidden,)
    out: dict[str, tuple[tuple[int, ...], str]] = {"transformer.vocab_embedding.weight": ((g.embedding_rows, g.hidden), dt)}
    for i in range(g.layers):
        p = f"transformer.layers.{i}"
        for part in ("input_layernorm", "post_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
            out[f"{p}.{part}.weight"] = (norm, dt)
        out[f"{p}.attention.qkv.weight"] = ((g.qkv_rows, g.hidden), dt)
        out[f"{p}.attention.dense.weight"] = ((g.hidden, g.heads_per_rank * g.head_size), dt)
        out[f"{p}.mlp.fc.weight"] = ((g.intermediate // g.tp, g.hidden), dt)
        out[f"{p}.mlp.gate.weight"] = ((g.intermediate // g.tp, g.hidden), dt)
        out[f"{p}.mlp.proj.weight"] = ((g.hidden, g.intermediate // g.tp), dt)
    out["transformer.ln_f.weight"] = (norm, dt)
    out["lm_head.weight"] = ((g.lm_head_rows, g.hidden), dt)
    return out


def check_weights(expected: Mapping[str, tuple[tuple[int, ...], str]], rank: int, weights: Mapping[str, np.ndarray],
                  what: str, tp: int) -> None:
    """Every expected tensor present with its shape and dtype, and nothing unused (a tensor the
    network would silently drop would make a wrong engine)."""
    missing = [name for name in expected if name not in weights]
    require(not missing, f"rank {rank} weights lack {name_list(missing)}; the checkpoint does not match its config.json")
    unused = sorted(set(weights) - set(expected))
    require(not unused, f"rank {rank} weights include {name_list(unused)}, which the {what} network does not use; "
                        "refusing to drop them silently")
    for name, (shape, dtype) in expected.items():
        array = weights[name]
        require(tuple(array.shape) == shape and array.dtype.name == dtype,
                f"rank {rank} weight {name!r} is {array.dtype.name}{list(array.shape)}, config.json implies "
                f"{dtype}{list(shape)} (tp_size={tp}); the rank file was converted for another config")


def rotary_tables(head_size: int, base: float, max_seq_len: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) ``[1, max_seq_len, head_size/2]`` of the default RoPE, in the model dtype
    (HF computes them in float32 and casts to the activations' dtype)."""
    inv = 1.0 / base ** (np.arange(0, head_size, 2, dtype=np.float64) / head_size)
    angles = np.outer(np.arange(max_seq_len, dtype=np.float64), inv)
    target = numpy_dtype(dtype)
    return np.cos(angles)[None].astype(target), np.sin(angles)[None].astype(target)
