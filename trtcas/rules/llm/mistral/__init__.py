"""``MistralForCausalLM``: Llama's layout with ``sliding_window`` on every layer (written as
a window mask where it is shorter than ``max_seq_len``, keyed through the config either way)."""

from trtcas.rules.llm.decoder import HFLayout, decoder_architecture

ARCHITECTURE = decoder_architecture(HFLayout("MistralForCausalLM", windows="all"))
