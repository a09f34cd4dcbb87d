"""The checks issue 11 asks of every architecture, as functions the per-architecture test
files (tests/test_llm_gemma2.py, tests/test_llm_mixtral.py) call with their own models:
real TensorRT-RTX engine builds through ``trtcas.build``, ``trtcas.run`` against the
transformers forward pass, and a one-layer fine-tune that keeps every structural digest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

import trtcas
from trtcas.cas.content_store import ContentStore
from trtcas.config import load_config
from trtcas.errors import TrtcasError
from trtcas.graph.explain import explain_builds
from trtcas.graph.history import load_build
from trtcas.graph.rule import RULES

from support.hf_models import TARGET, TOKENS, last_logits
from support.tiny_hf import TOLERANCE, edit_hf_config, relative_error


def build(root: Path, cache: Path, *overrides: str):
    result = trtcas.build(root / "trtcas.toml", cache_dir=cache, overrides=overrides)
    assert result.ok, result.error
    return result


def run(root: Path, cache: Path, *overrides: str, tokens=TOKENS):
    return trtcas.run(root / "trtcas.toml", tokens, cache_dir=cache, overrides=list(overrides))


def engines_compute_the_model(root: Path, cache: Path, reference: np.ndarray, dtype: str, tp: int) -> float:
    """Build real engines for every rank, then ``trtcas run`` them; returns the error."""
    overrides = (f"model.dtype={dtype}", f"parallel.tp={tp}")
    result = build(root, cache, *overrides)
    assert {r.id for r in result.actions if r.rule == "trt.engine"} == {f"engine[rank{r}]" for r in range(tp)}
    for rank in range(tp):
        assert (root / "out" / "engines" / f"rank{rank}.engine").stat().st_size > 100_000
    got = run(root, cache, *overrides)
    assert got.ranks == tp and got.logits.shape == reference.shape
    error = relative_error(got.logits, reference)
    assert error <= TOLERANCE[dtype], (dtype, tp, error)
    if dtype == "float32":
        assert got.argmax == int(np.argmax(reference))
    return error


def explain_lines(project: Path, cache: Path, action: str) -> list[str]:
    store = ContentStore(cache)
    slug = load_config(project / "trtcas.toml").slug
    explained = {e.action_id: e for e in explain_builds(load_build(store.root, slug, "previous"),
                                                         load_build(store.root, slug), RULES, store.blobs)}
    return explained[action].lines


def finetune_keeps_structure(source: Path, project: Path, cache: Path, name: str, model, layer: int = 1) -> None:
    """tp 2: perturb every tensor of one layer, rebuild; every rank's network structure is
    unchanged, its weights changed, explain blames the weights only, and the run follows
    the fine-tuned model."""
    import torch

    shutil.copytree(source / "hf", project / "hf")
    (project / "trtcas.toml").write_text(TARGET.format(name=name).replace("tp = 1", "tp = 2"))
    first = build(project, cache)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if f"layers.{layer}." in param_name:
                param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(project / "hf")
    second = build(project, cache)
    for rank in (0, 1):
        before, after = (r.action(f"network[rank{rank}]").outputs for r in (first, second))
        assert before["structure"] == after["structure"] and before["weights"] != after["weights"]
    lines = explain_lines(project, cache, "engine[rank0]")
    assert any("weights" in line for line in lines), lines
    assert not any("network:" in line for line in lines), lines
    tuned = last_logits(model)
    assert relative_error(run(project, cache).logits, tuned) <= TOLERANCE["float32"]


def tp4_networks_compute_the_model(root: Path, cache: Path, reference: np.ndarray) -> None:
    """tp 4 (the KV heads replicated) through ``trtcas run`` only: networks, not engines."""
    got = run(root, cache, "parallel.tp=4")
    assert got.ranks == 4 and relative_error(got.logits, reference) <= TOLERANCE["float32"]


def refused_in_one_line(root: Path, cache: Path, scratch: Path, change: dict, message: str) -> None:
    """The project's model with ``change`` made to its HF config.json fails to plan, in one
    line containing ``message``."""
    shutil.copytree(root / "hf", scratch / "hf")
    (scratch / "trtcas.toml").write_text((root / "trtcas.toml").read_text())
    edit_hf_config(scratch / "hf", **change)
    try:
        trtcas.build(scratch / "trtcas.toml", cache_dir=cache)
    except TrtcasError as exc:
        assert message in str(exc) and "\n" not in str(exc), str(exc)
    else:
        raise AssertionError(f"{change} was not refused")
