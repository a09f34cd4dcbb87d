"""``Gemma2ForCausalLM``: HF -> TensorRT-LLM conversion (``convert``), the geometry both sides
share (``config``), and a rank's network in TensorRT layers (``network``). ``ARCHITECTURE`` is
its entry in ``rules.llm.architectures.ARCHITECTURES``.
"""

from trtcas.rules.llm.architectures import Architecture
from trtcas.rules.llm.gemma2.convert import check_hf_config, plan_rank, run_step, trtllm_config
from trtcas.rules.llm.gemma2.network import build_gemma2_network

ARCHITECTURE = Architecture(
    name="Gemma2ForCausalLM",
    check_hf_config=check_hf_config,
    plan_rank=plan_rank,
    run_step=run_step,
    trtllm_config=trtllm_config,
    build_network=build_gemma2_network,
)
