"""Tiny random Gemma 2 / Mixtral models made by transformers itself (config class,
``from_config``, ``save_pretrained``; seeded, no hub) and trtcas projects around them, for
tests/test_llm_gemma2.py and tests/test_llm_mixtral.py.

Sizes follow support/hf_models.py (hidden 64, 8 query heads over 2 KV heads, vocabulary 256)
so tp 1, 2 and 4 all split them (tp 4 replicates the KV heads).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from support.hf_models import SIZES, TARGET, last_logits, random_model

# fp32: issue 11's bar; half precision: every layer rounds (measured: fp16 ~2e-3, bf16 ~1.5e-2)
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


def make_model(config_class: str, out: Path, seed: int = 0, scale: dict | None = None, **fields):
    """Save a random model of ``config_class`` (e.g. ``Gemma2Config``) with ``SIZES`` and
    ``fields`` to ``out``; returns the float32 torch model (eval, eager attention). Norms get
    seeded noise (Gemma's ``1 + w`` starts at zeros); ``scale`` as ``random_model`` says."""
    import transformers

    config = getattr(transformers, config_class)(**{**SIZES, **fields})
    config._attn_implementation = "eager"
    return random_model(config, out, seed, noise=0.2, scale=scale)


def project(root: Path, name: str, config_class: str, scale: dict | None = None, **fields):
    """A project dir with ``hf/`` and ``trtcas.toml``; returns (root, torch model, reference logits)."""
    model = make_model(config_class, root / "hf", scale=scale, **fields)
    (root / "trtcas.toml").write_text(TARGET.format(name=name))
    return root, model, last_logits(model)


REMOVE = object()  # edit_hf_config: drop the field (None writes null)


def edit_hf_config(hf_dir: Path, **changes) -> None:
    """Change (a value, None for null) or remove (``REMOVE``) fields of a saved HF ``config.json``."""
    path = hf_dir / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is REMOVE:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: the tolerance measure of issue 11."""
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())
