"""MixtralForCausalLM, made by transformers, built by ``trtcas build`` into real TensorRT-RTX
engines (CPU-only AOT) and proven by ``trtcas run`` against the model's own forward pass.

The tiny model has 4 experts with top-2 routing, 8 query heads over 2 KV heads, random norms;
a second model adds a sliding window of 3 (7 tokens). The MoE is written densely (every
expert on every token, weighted by its renormalized top-k gate; see
``rules/llm/mixtral/network.py``), so agreeing with transformers' sparse dispatch also proves
the unselected experts get a gate of exactly zero. Tolerances as support/tiny_hf.py states.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tensorrt_rtx", reason="these tests exercise TensorRT-RTX (pip install tensorrt-rtx-cu13)")
pytest.importorskip("transformers", reason="the verify extra (torch, transformers) is needed")

import trtcas  # noqa: E402
from trtcas.errors import TrtcasError  # noqa: E402

from support.arch_checks import (  # noqa: E402
    build,
    engines_compute_the_model,
    finetune_keeps_structure,
    refused_in_one_line,
    run,
    tp4_networks_compute_the_model,
)
from support.tiny_hf import TOLERANCE, last_logits, make_model, project, relative_error  # noqa: E402

MIXTRAL = dict(num_local_experts=4, num_experts_per_tok=2)
# a larger router than transformers' init, so the routing is decisive and differs per token
SCALE = {"gate.weight": 20.0}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    return project(tmp_path_factory.mktemp("mixtral"), "mixtral", "MixtralConfig", scale=SCALE, **MIXTRAL)


@pytest.mark.parametrize("dtype, tp", [("float32", 1), ("float32", 2), ("bfloat16", 2), ("bfloat16", 1),
                                       ("float16", 1)])
def test_engines_build_and_compute_the_model(mixtral, cache, dtype, tp):
    root, _, reference = mixtral
    engines_compute_the_model(root, cache, reference, dtype, tp)


def test_tp4_networks_compute_the_model(mixtral, cache):
    root, _, reference = mixtral
    tp4_networks_compute_the_model(root, cache, reference)


def test_a_sliding_window_is_computed(cache, tmp_path):
    root, _, reference = project(tmp_path / "window", "mixtral-window", "MixtralConfig", scale=SCALE,
                                 sliding_window=3, **MIXTRAL)
    engines_compute_the_model(root, cache, reference, "float32", 2)
    without = last_logits(make_model("MixtralConfig", tmp_path / "nowindow", scale=SCALE, **MIXTRAL))
    assert relative_error(without, reference) > 100 * TOLERANCE["float32"]  # the window matters here


@pytest.mark.parametrize("top_k", [1, 3])
def test_other_top_k_are_computed(cache, tmp_path, top_k):
    fields = {**MIXTRAL, "num_experts_per_tok": top_k}
    root, _, reference = project(tmp_path, f"mixtral-top{top_k}", "MixtralConfig", scale=SCALE, **fields)
    got = run(root, cache, "parallel.tp=2")
    assert relative_error(got.logits, reference) <= TOLERANCE["float32"]
    assert got.argmax == int(np.argmax(reference))


def test_routing_matters(mixtral, tmp_path):
    """Top-2 of this model differs from top-3 well beyond the tolerance: the test above
    could not pass with every expert weighted equally or a wrong selection."""
    _, _, reference = mixtral
    dense = last_logits(make_model("MixtralConfig", tmp_path, scale=SCALE, **{**MIXTRAL, "num_experts_per_tok": 3}))
    assert relative_error(dense, reference) > 100 * TOLERANCE["float32"]


def test_the_checkpoint_stacks_experts_as_tensorrt_llm_does(mixtral, cache):
    """Router float32 ``[experts, hidden]``; ``fc`` = ``[w3; w1]`` per expert, split by rows per
    rank; ``proj`` = ``w2`` split by columns; the mapping says moe_tp_size = tp."""
    from safetensors.numpy import load_file

    root, model, _ = mixtral
    build(root, cache, "parallel.tp=2")
    config = json.loads((root / "out" / "checkpoint" / "config.json").read_text())
    assert config["moe"]["num_experts"] == 4 and config["moe"]["top_k"] == 2
    assert config["mapping"]["moe_tp_size"] == 2 and config["mapping"]["moe_ep_size"] == 1
    hf = load_file(root / "hf" / "model.safetensors")
    p = "model.layers.1.block_sparse_moe"
    for rank in (0, 1):
        tensors = load_file(root / "out" / "checkpoint" / f"rank{rank}.safetensors")
        rows = slice(rank * 64, (rank + 1) * 64)
        router = tensors["transformer.layers.1.mlp.router.weight"]
        assert router.dtype == np.float32 and np.array_equal(router, hf[f"{p}.gate.weight"])
        fc, proj = tensors["transformer.layers.1.mlp.fc.weight"], tensors["transformer.layers.1.mlp.proj.weight"]
        assert fc.shape == (4, 128, 64) and proj.shape == (4, 64, 64)
        for e in range(4):
            assert np.array_equal(fc[e, :64], hf[f"{p}.experts.{e}.w3.weight"][rows])
            assert np.array_equal(fc[e, 64:], hf[f"{p}.experts.{e}.w1.weight"][rows])
            assert np.array_equal(proj[e], hf[f"{p}.experts.{e}.w2.weight"][:, rows])


def test_a_finetune_of_one_layer_keeps_every_structure_and_explain_says_weights(mixtral, cache, tmp_path):
    root, model, _ = mixtral
    finetune_keeps_structure(root, tmp_path / "project", cache, "mixtral-finetune", model)


@pytest.mark.parametrize("change, message", [
    (dict(num_experts_per_tok=5), "num_experts_per_tok=5 exceeds num_local_experts=4"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}), "dynamic"),
    (dict(num_local_experts=0), "num_local_experts"),
])
def test_config_fields_that_change_the_math_are_refused_in_one_line(mixtral, cache, tmp_path, change, message):
    refused_in_one_line(mixtral[0], cache, tmp_path, change, message)


def test_quantization_is_refused_in_one_line(mixtral, cache):
    root, _, _ = mixtral
    with pytest.raises(TrtcasError) as info:
        build(root, cache, 'model.quantization="W8A16"')
    assert "not supported for MixtralForCausalLM" in str(info.value) and "\n" not in str(info.value)


def test_a_tensorrt_llm_checkpoint_target_computes_the_model(mixtral, cache, tmp_path):
    """The converted checkpoint, given back as ``[model] checkpoint``, builds and runs the same."""
    import shutil

    root, _, reference = mixtral
    build(root, cache, "parallel.tp=2")
    shutil.copytree(root / "out" / "checkpoint", tmp_path / "ckpt")
    (tmp_path / "trtcas.toml").write_text((root / "trtcas.toml").read_text().replace('hf = "hf"', 'checkpoint = "ckpt"')
                                          .replace("tp = 1", "tp = 2"))
    build(tmp_path, cache)
    assert relative_error(run(tmp_path, cache).logits, reference) <= TOLERANCE["float32"]


def test_a_checkpoint_with_expert_parallelism_is_refused_in_one_line(mixtral, cache, tmp_path):
    import json
    import shutil

    root, _, _ = mixtral
    build(root, cache, "parallel.tp=2")
    shutil.copytree(root / "out" / "checkpoint", tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["mapping"].update(moe_tp_size=1, moe_ep_size=2)
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    (tmp_path / "trtcas.toml").write_text((root / "trtcas.toml").read_text().replace('hf = "hf"', 'checkpoint = "ckpt"')
                                          .replace("tp = 1", "tp = 2"))
    result = trtcas.build(tmp_path / "trtcas.toml", cache_dir=cache)
    assert not result.ok and "moe_ep_size=2" in result.error and "\n" not in result.error


def test_a_vocabulary_tp_does_not_divide_is_padded_and_cut(cache, tmp_path):
    """vocab 254 at tp 4: each rank's lm_head is padded to 64 rows; the logits are 254 wide."""
    root, _, reference = project(tmp_path, "mixtral-vocab", "MixtralConfig", scale=SCALE, vocab_size=254, **MIXTRAL)
    got = run(root, cache, "parallel.tp=4")
    assert got.logits.shape == (254,) and relative_error(got.logits, reference) <= TOLERANCE["float32"]
