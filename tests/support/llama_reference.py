"""A plain numpy Llama forward pass from HF weights: the reference the evaluated decoder
networks are compared with when transformers is not installed (and a cross-check of it).

Written from the Llama definition (RMSNorm, RoPE on rotated halves, GQA causal attention,
SiLU-gated MLP), in float64, independent of trtcas's network writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def load_hf(directory) -> tuple[dict, dict]:
    """(config, float64 weights) of a single-file HF checkpoint."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    weights = {k: v.astype(np.float64) for k, v in load_file(directory / "model.safetensors").items()}
    return config, weights


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, positions, theta):
    half = x.shape[-1] // 2
    inv = 1.0 / theta ** (np.arange(half) * 2 / x.shape[-1])
    angle = positions[:, None] * inv[None, :]
    cos, sin = np.cos(angle), np.sin(angle)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def llama_logits(config: dict, w: dict, ids: np.ndarray) -> np.ndarray:
    """``[batch, seq, vocab]`` logits of ``ids [batch, seq]``."""
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hidden, eps, theta = config["hidden_size"], config["rms_norm_eps"], config["rope_theta"]
    d = hidden // heads
    b, s = ids.shape
    x = w["model.embed_tokens.weight"][ids]
    positions = np.arange(s, dtype=np.float64)
    causal = np.tril(np.ones((s, s), bool))
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        h = _rms(x, w[f"{p}.input_layernorm.weight"], eps)
        q = (h @ w[f"{p}.self_attn.q_proj.weight"].T).reshape(b, s, heads, d).transpose(0, 2, 1, 3)
        k = (h @ w[f"{p}.self_attn.k_proj.weight"].T).reshape(b, s, kv, d).transpose(0, 2, 1, 3)
        v = (h @ w[f"{p}.self_attn.v_proj.weight"].T).reshape(b, s, kv, d).transpose(0, 2, 1, 3)
        q, k = _rope(q, positions, theta), _rope(k, positions, theta)
        k, v = np.repeat(k, heads // kv, axis=1), np.repeat(v, heads // kv, axis=1)
        scores = np.where(causal, q @ k.transpose(0, 1, 3, 2) / np.sqrt(d), -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, heads * d)
        x = x + context @ w[f"{p}.self_attn.o_proj.weight"].T
        h = _rms(x, w[f"{p}.post_attention_layernorm.weight"], eps)
        gate = h @ w[f"{p}.mlp.gate_proj.weight"].T
        up = h @ w[f"{p}.mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[f"{p}.mlp.down_proj.weight"].T
    x = _rms(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T
