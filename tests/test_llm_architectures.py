"""Every architecture of the shared decoder, made by transformers, built by ``trtcas build``
into real TensorRT-RTX engines (CPU-only AOT), and proven by ``trtcas run`` against the
model's own forward pass.

Tolerances (max abs logit error over max |logit| of the float32 transformers model):
- float32 targets: 1e-4, and the same argmax (measured ~1e-6);
- float16 targets: 5e-3 (measured 4e-4 .. 1.2e-3: every layer rounds to 11 bits);
- bfloat16 targets: 3e-2 (measured 3e-3 .. 7e-3: 8 bits of mantissa, and the weights rounded too).
tp 1 and 2 build engines; tp 4 (8 query heads over 2 KV heads: the KV heads replicated) is
evaluated only (``trtcas run`` builds networks, not engines), which keeps the suite fast.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorrt_rtx", reason="these tests exercise TensorRT-RTX (pip install tensorrt-rtx-cu13)")
pytest.importorskip("transformers", reason="the verify extra (torch, transformers) is needed")

import trtcas  # noqa: E402
from trtcas.cas.content_store import ContentStore  # noqa: E402
from trtcas.config import load_config  # noqa: E402
from trtcas.graph.explain import explain_builds  # noqa: E402
from trtcas.graph.history import load_build  # noqa: E402
from trtcas.graph.rule import RULES  # noqa: E402

from support.hf_models import MODELS, TARGET, TOKENS, finetune_layer, last_logits, make_model  # noqa: E402

TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 3e-2}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, tmp_path_factory):
    """(architecture, project dir with hf/ and trtcas.toml, torch model, reference logits)."""
    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    torch_model = make_model(arch, root / "hf")
    (root / "trtcas.toml").write_text(TARGET.format(name=arch))
    return arch, root, torch_model, last_logits(torch_model, TOKENS)


def _build(root: Path, cache: Path, *overrides: str):
    result = trtcas.build(root / "trtcas.toml", cache_dir=cache, overrides=overrides)
    assert result.ok, result.error
    return result


def _error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


@pytest.mark.parametrize("tp", [1, 2])
def test_float32_engines_build_and_compute_the_model(model, cache, tp):
    arch, root, _, reference = model
    result = _build(root, cache, f"parallel.tp={tp}")
    assert {r.id for r in result.actions if r.rule == "trt.engine"} == {f"engine[rank{r}]" for r in range(tp)}
    for rank in range(tp):
        assert (root / "out" / "engines" / f"rank{rank}.engine").stat().st_size > 100_000
    run = trtcas.run(root / "trtcas.toml", TOKENS, cache_dir=cache, overrides=[f"parallel.tp={tp}"])
    assert run.ranks == tp and run.logits.shape == (256,)
    assert _error(run.logits, reference) <= TOLERANCE["float32"], arch
    assert run.argmax == int(np.argmax(reference))


@pytest.mark.parametrize("dtype, tp", [("bfloat16", 2), ("float16", 1)])
def test_half_precision_engines_build_and_compute_the_model(model, cache, dtype, tp):
    arch, root, _, reference = model
    _build(root, cache, f"model.dtype={dtype}", f"parallel.tp={tp}")
    run = trtcas.run(root / "trtcas.toml", TOKENS, cache_dir=cache, overrides=[f"model.dtype={dtype}", f"parallel.tp={tp}"])
    assert _error(run.logits, reference) <= TOLERANCE[dtype], arch


def test_tp4_networks_compute_the_model(model, cache):
    arch, root, _, reference = model
    run = trtcas.run(root / "trtcas.toml", TOKENS, cache_dir=cache, overrides=["parallel.tp=4"])
    assert run.ranks == 4
    assert _error(run.logits, reference) <= TOLERANCE["float32"], arch


def test_int8_weight_only_networks_compute_the_model(model, cache):
    arch, root, _, reference = model
    run = trtcas.run(root / "trtcas.toml", TOKENS, cache_dir=cache,
                     overrides=["parallel.tp=2", "model.quantization=W8A16", "model.dtype=float16"])
    assert _error(run.logits, reference) <= 5e-2, arch  # per-channel int8 weights


def test_a_finetune_of_one_layer_keeps_every_structure_and_explain_says_weights(model, cache, tmp_path):
    arch, root, torch_model, _ = model
    project = tmp_path / "project"
    shutil.copytree(root / "hf", project / "hf")
    (project / "trtcas.toml").write_text(TARGET.format(name=f"{arch}-finetune").replace("tp = 1", "tp = 2"))
    first = _build(project, cache)
    tuned = make_model(arch, tmp_path / "scratch")  # the same seed: the same model, then one layer moves
    finetune_layer(tuned, project / "hf", layer=1)
    second = _build(project, cache)
    for rank in (0, 1):
        before, after = (r.action(f"network[rank{rank}]").outputs for r in (first, second))
        assert before["structure"] == after["structure"] and before["weights"] != after["weights"]
    store = ContentStore(cache)
    slug = load_config(project / "trtcas.toml").slug
    explained = {e.action_id: e for e in explain_builds(load_build(store.root, slug, "previous"),
                                                         load_build(store.root, slug), RULES, store.blobs)}
    lines = explained["engine[rank0]"].lines
    assert any(line.startswith("input `weights` changed") for line in lines), lines
    assert not any("network:" in line for line in lines), lines  # no layer or attribute differs
    assert trtcas.run(project / "trtcas.toml", TOKENS, cache_dir=cache).argmax == int(
        np.argmax(last_logits(tuned, TOKENS)))


@pytest.mark.parametrize("model", ["Qwen2ForCausalLM"], indirect=True)  # one is enough for the command line
def test_trtcas_run_prints_json(model, cache):
    arch, root, _, reference = model
    out = subprocess.run([str(Path(sys.executable).parent / "trtcas"), "run", str(root / "trtcas.toml"), "--tokens",
                          ",".join(map(str, TOKENS)), "--json", "--set", "parallel.tp=2", "--cache-dir", str(cache)],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert set(data) == {"logits", "argmax", "ranks"} and data["ranks"] == 2 and len(data["logits"]) == 256
    assert _error(np.array(data["logits"]), reference) <= TOLERANCE["float32"]
    assert data["argmax"] == int(np.argmax(reference))
