"""Gemma2ForCausalLM, made by transformers, built by ``trtcas build`` into real TensorRT-RTX
engines (CPU-only AOT) and proven by ``trtcas run`` against the model's own forward pass.

The tiny model turns every Gemma 2 feature on where it bites: 8 query heads over 2 KV heads
of head_dim 16 (head_dim * heads != hidden), ``query_pre_attn_scalar`` 24 (not head_dim),
attention and final soft-caps small enough to saturate, a sliding window of 3 on the even
layers (7 tokens), tied embeddings scaled by sqrt(hidden), random ``1 + w`` norms.
Tolerances as support/tiny_hf.py states them (fp32 1e-4 and the same argmax).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorrt_rtx", reason="these tests exercise TensorRT-RTX (pip install tensorrt-rtx-cu13)")
pytest.importorskip("transformers", reason="the verify extra (torch, transformers) is needed")

from trtcas.errors import TrtcasError  # noqa: E402

from support.arch_checks import (  # noqa: E402
    build,
    engines_compute_the_model,
    finetune_keeps_structure,
    refused_in_one_line,
    run,
    tp4_networks_compute_the_model,
)
from support.tiny_hf import REMOVE, TOLERANCE, edit_hf_config, last_logits, make_model, project, relative_error  # noqa: E402

# equal caps on purpose: the attention scores (rank 5) and the logits (rank 3) share no constant
GEMMA2 = dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=3, attn_logit_softcapping=2.0,
              final_logit_softcapping=2.0)
# larger q/k and embeddings than transformers' init, so scores and logits reach the soft-caps
SCALE = {"q_proj": 8.0, "k_proj": 8.0, "embed_tokens": 10.0}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return project(tmp_path_factory.mktemp("gemma2"), "gemma2", "Gemma2Config", scale=SCALE, **GEMMA2)


@pytest.mark.parametrize("dtype, tp", [("float32", 1), ("float32", 2), ("bfloat16", 2), ("bfloat16", 1),
                                       ("float16", 1)])
def test_engines_build_and_compute_the_model(gemma, cache, dtype, tp):
    root, _, reference = gemma
    engines_compute_the_model(root, cache, reference, dtype, tp)


def test_tp4_networks_compute_the_model(gemma, cache):
    root, _, reference = gemma
    tp4_networks_compute_the_model(root, cache, reference)


def test_every_gemma2_feature_is_checked(gemma, tmp_path):
    """The model above is sensitive to each feature: turning one off moves its logits far
    beyond the tolerance, so agreeing with it proves the feature is computed."""
    _, _, reference = gemma
    for change in (dict(sliding_window=64), dict(attn_logit_softcapping=None), dict(final_logit_softcapping=None),
                   dict(query_pre_attn_scalar=16)):
        variant = last_logits(make_model("Gemma2Config", tmp_path / str(change), scale=SCALE, **{**GEMMA2, **change}))
        assert relative_error(variant, reference) > 100 * TOLERANCE["float32"], change


def test_a_finetune_of_one_layer_keeps_every_structure_and_explain_says_weights(gemma, cache, tmp_path):
    root, model, _ = gemma
    finetune_keeps_structure(root, tmp_path / "project", cache, "gemma2-finetune", model)


def test_a_hub_config_reads_the_same(gemma, cache, tmp_path):
    """A hub-style config.json (``rope_theta``, ``hidden_act``, ``torch_dtype``, no
    ``layer_types``: Gemma 2 alternates sliding and global layers) converts to the same model."""
    import shutil

    root, _, reference = gemma
    shutil.copytree(root, tmp_path / "hub", ignore=shutil.ignore_patterns("out"))
    edit_hf_config(tmp_path / "hub" / "hf", rope_parameters=REMOVE, rope_theta=10000.0, layer_types=REMOVE,
                   hidden_act="gelu_pytorch_tanh", dtype=REMOVE, torch_dtype="float32")
    assert relative_error(run(tmp_path / "hub", cache).logits, reference) <= TOLERANCE["float32"]


@pytest.mark.parametrize("change, message", [
    (dict(hidden_activation="gelu"), "hidden_activation 'gelu'"),
    (dict(use_bidirectional_attention=True), "use_bidirectional_attention"),
    (dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}), "yarn"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(layer_types=["sliding_attention", "chunked_attention"]), "chunked_attention"),
    (dict(attn_logit_softcapping=-1), "attn_logit_softcapping"),
])
def test_config_fields_that_change_the_math_are_refused_in_one_line(gemma, cache, tmp_path, change, message):
    refused_in_one_line(gemma[0], cache, tmp_path, change, message)


def test_quantization_is_refused_in_one_line(gemma, cache):
    root, _, _ = gemma
    with pytest.raises(TrtcasError) as info:
        build(root, cache, 'model.quantization="W8A16"')
    assert "not supported for Gemma2ForCausalLM" in str(info.value) and "\n" not in str(info.value)


def test_the_window_and_the_soft_caps_are_keyed(gemma, cache, tmp_path):
    """Changing the window changes the network (its mask), turning a soft-cap off changes its
    structure; the unchanged model hits the cache."""
    import shutil

    root, _, _ = gemma
    keys = {}
    for label, change in (("base", {}), ("window", dict(sliding_window=2)), ("nocap", dict(final_logit_softcapping=None))):
        shutil.copytree(root / "hf", tmp_path / label / "hf")
        (tmp_path / label / "trtcas.toml").write_text((root / "trtcas.toml").read_text())
        edit_hf_config(tmp_path / label / "hf", **change)
        result = build(tmp_path / label, cache)
        keys[label] = (result.action("network[rank0]").key, result.action("network[rank0]").outputs["structure"],
                       result.action("engine[rank0]").key)
    assert keys["window"][0] != keys["base"][0] and keys["window"][2] != keys["base"][2]
    assert keys["nocap"][1] != keys["base"][1]
    again = build(tmp_path / "base", cache)
    assert again.action("engine[rank0]").status == "cached"
    assert np.isfinite(run(tmp_path / "base", cache).logits).all()


def test_a_checkpoint_without_windows_gets_gemma2s(gemma, cache):
    """TensorRT-LLM's own Gemma 2 checkpoints carry no ``sliding_window`` (its runtime sets
    the window): they get Gemma 2's 4096 on the even layers; ``null`` turns windows off."""
    import json

    from trtcas.rules.llm.gemma2.config import Gemma2Geometry

    root, _, _ = gemma
    build(root, cache)
    config = json.loads((root / "out" / "checkpoint" / "config.json").read_text())
    assert config["sliding_window"] == 3 and config["layer_types"][:2] == ["sliding_attention", "full_attention"]
    trtllm_written = {k: v for k, v in config.items() if k not in ("sliding_window", "layer_types")}
    assert Gemma2Geometry.from_config(trtllm_written).windows == (4096, None)
    assert Gemma2Geometry.from_config({**trtllm_written, "sliding_window": None}).windows == ()
    assert Gemma2Geometry.from_config(config).windows == (3, None)


def test_a_tensorrt_llm_checkpoint_target_computes_the_model(gemma, cache, tmp_path):
    """The converted checkpoint, given back as ``[model] checkpoint``, builds and runs the same."""
    import shutil

    root, _, reference = gemma
    build(root, cache, "parallel.tp=2")
    shutil.copytree(root / "out" / "checkpoint", tmp_path / "ckpt")
    (tmp_path / "trtcas.toml").write_text((root / "trtcas.toml").read_text().replace('hf = "hf"', 'checkpoint = "ckpt"')
                                          .replace("tp = 1", "tp = 2"))
    build(tmp_path, cache)
    assert relative_error(run(tmp_path, cache).logits, reference) <= TOLERANCE["float32"]


def test_a_vocab_parallel_embedding_computes_the_model(gemma, cache):
    """TensorRT-LLM shards Gemma's embedding by vocabulary rows at tp > 1; so can trtcas."""
    root, _, reference = gemma
    got = run(root, cache, "parallel.tp=2", "model.vocab_parallel=true")
    assert relative_error(got.logits, reference) <= TOLERANCE["float32"]
