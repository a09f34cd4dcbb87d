"""Tiny random decoder models made by transformers itself (config class + ``from_config`` +
``save_pretrained``, seeded; no hub), and their forward pass: what ``trtcas run`` must match.

Every model has hidden 64, 2 layers, 8 query heads over 2 KV heads and a vocabulary of 256,
plus the feature its architecture adds over Llama (see ``MODELS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

SIZES = dict(hidden_size=64, intermediate_size=128, num_attention_heads=8, num_key_value_heads=2,
             num_hidden_layers=2, vocab_size=256, max_position_embeddings=64)

TOKENS = [3, 17, 250, 9, 42, 7, 128]  # 7 tokens: a sliding window of 3 cuts
# The project every model test builds (tp and dtype are set per build with overrides).
TARGET = """
[target]
name = "{name}"
[model]
hf = "hf"
dtype = "float32"
max_batch_size = 1
max_seq_len = 8
[parallel]
tp = 1
[engine]
targets = ["sm86"]
"""

# architecture -> (transformers config class name, what it adds over SIZES)
MODELS = {
    "LlamaForCausalLM": ("LlamaConfig", dict(
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16})),
    "MistralForCausalLM": ("MistralConfig", dict(sliding_window=3)),
    "Qwen2ForCausalLM": ("Qwen2Config", dict(tie_word_embeddings=True)),
    "Qwen3ForCausalLM": ("Qwen3Config", dict(head_dim=16, use_sliding_window=True, sliding_window=3,
                                             max_window_layers=1)),  # layer 1 slides, layer 0 does not
    "Phi3ForCausalLM": ("Phi3Config", dict(pad_token_id=0, eos_token_id=1, bos_token_id=1, sliding_window=5,
                                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                            "partial_rotary_factor": 0.5})),
}


def random_model(config, out: Path, seed: int = 0, noise: float = 0.1,
                 noisy: Callable[[str], bool] = lambda name: "norm" in name, scale: dict | None = None,
                 dtype: str = "float32"):
    """Save a seeded random model of ``config`` to ``out``; returns it (eval, float32).

    transformers starts norms at constants and biases at zero, which would hide one read
    wrongly: parameters ``noisy`` picks get seeded noise. ``scale`` multiplies the parameters
    whose name contains a key (initial weights are small: soft-caps or routing would not bite)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if noisy(name):
                param.add_(torch.randn_like(param) * noise)
            for part, factor in (scale or {}).items():
                if part in name:
                    param.mul_(factor)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    return model.float()


def make_model(architecture: str, out: Path, seed: int = 0, dtype: str = "float32", **changes):
    """Save a random ``architecture`` model of ``MODELS`` to ``out``; returns the torch model."""
    import transformers

    config_class, extra = MODELS[architecture]
    config = getattr(transformers, config_class)(**{**SIZES, **extra, **changes})
    config.architectures = [architecture]
    model = random_model(config, out, seed, noisy=lambda name: "norm" in name or name.endswith(".bias"), dtype=dtype)
    assert type(model).__name__ == architecture
    return model


def finetune_layer(model, out: Path, layer: int, dtype: str = "float32") -> None:
    """Perturb every tensor of one decoder layer and save the model again to ``out``."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if f"layers.{layer}." in name:
                param.add_(torch.randn_like(param) * 0.01)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    model.float()


def last_logits(model, tokens: list[int] = TOKENS) -> np.ndarray:
    """The model's float32 logits at the last of ``tokens``."""
    import torch

    with torch.no_grad():
        out = model(torch.tensor([tokens], dtype=torch.int64)).logits
    return out[0, -1].double().numpy()
