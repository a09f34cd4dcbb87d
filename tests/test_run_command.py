"""`trtcas run` on ONNX targets (against onnxruntime) and its one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorrt_rtx", reason="these tests exercise TensorRT-RTX (pip install tensorrt-rtx-cu13)")

import trtcas  # noqa: E402

from make_models import write_models  # noqa: E402
from make_tiny_llama import make_tiny_llama  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TRTCAS = str(Path(sys.executable).parent / "trtcas")


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    shutil.copytree(EXAMPLES / "conv", root, dirs_exist_ok=True)
    shutil.copy(write_models(root / "models")["conv_block"], root / "model.onnx")
    return root


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    shutil.copytree(EXAMPLES / "llm", root, dirs_exist_ok=True)
    make_tiny_llama(root / "hf", seed=0)
    return root


def _cli(*args):
    return subprocess.run([TRTCAS, *map(str, args)], capture_output=True, text=True)


def test_onnx_targets_run_their_inputs_like_onnxruntime(conv, tmp_path):
    import onnx
    import onnxruntime

    model = onnx.load(conv / "model.onnx")
    graph_input = model.graph.input[0]
    shape = [d.dim_value or 1 for d in graph_input.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    want = onnxruntime.InferenceSession(str(conv / "model.onnx")).run(None, {graph_input.name: x})[0]
    out = _cli("run", conv / "trtcas.toml", "--input", f"{graph_input.name}={tmp_path / 'x.npy'}", "--json",
               "--cache-dir", tmp_path / "cache")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["ranks"] == 1
    (name, got), = data["outputs"].items()
    assert name == model.graph.output[0].name and got["shape"] == list(want.shape)
    assert np.abs(np.array(got["values"]) - want).max() <= 1e-4 * max(np.abs(want).max(), 1.0)
    # the API gives the same arrays
    api = trtcas.run(conv / "trtcas.toml", inputs={graph_input.name: x}, cache_dir=tmp_path / "cache")
    assert np.allclose(api.outputs[name], want, atol=1e-4)


def test_run_leaves_the_output_dir_and_build_history_alone(llm, tmp_path):
    result = trtcas.run(llm / "trtcas.toml", [5, 6, 7], cache_dir=tmp_path / "cache")
    assert result.ranks == 2 and result.logits.shape == (256,) and result.argmax == int(np.argmax(result.logits))
    assert not (llm / "out").exists()
    assert not list((tmp_path / "cache").glob("history/*"))


@pytest.mark.parametrize(("args", "message"), [
    (["--tokens", "1,x"], "--tokens '1,x': expected comma-separated integers"),
    (["--tokens", "1,999"], "token id(s) 999 are outside the vocabulary 0..255"),
    (["--tokens", ",".join(["1"] * 17)], "17 tokens do not fit max_seq_len=16"),
    ([], "give either token ids"),
    (["--input", "nonsense"], "--input 'nonsense': expected NAME=FILE.npy"),
    (["--input", "x=/nonexistent.npy"], "--input x: cannot read /nonexistent.npy"),
])
def test_bad_run_arguments_are_one_line_errors(llm, tmp_path, args, message):
    out = _cli("run", llm / "trtcas.toml", *args, "--cache-dir", tmp_path / "cache")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trtcas: error: ") and message in lines[0], out.stderr


def test_tokens_on_an_onnx_target_say_what_to_give(conv, tmp_path):
    out = _cli("run", conv / "trtcas.toml", "--tokens", "1,2", "--cache-dir", tmp_path / "cache")
    assert out.returncode == 1 and "--tokens needs an LLM network" in out.stderr and "--input" in out.stderr


def test_ranks_whose_replicated_outputs_differ_are_an_error():
    import ml_dtypes

    from trtcas.errors import TrtcasError
    from trtcas.rules.evaluate.run import RunResult, _check_replicas

    same = {"logits": np.ones((1, 2, 4), np.float32)}
    _check_replicas([same, dict(same)])
    with pytest.raises(TrtcasError, match="rank 1's output 'logits' differs from rank 0's"):
        _check_replicas([same, {"logits": np.zeros((1, 2, 4), np.float32)}])
    # JSON of a bf16 output: plain floats
    data = RunResult({"y": np.array([1.5, -2.0], ml_dtypes.bfloat16)}, 1).to_dict()
    assert data["outputs"]["y"] == {"shape": [2], "dtype": "bfloat16", "values": [1.5, -2.0]}
