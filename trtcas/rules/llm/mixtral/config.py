"""The one description of a Mixtral model's shape, read from its TensorRT-LLM ``config.json``:
the shared decoder's geometry (``decoder.geometry``) with a mixture of experts for its MLP.

TensorRT-LLM converts Mixtral as a Llama with an MoE MLP: the config is ``LLaMAConfig``'s plus
``moe`` (``num_experts``, ``top_k``, ``normalization_mode`` 1 = RENORMALIZE, Mixtral's softmax
-> top-k -> renormalize) and the mapping's ``moe_tp_size`` (experts split by their
intermediate size across the tensor-parallel ranks) and ``moe_ep_size`` (1: no expert
parallelism). ``hidden_act`` is ``swiglu`` there (the experts' gated SiLU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from trtcas.rules.llm.decoder.geometry import DecoderGeometry, positive_int
from trtcas.rules.llm.decoder.geometry import expected_weights as decoder_weights
from trtcas.rules.llm.gemma2.config import base_geometry, fields_of
from trtcas.rules.messages import require

ARCHITECTURE_NAME = "MixtralForCausalLM"
RENORMALIZE = 1  # TensorRT-LLM's MoeConfig.ExpertScaleNormalizationMode.RENORMALIZE


@dataclass(frozen=True)
class MixtralGeometry(DecoderGeometry):
    """The decoder's sizes and choices plus the experts. Rank-independent."""

    experts: int = 1
    top_k: int = 1

    @property
    def expert_rows(self) -> int:
        """Each expert's intermediate rows on one rank (``moe_tp_size`` = tp)."""
        return self.intermediate // self.tp

    @classmethod
    def from_config(cls, config: Mapping[str, Any], pipeline_ok: bool = False,
                    supported: tuple[str, ...] | None = None) -> "MixtralGeometry":
        """Check a TensorRT-LLM Mixtral config for what the network supports; one line per problem."""
        base = base_geometry(config, "swiglu", ARCHITECTURE_NAME)
        mapping = config.get("mapping") or {}
        require(mapping.get("moe_ep_size", 1) == 1 and mapping.get("moe_tp_size", base.tp) == base.tp,
                f"moe_tp_size={mapping.get('moe_tp_size')} moe_ep_size={mapping.get('moe_ep_size')}: only experts "
                "split by tensor parallelism (moe_tp_size = tp_size, moe_ep_size = 1) are supported")
        moe = config.get("moe")
        require(isinstance(moe, Mapping), "TensorRT-LLM Mixtral config lacks its moe section; re-run the conversion")
        experts, top_k = moe.get("num_experts"), moe.get("top_k")
        require(positive_int(experts) and positive_int(top_k) and top_k <= experts,
                f"moe num_experts={experts!r} top_k={top_k!r}: need positive integers with top_k <= num_experts")
        require(moe.get("normalization_mode", RENORMALIZE) == RENORMALIZE,
                f"moe normalization_mode {moe.get('normalization_mode')!r} is not supported; Mixtral renormalizes (1)")
        require(not moe.get("shared_expert_intermediate_size"), "shared experts are not part of the Mixtral network")
        return cls(**fields_of(base), experts=experts, top_k=top_k)


def expected_weights(g: MixtralGeometry) -> dict[str, tuple[tuple[int, ...], str]]:
    """The decoder's tensors with each dense MLP replaced by the MoE's: the router (float32,
    TensorRT-LLM's MoE router is a float32 layer) and the experts stacked. Rank-independent."""
    out = {name: spec for name, spec in decoder_weights(g).items() if ".mlp." not in name}
    for i in range(g.layers):
        p = f"transformer.layers.{i}.mlp"
        out[f"{p}.router.weight"] = ((g.experts, g.hidden), "float32")
        out[f"{p}.fc.weight"] = ((g.experts, 2 * g.expert_rows, g.hidden), g.dtype)
        out[f"{p}.proj.weight"] = ((g.experts, g.hidden, g.expert_rows), g.dtype)
    return out
