"""``Qwen2ForCausalLM``: q/k/v projections with biases (split with their heads), often tied
embeddings; sliding windows as ``use_sliding_window``/``max_window_layers`` or ``layer_types``."""

from trtcas.rules.llm.decoder import HFLayout, decoder_architecture

ARCHITECTURE = decoder_architecture(HFLayout("Qwen2ForCausalLM", qkv_bias=True, windows="qwen"))
