"""``LlamaForCausalLM`` (Llama 2/3, incl. Llama 3's ``llama3`` rope scaling and tied
embeddings): the shared decoder with Llama's HF layout. ``ARCHITECTURE`` is its entry in
``rules.llm.architectures.ARCHITECTURES``."""

from trtcas.rules.llm.decoder import HFLayout, decoder_architecture

ARCHITECTURE = decoder_architecture(HFLayout("LlamaForCausalLM"))
