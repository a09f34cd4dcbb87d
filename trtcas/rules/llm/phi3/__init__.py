"""``Phi3ForCausalLM``: fused ``qkv_proj`` ([q; k; v] rows) and ``gate_up_proj`` ([gate; up]
rows) in the HF checkpoint, split into TensorRT-LLM's ``qkv`` and ``fc``/``gate``; partial
rotary (``partial_rotary_factor``) and ``sliding_window``. ``longrope`` scaling is refused."""

from trtcas.rules.llm.decoder import HFLayout, decoder_architecture

ARCHITECTURE = decoder_architecture(HFLayout("Phi3ForCausalLM", fused_qkv=True, fused_gate_up=True, windows="all"))
