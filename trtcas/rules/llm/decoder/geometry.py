"""The one description of a decoder's shape: sizes and choices a TensorRT-LLM checkpoint's
``config.json`` fixes, shared by the converter (which writes that config) and the network
writer (which reads it back).

One geometry serves every decoder-only architecture trtcas writes with the shared decoder
(``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``,
``Phi3ForCausalLM``): what differs between them is a field here (q/k/v biases, per-head
q/k RMSNorm, partial rotary, sliding-window layers), never a code path keyed by name.
Architecture folders that need more (Gemma2's soft-capping, Mixtral's experts) extend it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from trtcas.errors import TrtcasError
from trtcas.rules.llm.checkpoint import REQUIRED_KEYS, checkpoint_mapping
from trtcas.rules.messages import name_list, require

_FLOAT_DTYPES = ("float16", "bfloat16", "float32")
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class DecoderGeometry:
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
    architecture: str = "LlamaForCausalLM"
    qkv_bias: bool = False  # q/k/v projections carry biases (Qwen2), sharded with their heads
    qk_norm: bool = False  # per-head RMSNorm of q and k before RoPE (Qwen3)
    rotary_dim: int = 0  # leading dims of a head that rotate (partial rotary); 0 = head_size
    # per layer: the sliding window (keys a query may see, itself included) or None (full)
    windows: tuple[int | None, ...] = ()

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

    @property
    def rotated(self) -> int:
        return self.rotary_dim or self.head_size

    def window(self, layer: int, max_seq_len: int) -> int | None:
        """Layer ``layer``'s sliding window where it can cut anything at ``max_seq_len``
        (a window of at least the sequence is full attention, and is written as such)."""
        window = self.windows[layer] if self.windows else None
        return window if window is not None and window < max_seq_len else None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], pipeline_ok: bool = False,
                    supported: tuple[str, ...] | None = None) -> "DecoderGeometry":
        """Check a TRT-LLM decoder config for what this builder supports; one line per problem."""
        for key in REQUIRED_KEYS:
            if key not in config:
                raise TrtcasError(f"TensorRT-LLM config lacks {key!r}; re-run the conversion")
        arch = config["architecture"]
        if supported is not None:
            require(arch in supported, f"architecture {arch!r} has no native network here; supported: {', '.join(supported)}")
        _, tp, pp = checkpoint_mapping(config)
        require(pp == 1 or pipeline_ok, f"pp_size={pp}: pipeline-parallel checkpoints are not supported by the native decoder "
                        "network; convert with pp=1")
        dtype, logits_dtype = config["dtype"], config.get("logits_dtype", "float32")
        for key, value in (("dtype", dtype), ("logits_dtype", logits_dtype)):
            require(value in _FLOAT_DTYPES, f"{key} {value!r} is not one of {', '.join(_FLOAT_DTYPES)}")
        sizes = {key: config.get(key) for key in ("vocab_size", "hidden_size", "num_hidden_layers",
                                                   "num_attention_heads", "intermediate_size")}
        sizes["num_key_value_heads"] = config.get("num_key_value_heads") or sizes["num_attention_heads"]
        for key, value in sizes.items():
            require(positive_int(value), f"config {key} must be a positive integer, got {value!r}")
        heads, kv_heads = sizes["num_attention_heads"], sizes["num_key_value_heads"]
        head_size = config.get("head_size") or sizes["hidden_size"] // heads
        require(isinstance(head_size, int) and head_size >= 2 and head_size % 2 == 0,
               f"head_size {head_size!r} must be an even positive integer (RoPE rotates pairs)")
        rotary_dim = config.get("rotary_dim") or head_size
        require(positive_int(rotary_dim) and rotary_dim % 2 == 0 and rotary_dim <= head_size,
               f"rotary_dim {rotary_dim!r} must be an even integer of at most head_size={head_size}")
        for key, expected in (("hidden_act", "silu"), ("position_embedding_type", "rope_gpt_neox")):
            value = config.get(key, expected)
            require(value == expected, f"{key} {value!r} is not supported; the decoder network needs {expected!r}")
        for key in ("mlp_bias", "bias", "dense_bias"):
            require(not config.get(key), f"{key} is true; that bias is not part of the native decoder network")
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
            tied=bool(config.get("tie_word_embeddings", False)), architecture=arch,
            qkv_bias=bool(config.get("attn_bias", False)), qk_norm=bool(config.get("qk_layernorm", False)),
            rotary_dim=0 if rotary_dim == head_size else rotary_dim,
            windows=layer_windows(config, sizes["num_hidden_layers"]))
        from trtcas.rules.llm.decoder.rope import rotary_inverse_frequencies

        rotary_inverse_frequencies(geometry)  # refuses an unsupported scaling before any layer is added
        return geometry


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def layer_windows(config: Mapping[str, Any], layers: int) -> tuple[int | None, ...]:
    """Per layer, its sliding window or None, from ``sliding_window`` and ``layer_types``
    (``full_attention`` / ``sliding_attention`` per layer, as transformers 5 writes them;
    without it every layer slides when a window is set, as Mistral's and Phi-3's do)."""
    window = config.get("sliding_window")
    require(window is None or positive_int(window), f"sliding_window must be a positive integer or null, got {window!r}")
    types = config.get("layer_types")
    if types is None:
        return () if window is None else (window,) * layers
    require(isinstance(types, list) and len(types) == layers and all(t in LAYER_TYPES for t in types),
           f"layer_types must list {layers} of {', '.join(LAYER_TYPES)}, got {types!r}")
    require(window is not None or "sliding_attention" not in types,
           "layer_types has sliding_attention layers but sliding_window is not set")
    return tuple(window if t == "sliding_attention" else None for t in types)


def expected_weights(geometry: DecoderGeometry) -> dict[str, tuple[tuple[int, ...], str]]:
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
        if g.qkv_bias:
            out[f"{p}.attention.qkv.bias"] = ((g.qkv_rows,), dt)
        if g.qk_norm:
            out[f"{p}.attention.q_layernorm.weight"] = ((g.head_size,), dt)
            out[f"{p}.attention.k_layernorm.weight"] = ((g.head_size,), dt)
        linear(f"{p}.attention.dense", g.hidden, g.heads_per_rank * g.head_size)
        out[f"{p}.post_layernorm.weight"] = ((g.hidden,), dt)
        linear(f"{p}.mlp.fc", g.intermediate // g.tp, g.hidden)
        linear(f"{p}.mlp.gate", g.intermediate // g.tp, g.hidden)
        linear(f"{p}.mlp.proj", g.hidden, g.intermediate // g.tp)
    out["transformer.ln_f.weight"] = ((g.hidden,), dt)
    out["lm_head.weight"] = ((g.lm_head_rows, g.hidden), dt)
    return out


def check_weights(expected: Mapping[str, tuple[tuple[int, ...], str]], tp: int, rank: int,
                  weights: Mapping[str, np.ndarray]) -> None:
    """Every expected tensor present with its shape and dtype, and nothing unused (a bias or
    scale this network would silently drop would make a wrong engine)."""
    missing = [name for name in expected if name not in weights]
    if missing:
        raise TrtcasError(f"rank {rank} weights lack {name_list(missing)}; the checkpoint does not match its config.json")
    unused = sorted(set(weights) - set(expected))
    if unused:
        raise TrtcasError(f"rank {rank} weights include {name_list(unused)}, which the native decoder network does not "
                          "use; refusing to drop them silently")
    for name, (shape, dtype) in expected.items():
        array = weights[name]
        if tuple(array.shape) != shape or array.dtype.name != dtype:
            raise TrtcasError(f"rank {rank} weight {name!r} is {array.dtype.name}{list(array.shape)}, config.json "
                              f"implies {dtype}{list(shape)} (tp_size={tp}); the rank file was converted "
                              "for another config")
