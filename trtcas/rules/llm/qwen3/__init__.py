"""``Qwen3ForCausalLM``: per-head RMSNorm of q and k (``q_norm``/``k_norm``) before RoPE, an
explicit ``head_dim``; no q/k/v biases."""

from trtcas.rules.llm.decoder import HFLayout, decoder_architecture

ARCHITECTURE = decoder_architecture(HFLayout("Qwen3ForCausalLM", qk_norm=True, windows="qwen"))
