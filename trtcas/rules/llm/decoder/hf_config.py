"""Reading a Hugging Face decoder config, in both forms it comes in, for the converter.

Hub checkpoints state ``rope_theta`` and ``rope_scaling`` at the top level and the weights'
dtype as ``torch_dtype``; transformers 5 writes ``rope_parameters`` (``rope_theta`` and
``partial_rotary_factor`` inside it) and ``dtype``. Both are read here, once, into the
fields of a TensorRT-LLM config. What would change the math but is not implemented (an
unknown rope type, an activation other than silu, biases the network has no place for, a
scaling parameter nobody reads) is refused in one line naming it, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from trtcas.errors import TrtcasError
from trtcas.rules.llm.decoder.geometry import LAYER_TYPES
from trtcas.rules.llm.decoder.rope import rope_kind
from trtcas.rules.llm.spec import ConvertError

_REQUIRED_HF_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                     "vocab_size", "rms_norm_eps")
_POSITIVE_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size",
                  "max_position_embeddings", "num_key_value_heads", "head_dim")


@dataclass(frozen=True)
class HFLayout:
    """How one architecture's HF checkpoint differs from Llama's: the only per-architecture
    input of the shared converter.

    ``fused_qkv``: one ``self_attn.qkv_proj`` ([q; k; v] rows) instead of three (Phi-3);
    ``fused_gate_up``: one ``mlp.gate_up_proj`` ([gate; up] rows, Phi-3); ``qkv_bias``: q/k/v
    projections always have biases (Qwen2); ``qk_norm``: ``self_attn.q_norm``/``k_norm``
    per-head RMSNorm (Qwen3); ``windows``: how sliding windows are stated: ``none`` (refused
    if present), ``all`` (``sliding_window`` applies to every layer: Mistral, Phi-3) or
    ``qwen`` (``use_sliding_window`` and ``max_window_layers``, or ``layer_types``).
    """

    architecture: str
    fused_qkv: bool = False
    fused_gate_up: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    windows: str = "none"


def check_hf_config(layout: HFLayout, config: Mapping, path: Path) -> None:
    """Check a HF config up front, so a wrong or foreign one fails in one line before any
    tensor is read."""
    name = layout.architecture
    for key in _REQUIRED_HF_KEYS:
        if key not in config:
            raise ConvertError(f"{path}: HF config lacks {key!r}, which a {name} config needs")
    for key in _POSITIVE_KEYS:
        value = config.get(key)
        if value is None and key not in _REQUIRED_HF_KEYS:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConvertError(f"{path}: HF config {key!r} must be a positive integer, got {value!r}")
    eps = config["rms_norm_eps"]
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ConvertError(f"{path}: HF config 'rms_norm_eps' must be a positive number, got {eps!r}")
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ConvertError(f"{path}: hidden_act {act!r} is not silu, which the gated MLP of {name} needs")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise ConvertError(f"{path}: {key} is true; {name} is converted without that bias")
    try:
        hf_rope(config)
        hf_windows(layout, config)
    except TrtcasError as exc:
        raise ConvertError(f"{path}: {exc}") from None


def hf_rope(config: Mapping) -> tuple[float, dict | None, float]:
    """(rope theta, scaling parameters or None for plain RoPE, partial rotary factor), from
    ``rope_parameters`` (transformers 5) or ``rope_theta``/``rope_scaling`` (hub configs)."""
    params = config.get("rope_parameters")
    if params is not None:
        if not isinstance(params, Mapping):
            raise TrtcasError(f"rope_parameters must be an object, got {params!r}")
        theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
        factor = params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
        scaling = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
    else:
        theta, factor = config.get("rope_theta", 10000.0), config.get("partial_rotary_factor", 1.0)
        scaling = config.get("rope_scaling")
        if scaling is not None and not isinstance(scaling, Mapping):
            raise TrtcasError(f"rope_scaling must be an object or null, got {scaling!r}")
        scaling = dict(scaling or {})
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or theta <= 0:
        raise TrtcasError(f"rope_theta must be a positive number, got {theta!r}")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 < factor <= 1:
        raise TrtcasError(f"partial_rotary_factor must be in (0, 1], got {factor!r}")
    kind = rope_kind(scaling)
    return float(theta), (None if kind == "default" else dict(scaling)), float(factor)


def hf_windows(layout: HFLayout, config: Mapping) -> tuple[int | None, list[str] | None]:
    """(sliding_window, layer_types) as the TensorRT-LLM config states them."""
    layers, window = config["num_hidden_layers"], config.get("sliding_window")
    types = config.get("layer_types")
    if layout.windows == "qwen":
        window = window if config.get("use_sliding_window", False) else None
        if types is None and window is not None:
            first = config.get("max_window_layers", layers)
            types = ["sliding_attention" if i >= first else "full_attention" for i in range(layers)]
    elif layout.windows == "none" and (window is not None or (types and "sliding_attention" in types)):
        raise TrtcasError(f"sliding_window={window!r} / layer_types are not part of {layout.architecture}")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers or any(t not in LAYER_TYPES for t in types):
            raise TrtcasError(f"layer_types must list {layers} of {', '.join(LAYER_TYPES)}, got {types!r}")
        if "sliding_attention" not in types:
            return None, None
        if window is None:
            raise TrtcasError("layer_types has sliding_attention layers but sliding_window is not set")
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise TrtcasError(f"sliding_window must be a positive integer or null, got {window!r}")
    return window, types
