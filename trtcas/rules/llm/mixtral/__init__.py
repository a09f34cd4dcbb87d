"""``MixtralForCausalLM``: HF -> TensorRT-LLM conversion (``convert``), the geometry both sides
share (``config``), and a rank's network in TensorRT layers with a dense mixture of experts
(``network``). ``ARCHITECTURE`` is its entry in ``rules.llm.architectures.ARCHITECTURES``.
"""

from trtcas.rules.llm.architectures import Architecture
from trtcas.rules.llm.mixtral.convert import check_hf_config, plan_rank, run_step, trtllm_config
from trtcas.rules.llm.mixtral.network import build_mixtral_network

ARCHITECTURE = Architecture(
    name="MixtralForCausalLM",
    check_hf_config=check_hf_config,
    plan_rank=plan_rank,
    run_step=run_step,
    trtllm_config=trtllm_config,
    build_network=build_mixtral_network,
)
