"""The shared decoder: what Llama, Mistral, Qwen2, Qwen3 and Phi-3 have in common, written
once and parameterized (as TensorRT-LLM's ``layers/``), so an architecture is a folder that
states how its HF checkpoint differs (:class:`HFLayout`) plus one entry point.

- ``geometry``: :class:`DecoderGeometry`, the one description both converter and network read
  from a TensorRT-LLM ``config.json``; ``expected_weights`` / ``check_weights``.
- ``rope``: rotary tables (default, linear, llama3; partial rotary), other types refused.
- ``hf_config``: both HF config forms (hub ``rope_scaling``/``torch_dtype``, transformers 5
  ``rope_parameters``/``dtype``), sliding windows, refusals; :class:`HFLayout`.
- ``hf_convert``: HF -> TensorRT-LLM tensors per rank (names and sharding of TRT-LLM).
- ``network``: the prefill network; its blocks (``embedding``, ``rope_caches``,
  ``window_mask``, ``attention_block``, ``gated_mlp``, ``lm_head``) are public for
  architectures that compose them differently (Gemma2, Mixtral).
"""

from __future__ import annotations

from functools import partial

from trtcas.rules.llm.architectures import Architecture
from trtcas.rules.llm.decoder.hf_config import HFLayout, check_hf_config


def decoder_architecture(layout: HFLayout) -> Architecture:
    """The registry entry of an architecture the shared decoder converts and writes."""
    from trtcas.rules.llm.decoder import hf_convert
    from trtcas.rules.llm.decoder.network import build_decoder_network

    return Architecture(
        name=layout.architecture,
        check_hf_config=partial(check_hf_config, layout),
        plan_rank=partial(hf_convert.plan_rank, layout),
        run_step=partial(hf_convert.run_step, layout),
        trtllm_config=partial(hf_convert.trtllm_config, layout),
        build_network=partial(build_decoder_network, supported=(layout.architecture,)),
    )


__all__ = ["HFLayout", "decoder_architecture"]
