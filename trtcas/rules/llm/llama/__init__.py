"""``LlamaForCausalLM``: HF -> TensorRT-LLM conversion (``convert``), the one geometry both
sides share (``config``), and the network of a rank written with TensorRT's layers
(``network``). ``ARCHITECTURE`` is its entry in ``rules.llm.architectures.ARCHITECTURES``.
"""

from trtcas.rules.llm.architectures import Architecture
from trtcas.rules.llm.llama.convert import (
    check_hf_config,
    plan_rank,
    run_step,
    trtllm_config,
)
from trtcas.rules.llm.llama.network import build_decoder_network

ARCHITECTURE = Architecture(
    name="LlamaForCausalLM",
    check_hf_config=check_hf_config,
    plan_rank=plan_rank,
    run_step=run_step,
    trtllm_config=trtllm_config,
    build_network=build_decoder_network,
)
