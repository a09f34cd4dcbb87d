"""The one description of a Llama model's shape: sizes and choices a checkpoint's config fixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from trtcas.errors import TrtcasError
from trtcas.rules.formats.safetensors import numpy_dtype
from trtcas.rules.llm.checkpoint import _REQUIRED_KEYS, _mapping
from trtcas.rules.messages import name_list, require

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)
_FLOAT_DTYPES = ("float16", "bfloat16", "float32")
_NUMPY_DTYPE = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
                "float32": np.dtype(np.float32)}
# --------------------------------------------------------------------------- the geometry


@dataclass(frozen=True)
class LlamaGeometry:
    """The sizes and choices a checkpoint's ``config.json`` fixes, per rank where split.

    Nothing here depends on the rank: every rank of a checkpoint has the same geometry,
    which is what lets their networks be identical.
    """

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
    rotary_scaling: tuple[tuple[str, Any], ...] | None
    quantization: str | None
    tied: bool = False  # lm_head is a copy of the embedding (tie_word_embeddings)

    @property
    def heads_per_rank(self) -> int:
        return self.heads // self.tp

    @property
    def kv_heads_per_rank(self) -> int:
        """Split when tp divides the KV heads, else one (replicated) KV head per rank."""
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

    @classmethod
    def from_config(cls, config: Mapping[str, Any], pipeline_ok: bool = False) -> "LlamaGeometry":
        """Check a TRT-LLM Llama config for what this builder supports; one line per problem."""
        for key in _REQUIRED_KEYS:
            if key not in config:
                raise TrtcasError(f"TensorRT-LLM config lacks {key!r}; re-run the conversion")
        arch = config["architecture"]
        require(arch in SUPPORTED_ARCHITECTURES,
               f"architecture {arch!r} has no native network here; supported: {', '.join(SUPPORTED_ARCHITECTURES)}")
        _, tp, pp = _mapping(config)
        require(pp == 1 or pipeline_ok, f"pp_size={pp}: pipeline-parallel checkpoints are not supported by the native decoder "
                        "network; convert with pp=1")
        dtype, logits_dtype = config["dtype"], config.get("logits_dtype", "float32")
        for key, value in (("dtype", dtype), ("logits_dtype", logits_dtype)):
            require(value in _FLOAT_DTYPES, f"{key} {value!r} is not one of {', '.join(_FLOAT_DTYPES)}")
        sizes = {key: config.get(key) for key in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                   "num_attention_heads", "intermediate_size")}
        sizes["num_key_value_heads"] = config.get("num_key_value_heads") or sizes["num_attention_heads"]
        for key, value in sizes.items():
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                   f"config {key} must be a positive integer, got {value!r}")
        heads, kv_heads = sizes["num_attention_heads"], sizes["num_key_value_heads"]
        head_size = config.get("head_size") or sizes["hidden_size"] // heads
        require(isinstance(head_size, int) and head_size >= 2 and head_size % 2 == 0,
               f"head_size {head_size!r} must be an even positive integer (RoPE rotates pairs)")
        for key, expected in (("hidden_act", "silu"), ("position_embedding_type", "rope_gpt_neox")):
            value = config.get(key, expected)
            require(value == expected, f"{key} {value!r} is not supported; the Llama network needs {expected!r}")
        for key in ("mlp_bias", "attn_bias", "bias"):
            require(not config.get(key), f"{key} is true; biases are not part of the native Llama network")
        quant = config.get("quantization") or {}
        algo = quant.get("quant_algo")
        require(algo in (None, "W8A16"), f"quant_algo {algo!r} is not supported; use none or W8A16")
        require(quant.get("kv_cache_quant_algo") is None,
               f"kv_cache_quant_algo {quant.get('kv_cache_quant_algo')!r} is not supported (there is no KV cache)")
        require(heads % kv_heads == 0,
               f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}")
        require(heads % tp == 0, f"tp_size={tp} does not divide num_attention_heads={heads}")
        require(kv_heads % tp == 0 or tp % kv_heads == 0,
               f"tp_size={tp} neither divides nor is a multiple of num_key_value_heads={kv_heads}")
        require(sizes["intermediate_size"] % tp == 0, f"tp_size={tp} does not divide intermediate_size")
        vocab, parallel = sizes["vocab_size"], bool(config.get("use_parallel_embedding", False)) and tp > 1
        if parallel:
            require(config.get("embedding_sharding_dim", 0) == 0,
                   "embedding_sharding_dim 1 is not supported; shard the embedding by vocabulary rows (dim 0)")
            require(vocab % tp == 0, f"use_parallel_embedding with tp_size={tp} needs it to divide vocab_size={vocab}")
        scaling = config.get("rotary_scaling")
        require(scaling is None or isinstance(scaling, Mapping), f"rotary_scaling must be an object, got {scaling!r}")
        geometry = cls(
            dtype=dtype, logits_dtype=logits_dtype, vocab=vocab, padded_vocab=-(-vocab // tp) * tp,
            hidden=sizes["hidden_size"], intermediate=sizes["intermediate_size"],
            layers=sizes["num_hidden_layers"], heads=heads, kv_heads=kv_heads, head_size=head_size, tp=tp,
            vocab_parallel=parallel, norm_epsilon=float(config.get("norm_epsilon", 1e-5)),
            rotary_base=float(config.get("rotary_base", 10000.0)),
            rotary_scaling=None if scaling is None else tuple(sorted(scaling.items())), quantization=algo,
            tied=bool(config.get("tie_word_embeddings", False)))
        rotary_inverse_frequencies(geometry)  # refuses an unsupported scaling before any layer is added
        return geometry




def expected_weights(geometry: LlamaGeometry) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor one rank's file must hold: name -> (shape, dtype name). Rank-independent."""
    g, dt = geometry, geometry.dtype
    out: dict[str, tuple[tuple[int, ...], str]] = {
        "transformer.vocab_embedding.weight": ((g.embedding_rows, g.hidden), dt)}

    def linear(prefix: str, rows: int, cols: int) -> None:
        if g.quantization == "W8A16":  # stored transposed, [in, out], with a per-output-channel scale
            out[f"{prefix}.weight"] = ((cols, rows), "int8")
            out[f"{prefix}.per_channel_scale"] = ((rows,), dt)
        else:
            out[f"{prefix}.weight"] = ((rows, cols), dt)

    for i in range(g.layers):
        p = f"transformer.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = ((g.hidden,), dt)
        linear(f"{p}.attention.qkv", g.qkv_rows, g.hidden)
        linear(f"{p}.attention.dense", g.hidden, g.heads_per_rank * g.head_size)
        out[f"{p}.post_layernorm.weight"] = ((g.hidden,), dt)
        linear(f"{p}.mlp.fc", g.intermediate // g.tp, g.hidden)
        linear(f"{p}.mlp.gate", g.intermediate // g.tp, g.hidden)
        linear(f"{p}.mlp.proj", g.hidden, g.intermediate // g.tp)
    out["transformer.ln_f.weight"] = ((g.hidden,), dt)
    out["lm_head.weight"] = ((g.lm_head_rows, g.hidden), dt)
    return out


def _check_weights(geometry: LlamaGeometry, rank: int, weights: Mapping[str, np.ndarray]) -> None:
    """Every expected tensor present with its shape and dtype, and nothing unused (a bias or
    scale this network would silently drop would make a wrong engine)."""
    expected = expected_weights(geometry)
    missing = [name for name in expected if name not in weights]
    if missing:
        raise TrtcasError(f"rank {rank} weights lack {name_list(missing)}; the checkpoint does not match its config.json")
    unused = sorted(set(weights) - set(expected))
    if unused:
        raise TrtcasError(f"rank {rank} weights include {name_list(unused)}, which the native Llama network does not "
                          "use; refusing to drop them silently")
    for name, (shape, dtype) in expected.items():
        array = weights[name]
        if tuple(array.shape) != shape or array.dtype.name != dtype:
            raise TrtcasError(f"rank {rank} weight {name!r} is {array.dtype.name}{list(array.shape)}, config.json "
                              f"implies {dtype}{list(shape)} (tp_size={geometry.tp}); the rank file was converted "
                              "for another config")




# --------------------------------------------------------------------------- rotary tables


def rotary_inverse_frequencies(geometry: LlamaGeometry) -> np.ndarray:
    """``1 / base^(2i/d)`` for the ``head_size/2`` rotated pairs, with ``linear`` or ``llama3``
    scaling applied as HF's ``rope_init_fn`` does; other scalings are refused (``dynamic``
    depends on the run-time length, which constant tables cannot follow)."""
    d = geometry.head_size
    inv = 1.0 / geometry.rotary_base ** (np.arange(0, d, 2, dtype=np.float64) / d)
    scaling = dict(geometry.rotary_scaling or ())
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv
    factor = float(scaling.get("factor", 1.0))
    if kind == "linear":
        return inv / factor
    if kind == "llama3":
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        old_len = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return np.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    raise TrtcasError(f"rotary_scaling type {kind!r} is not supported by the native network; "
                      "supported: none, linear, llama3")


def rotary_tables(geometry: LlamaGeometry, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of shape ``[1, max_seq_len, head_size/2]`` in the model dtype."""
    angles = np.outer(np.arange(max_seq_len, dtype=np.float64), rotary_inverse_frequencies(geometry))
    dtype = numpy_dtype(geometry.dtype)
    return (np.cos(angles)[None].astype(dtype), np.sin(angles)[None].astype(dtype))
