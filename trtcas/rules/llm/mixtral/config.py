"""The one description of a Mixtral model's shape, read from its TensorRT-LLM ``config.json``.

TensorRT-LLM converts Mixtral as a Llama with a mixture-of-experts MLP: the config is
``LLaMAConfig``'s plus ``moe`` (``num_experts``, ``top_k``, ``normalization_mode`` 1 =
RENORMALIZE, Mixtral's softmax -> top-k -> renormalize) and the mapping's ``moe_tp_size``
(experts split by their intermediate size across the tensor-parallel ranks) and
``moe_ep_size`` (1: no expert parallelism). Geometry checks are shared with Gemma 2's
(``gemma2.config``), which has the same attention sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from trtcas.rules.llm.checkpoint import _REQUIRED_KEYS, _mapping
from trtcas.rules.llm.gemma2.config import positive_int
from trtcas.rules.messages import require

ARCHITECTURE_NAME = "MixtralForCausalLM"
RENORMALIZE = 1  # TensorRT-LLM's MoeConfig.ExpertScaleNormalizationMode.RENORMALIZE
_FLOAT_DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class MixtralGeometry:
    """Sizes and choices of a Mixtral checkpoint, per rank where split; rank-independent."""

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
    experts: int
    top_k: int
    sliding_window: int | None

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

    @property
    def expert_rows(self) -> int:
        """Each expert's intermediate rows on one rank (``moe_tp_size`` = tp)."""
        return self.intermediate // self.tp

    def window(self, max_seq_len: int) -> int | None:
        """The sliding window, or None when absent or covering every position of the network."""
        return self.sliding_window if self.sliding_window is not None and self.sliding_window < max_seq_len else None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "MixtralGeometry":
        """Check a TensorRT-LLM Mixtral config for what the network supports; one line per problem."""
        for key in _REQUIRED_KEYS:
            require(key in config, f"TensorRT-LLM config lacks {key!r}; re-run the conversion")
        require(config["architecture"] == ARCHITECTURE_NAME, f"architecture {config['architecture']!r} is not {ARCHITECTURE_NAME}")
        _, tp, pp = _mapping(config)
        require(pp == 1, f"pp_size={pp}: pipeline-parallel checkpoints are not supported; convert with pp=1")
        mapping = config.get("mapping") or {}
        require(mapping.get("moe_ep_size", 1) == 1 and mapping.get("moe_tp_size", tp) == tp,
                f"moe_tp_size={mapping.get('moe_tp_size')} moe_ep_size={mapping.get('moe_ep_size')}: only experts split "
                f"by tensor parallelism (moe_tp_size = tp_size, moe_ep_size = 1) are supported")
        dtype, logits_dtype = config["dtype"], config.get("logits_dtype", "float32")
        for key, value in (("dtype", dtype), ("logits_dtype", logits_dtype)):
            require(value in _FLOAT_DTYPES, f"{key} {value!r} is not one of {', '.join(_FLOAT_DTYPES)}")
        vocab, hidden = positive_int(config, "vocab_size"), positive_int(config, "hidden_size")
        layers, heads = positive_int(config, "num_hidden_layers"), positive_int(config, "num_attention_heads")
        kv_heads = positive_int(config, "num_key_value_heads", heads)
        head_size = positive_int(config, "head_size", hidden // heads)
        require(head_size % 2 == 0, f"head_size {head_size} must be even (RoPE rotates pairs)")
        intermediate = positive_int(config, "intermediate_size")
        for key, expected in (("hidden_act", "swiglu"), ("position_embedding_type", "rope_gpt_neox")):
            value = config.get(key, expected)
            require(value in (expected, "silu"), f"{key} {value!r} is not supported; the Mixtral network needs {expected!r}")
        for key in ("mlp_bias", "attn_bias"):
            require(not config.get(key), f"{key} is true; biases are not part of the Mixtral network")
        require(config.get("rotary_scaling") is None,
                f"rotary_scaling {config.get('rotary_scaling')!r} is not supported by the Mixtral network")
        quant = config.get("quantization") or {}
        require(quant.get("quant_algo") is None and quant.get("kv_cache_quant_algo") is None,
                f"quantization {quant!r} is not supported for {ARCHITECTURE_NAME}; convert without quantization")
        moe = config.get("moe")
        require(isinstance(moe, Mapping), "TensorRT-LLM Mixtral config lacks its moe section; re-run the conversion")
        experts, top_k = positive_int(moe, "num_experts"), positive_int(moe, "top_k")
        require(top_k <= experts, f"moe top_k={top_k} exceeds num_experts={experts}")
        require(moe.get("normalization_mode", RENORMALIZE) == RENORMALIZE,
                f"moe normalization_mode {moe.get('normalization_mode')!r} is not supported; Mixtral renormalizes (1)")
        require(not moe.get("shared_expert_intermediate_size"), "shared experts are not part of the Mixtral network")
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
        window = config.get("sliding_window")
        require(window is None or (isinstance(window, int) and not isinstance(window, bool) and window >= 1),
                f"sliding_window must be a positive integer or null, got {window!r}")
        return cls(dtype=dtype, logits_dtype=logits_dtype, vocab=vocab, padded_vocab=-(-vocab // tp) * tp, hidden=hidden,
                   intermediate=intermediate, layers=layers, heads=heads, kv_heads=kv_heads, head_size=head_size, tp=tp,
                   vocab_parallel=parallel, norm_epsilon=float(config.get("norm_epsilon", 1e-5)),
                   rotary_base=float(config.get("rotary_base", 10000.0)), experts=experts, top_k=top_k,
                   sliding_window=window)


def expected_weights(g: MixtralGeometry) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor one rank's file must hold: name -> (shape, dtype name). The router is
    float32 in every checkpoint (TensorRT-LLM's MoE router is a float32 layer)."""
    dt, norm = g.dtype, (g.hidden,)
    out: dict[str, tuple[tuple[int, ...], str]] = {"transformer.vocab_embedding.weight": ((g.embedding_rows, g.hidden), dt)}
    for i in range(g.layers):
        p = f"transformer.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = (norm, dt)
        out[f"{p}.attention.qkv.weight"] = ((g.qkv_rows, g.hidden), dt)
        out[f"{p}.attention.dense.weight"] = ((g.hidden, g.heads_per_rank * g.head_size), dt)
        out[f"{p}.post_layernorm.weight"] = (norm, dt)
        out[f"{p}.mlp.router.weight"] = ((g.experts, g.hidden), "float32")
        out[f"{p}.mlp.fc.weight"] = ((g.experts, 2 * g.expert_rows, g.hidden), dt)
        out[f"{p}.mlp.proj.weight"] = ((g.experts, g.hidden, g.expert_rows), dt)
    out["transformer.ln_f.weight"] = (norm, dt)
    out["lm_head.weight"] = ((g.lm_head_rows, g.hidden), dt)
    return out
