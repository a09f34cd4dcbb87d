"""The one description of a Gemma 2 model's shape, read from its TensorRT-LLM ``config.json``:
the shared decoder's geometry (``decoder.geometry``) plus what Gemma 2 adds.

TensorRT-LLM's ``GemmaConfig`` (``architecture = "Gemma2ForCausalLM"``) carries Gemma 2's
additions as ``query_pre_attn_scalar``, ``attn_logit_softcapping`` and
``final_logit_softcapping`` (and ``inter_layernorms``: the pre/post feed-forward norms);
``sliding_window`` with ``layer_types`` says which layers attend through the window, because
trtcas's network is the whole prefill computation and has no runtime
``max_attention_window_size`` to carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from trtcas.rules.llm.decoder.geometry import DecoderGeometry
from trtcas.rules.llm.decoder.geometry import expected_weights as decoder_weights
from trtcas.rules.messages import require

ARCHITECTURE_NAME = "Gemma2ForCausalLM"
GELU_TANH = "gelu_pytorch_tanh"
GEMMA2_WINDOW = 4096  # the window every Gemma 2 model ships with (transformers' default too)


def default_layer_types(layers: int) -> list[str]:
    """Gemma 2's pattern when a config does not list it: even layers slide, odd layers are global."""
    return ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]


def with_windows(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with Gemma 2's sliding layers stated: a checkpoint TensorRT-LLM wrote has no
    ``sliding_window`` (its runtime sets the window), so its absence means Gemma 2's 4096 on
    the even layers; ``null`` means no window; ``layer_types`` defaults to alternating."""
    out = dict(config)
    window = out.setdefault("sliding_window", GEMMA2_WINDOW)
    if window is None:
        out.pop("layer_types", None)
    elif out.get("layer_types") is None and isinstance(out.get("num_hidden_layers"), int):
        out["layer_types"] = default_layer_types(out["num_hidden_layers"])
    return out


def optional_positive(config: Mapping[str, Any], key: str, default: Any = None) -> float | None:
    """A positive number or None (the soft-caps: null turns them off)."""
    value = config.get(key, default)
    require(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0),
            f"config {key} must be a positive number or null, got {value!r}")
    return None if value is None else float(value)


def base_geometry(config: Mapping[str, Any], activation: str, architecture: str) -> DecoderGeometry:
    """The shared decoder's geometry of a config whose MLP activation is ``activation`` (the
    shared geometry checks for Llama's silu; the architecture checks its own here), refusing
    the quantization and biases these networks do not implement."""
    act = config.get("hidden_act", activation)
    require(act == activation, f"hidden_act {act!r} is not supported; the {architecture} network needs {activation!r}")
    base = DecoderGeometry.from_config({**config, "hidden_act": "silu"}, supported=(architecture,))
    require(base.quantization is None, f"quantization {base.quantization} is not supported for {architecture}; "
                                       "convert without quantization")
    require(not base.qkv_bias and not base.qk_norm, f"q/k/v biases and q/k norms are not part of {architecture}")
    return base


def fields_of(base: DecoderGeometry) -> dict[str, Any]:
    return {f.name: getattr(base, f.name) for f in fields(DecoderGeometry)}


@dataclass(frozen=True)
class Gemma2Geometry(DecoderGeometry):
    """The decoder's sizes and choices, plus Gemma 2's scalar and soft-caps. Rank-independent."""

    query_pre_attn_scalar: float = 256.0
    attn_softcap: float | None = None
    final_softcap: float | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], pipeline_ok: bool = False,
                    supported: tuple[str, ...] | None = None) -> "Gemma2Geometry":
        """Check a TensorRT-LLM Gemma 2 config for what the network supports; one line per problem."""
        base = base_geometry(with_windows(config), GELU_TANH, ARCHITECTURE_NAME)
        scalar = optional_positive(config, "query_pre_attn_scalar")
        require(scalar is not None, "TensorRT-LLM Gemma 2 config lacks query_pre_attn_scalar; re-run the conversion")
        return cls(**fields_of(base), query_pre_attn_scalar=scalar,
                   attn_softcap=optional_positive(config, "attn_logit_softcapping"),
                   final_softcap=optional_positive(config, "final_logit_softcapping"))


def expected_weights(g: Gemma2Geometry) -> dict[str, tuple[tuple[int, ...], str]]:
    """The decoder's tensors plus each layer's pre/post feed-forward norms. Rank-independent."""
    out = decoder_weights(g)
    for i in range(g.layers):
        for part in ("pre_feedforward_layernorm", "post_feedforward_layernorm"):
            out[f"transformer.layers.{i}.{part}.weight"] = ((g.hidden,), g.dtype)
    return out
