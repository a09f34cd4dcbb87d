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
