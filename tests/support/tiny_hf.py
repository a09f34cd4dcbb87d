"""Tiny random Hugging Face models made by transformers itself (config class, ``from_config``,
``save_pretrained``; seeded, no hub), their logits, and the trtcas networks of their ranks
evaluated in numpy, for the architecture tests (tests/test_llm_<arch>.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_tiny_model(config, out: Path, seed: int = 0, norm_noise: float = 0.2) -> Path:
    """Build ``config``'s causal LM with random weights and save it (float32, one file).

    Norm weights are initialised to constants by transformers (ones, or zeros for Gemma's
    ``1 + w``), which would hide a norm read wrongly; they get seeded noise here.
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param) * norm_noise)
    model.save_pretrained(out)
    return Path(out)


def hf_logits(hf_dir: Path, ids: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """``[batch, seq, vocab]`` float64 logits of the saved model run by transformers (eager
    attention: the reference implementation of each architecture)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, dtype),
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        return model(torch.from_numpy(ids.astype(np.int64))).logits.float().numpy().astype(np.float64)


def rank_networks(backend, hf_dir: Path, out: Path, spec, batch: int, seq: int, **options) -> list:
    """Convert ``hf_dir`` as ``spec`` asks, read the checkpoint back and write every rank's
    network through the checkpoint's registered architecture (as ``trtcas build`` does)."""
    from trtcas.rules.llm.architectures import architecture
    from trtcas.rules.llm.checkpoint import read_rank_weights, read_trtllm_checkpoint
    from trtcas.rules.llm.convert import write_checkpoint

    write_checkpoint(hf_dir, spec, out)
    ckpt = read_trtllm_checkpoint(out)
    arch = architecture(ckpt.config["architecture"])
    return [arch.build_network(backend, ckpt.config, r, read_rank_weights(ckpt, r), batch, seq,
                               log_severity="error", **options) for r in range(spec.tp)]


def evaluate_logits(backend, nets, ids: np.ndarray) -> list[np.ndarray]:
    """Every rank's logits (float64), collectives simulated across the ranks."""
    from trtcas.rules.evaluate import evaluate_ranks

    outs = evaluate_ranks(backend.trt, [n.network for n in nets], {"input_ids": ids}, [n.constants for n in nets])
    return [o["logits"].astype(np.float64) for o in outs]


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: the tolerance measure of issue 11."""
    return float(np.abs(got - want).max() / np.abs(want).max())
