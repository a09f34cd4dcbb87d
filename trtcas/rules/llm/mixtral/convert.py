"""``MixtralForCausalLM``: HF checkpoint -> TensorRT-LLM checkpoint names and sharding.

Attention, norms, embedding and lm_head are converted as for Llama (``llama/convert.py``).
The sparse MoE block follows TensorRT-LLM's Llama/Mixtral converter:

- ``block_sparse_moe.gate`` -> ``mlp.router.weight`` ``[experts, hidden]``, kept in float32;
- the experts' ``w3`` (up) and ``w1`` (gate, the SiLU input) are stacked over the experts
  and concatenated as ``[w3; w1]`` -> ``mlp.fc.weight`` ``[experts, 2 * inter / tp, hidden]``;
- ``w2`` (down) stacked -> ``mlp.proj.weight`` ``[experts, hidden, inter / tp]``;
- with tp > 1 every expert is split by its intermediate size (``moe_tp_size = tp``): w1/w3
  by rows, w2 by columns, so each rank holds a slice of every expert.

HF checkpoints name experts per expert (``block_sparse_moe.experts.{e}.w{1,2,3}.weight``),
as hub Mixtral checkpoints and transformers 5's ``save_pretrained`` both write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from trtcas.rules.formats.safetensors import CODE_OF_DTYPE, TensorSlot
from trtcas.rules.llm.convert import ConvertStep, cast_to, rank_position
from trtcas.rules.llm.decoder.hf_config import HFLayout
from trtcas.rules.llm.decoder.hf_config import check_hf_config as check_decoder_config
from trtcas.rules.llm.decoder.hf_convert import attention_steps, step_values
from trtcas.rules.llm.decoder.hf_convert import trtllm_config as decoder_config
from trtcas.rules.llm.gemma2.convert import check_spec, plan_decoder
from trtcas.rules.llm.hf import HFCheckpoint, read_tensor
from trtcas.rules.llm.mixtral.config import ARCHITECTURE_NAME, RENORMALIZE, MixtralGeometry
from trtcas.rules.llm.spec import _CODE_OF_TARGET, ConvertError, ConvertSpec

# Attention, norms, RoPE and sliding window as the shared decoder reads them (Mistral's layout).
LAYOUT = HFLayout(ARCHITECTURE_NAME, windows="all")


def check_hf_config(config: Mapping, path: Path) -> None:
    """Refuse, in one line, a Mixtral config whose math the network does not implement: the
    shared decoder's checks (rope forms and types, silu, biases, windows), then the experts'."""
    check_decoder_config(LAYOUT, config, path)
    experts, top_k = config.get("num_local_experts"), config.get("num_experts_per_tok")
    for key, value in (("num_local_experts", experts), ("num_experts_per_tok", top_k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConvertError(f"{path}: HF config {key!r} must be a positive integer, got {value!r}")
    if top_k > experts:
        raise ConvertError(f"{path}: num_experts_per_tok={top_k} exceeds num_local_experts={experts}")


def trtllm_config(hf_config: Mapping, spec: ConvertSpec, checked: bool = False) -> dict:
    """TensorRT-LLM's ``LLaMAConfig`` for a Mixtral checkpoint: the shared decoder's, with
    ``hidden_act = swiglu``, the ``moe`` section and the mapping's ``moe_tp_size``/``moe_ep_size``."""
    config = decoder_config(LAYOUT, hf_config, spec, checked)
    config["hidden_act"] = "swiglu"
    config["moe"] = {"num_experts": hf_config["num_local_experts"], "top_k": hf_config["num_experts_per_tok"],
                     "normalization_mode": RENORMALIZE, "shared_expert_intermediate_size": 0}
    config["mapping"] = {**config["mapping"], "moe_tp_size": spec.tp, "moe_ep_size": 1}
    return config


def geometry(hf_config: Mapping, spec: ConvertSpec) -> MixtralGeometry:
    check_spec(hf_config, spec, ARCHITECTURE_NAME)
    return MixtralGeometry.from_config(trtllm_config(hf_config, spec, checked=True))


def _layer_steps(g: MixtralGeometry, spec: ConvertSpec, layer: int) -> list[ConvertStep]:
    hf, out = f"model.layers.{layer}", f"transformer.layers.{layer}"
    target, norm = _CODE_OF_TARGET[spec.dtype], (g.hidden,)
    moe = f"{hf}.block_sparse_moe"
    experts = range(g.experts)
    up_gate = tuple(f"{moe}.experts.{e}.{w}.weight" for w in ("w3", "w1") for e in experts)
    return [
        ConvertStep("replicate", (f"{hf}.input_layernorm.weight",), (norm,),
                    (TensorSlot(f"{out}.input_layernorm.weight", target, norm),)),
        *attention_steps(LAYOUT, g, spec, hf, out),
        ConvertStep("replicate", (f"{hf}.post_attention_layernorm.weight",), (norm,),
                    (TensorSlot(f"{out}.post_layernorm.weight", target, norm),)),
        ConvertStep("router", (f"{moe}.gate.weight",), ((g.experts, g.hidden),),
                    (TensorSlot(f"{out}.mlp.router.weight", "F32", (g.experts, g.hidden)),)),
        ConvertStep("experts_fc", up_gate, ((g.intermediate, g.hidden),) * len(up_gate),
                    (TensorSlot(f"{out}.mlp.fc.weight", target, (g.experts, 2 * g.expert_rows, g.hidden)),)),
        ConvertStep("experts_proj", tuple(f"{moe}.experts.{e}.w2.weight" for e in experts),
                    ((g.hidden, g.intermediate),) * g.experts,
                    (TensorSlot(f"{out}.mlp.proj.weight", target, (g.experts, g.hidden, g.expert_rows)),)),
    ]


def plan_rank(hf_config: Mapping, spec: ConvertSpec, rank: int) -> tuple[ConvertStep, ...]:
    """The steps that make ``rank{rank}.safetensors``, in file order; reads no tensor."""
    return plan_decoder(geometry(hf_config, spec), spec, rank, _layer_steps, "replicate",
                        bool(hf_config.get("tie_word_embeddings", False)))


def _expert_values(ckpt: HFCheckpoint, g: MixtralGeometry, tp_rank: int, step: ConvertStep) -> np.ndarray:
    """This rank's slice of every expert: ``[w3_r; w1_r]`` rows per expert, or ``w2_r`` columns."""
    part = slice(tp_rank * g.expert_rows, (tp_rank + 1) * g.expert_rows)
    if step.op == "experts_proj":
        return np.stack([read_tensor(ckpt, name, shape, cols=part) for name, shape in zip(step.sources, step.source_shapes)])
    sliced = [read_tensor(ckpt, name, shape, rows=part) for name, shape in zip(step.sources, step.source_shapes)]
    up, gate = sliced[:g.experts], sliced[g.experts:]
    return np.stack([np.concatenate([u, w]) for u, w in zip(up, gate)])


def run_step(ckpt: HFCheckpoint, hf_config: Mapping, spec: ConvertSpec, rank: int,
             step: ConvertStep) -> Iterator[tuple[str, np.ndarray]]:
    """Run one planned step: its (name, array) output, checked against the plan."""
    g = geometry(hf_config, spec)
    pos = rank_position(g, spec, rank)
    if step.op == "router":
        (name,), (shape,) = step.sources, step.source_shapes
        array = cast_to(read_tensor(ckpt, name, shape), "float32")
    elif step.op in ("experts_fc", "experts_proj"):
        array = cast_to(_expert_values(ckpt, g, pos.tp_rank, step), spec.dtype)
    else:
        array = cast_to(step_values(ckpt, g, spec, pos, step), spec.dtype)
    (planned,) = step.outputs
    produced = TensorSlot(planned.name, CODE_OF_DTYPE[array.dtype], tuple(array.shape))
    if produced != planned:
        raise AssertionError(f"conversion produced {produced}, planned {planned}")
    yield planned.name, array
