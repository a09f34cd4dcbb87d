"""The action keys of the examples' targets are pinned: a refactor that changes a key
silently invalidates every user's cache (or, worse, makes two different builds share one).

The fingerprint is fixed so the keys do not depend on this machine; the TensorRT-RTX version
is the one the examples are built with. If a rule's behaviour changes on purpose, bump its
version, regenerate tests/data/golden_keys.json and say so in the commit message.
"""

import json
import shutil
from pathlib import Path

import pytest

import trtcas

from make_models import write_models
from make_tiny_llama import make_tiny_llama

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_keys.json").read_text())
EXAMPLES = Path(__file__).parent.parent / "examples"
FIXED_FINGERPRINT = {
    "tensorrt_version": None, "tensorrt_rtx_version": "1.7.1.116", "tensorrt_llm_version": None,
    "cuda_runtime_version": None, "cuda_driver_version": None, "gpu_name": None, "gpu_sm": None,
    "gpu_memory_mib": None, "plugins": [], "os": "Linux", "machine": "x86_64", "python": "3.11",
}


MODEL_FILE = {"conv": "conv_block.onnx", "transformer": "transformer_block.onnx"}


def _example(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(EXAMPLES / name, target)
    if name == "llm":
        make_tiny_llama(target / "hf", seed=0)
    else:
        write_models(tmp_path / "models")
        shutil.copy(tmp_path / "models" / MODEL_FILE[name], target / "model.onnx")
    return target / "trtcas.toml"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_example_keys_are_pinned(tmp_path, name):
    result = trtcas.build(_example(tmp_path, name), cache_dir=tmp_path / "cache", fingerprint_overrides=FIXED_FINGERPRINT)
    assert result.ok, result.to_json()
    assert {record.id: record.key for record in result.actions} == GOLDEN[name]


def _keys(target: Path, cache: Path) -> dict[str, tuple[str, str]]:
    result = trtcas.build(target, cache_dir=cache, fingerprint_overrides=FIXED_FINGERPRINT)
    assert result.ok, result.to_json()
    return {record.id: (record.key, record.status) for record in result.actions}


def test_files_no_rule_reads_beside_a_checkpoint_are_in_no_key(tmp_path):
    """A HF snapshot's README, tokenizer and generation config (and a TensorRT-LLM
    checkpoint's README) are not read by the convert/import: adding them keeps every key,
    and the build after is all cached. Before, the whole dir was one keyed input."""
    target = _example(tmp_path, "llm")
    before = _keys(target, tmp_path / "cache")
    hf = target.parent / "hf"
    for name, text in (("README.md", "# tiny"), ("tokenizer.json", "{}"), ("generation_config.json", '{"top_k": 1}')):
        (hf / name).write_text(text)
    after = _keys(target, tmp_path / "cache")
    assert {i: k for i, (k, _) in after.items()} == GOLDEN["llm"] == {i: k for i, (k, _) in before.items()}
    assert {status for _, status in after.values()} == {"cached"}

    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    shutil.copytree(target.parent / "out" / "checkpoint", checkpoint / "ckpt")
    (checkpoint / "trtcas.toml").write_text('[model]\ncheckpoint = "ckpt"\nmax_batch_size = 2\nmax_seq_len = 16\n'
                                            '[engine]\ntargets = ["sm86"]\n')
    imported = _keys(checkpoint / "trtcas.toml", tmp_path / "cache")
    (checkpoint / "ckpt" / "README.md").write_text("converted by trtcas")
    assert _keys(checkpoint / "trtcas.toml", tmp_path / "cache") == {i: (k, "cached") for i, (k, _) in imported.items()}


def test_a_rank_file_of_a_tensorrt_llm_checkpoint_is_in_its_own_ranks_key_only(tmp_path):
    """Each rank's import reads config.json and its own rank file: a weight changed in
    rank 1's file re-runs rank 1's import (and what follows from it), never rank 0's."""
    from safetensors.numpy import load_file, save_file

    target = _example(tmp_path, "llm")
    _keys(target, tmp_path / "cache")
    project = tmp_path / "ckpt"
    shutil.copytree(target.parent / "out" / "checkpoint", project / "ckpt")
    (project / "trtcas.toml").write_text('[model]\ncheckpoint = "ckpt"\nmax_batch_size = 2\nmax_seq_len = 16\n'
                                         '[engine]\ntargets = ["sm86"]\n')
    before = _keys(project / "trtcas.toml", tmp_path / "cache")
    assert {"checkpoint[rank0]", "checkpoint[rank1]"} <= set(before)
    rank1 = project / "ckpt" / "rank1.safetensors"
    tensors = load_file(rank1)
    name = sorted(tensors)[0]
    tensors[name] = (tensors[name] + 1).astype(tensors[name].dtype)
    save_file(tensors, rank1)
    after = _keys(project / "trtcas.toml", tmp_path / "cache")
    moved = {i for i in after if after[i][0] != before[i][0]}
    assert "checkpoint[rank1]" in moved and not any("rank0" in i for i in moved), moved
    assert after["checkpoint[rank0]"][1] == "cached" and after["checkpoint[rank1]"][1] == "built"


def test_a_weight_change_in_the_checkpoint_still_reruns_the_convert(tmp_path):
    target = _example(tmp_path, "llm")
    _keys(target, tmp_path / "cache")
    make_tiny_llama(target.parent / "hf", seed=0, finetune_layer=1)
    after = _keys(target, tmp_path / "cache")
    assert {i for i, (k, _) in after.items() if k != GOLDEN["llm"][i]} == set(GOLDEN["llm"])  # embedded weights: all
    assert {status for _, status in after.values()} == {"built"}
