"""HF configs in both forms, refusals of what the networks do not implement, sharded
checkpoints, and `checkpoint` targets whose [parallel] contradicts their mapping.

Planning reads configs only, so most of these run no TensorRT.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the verify extra (torch, transformers) is needed")

import trtcas  # noqa: E402
from trtcas.errors import TrtcasError  # noqa: E402
from trtcas.rules.llm.convert import convert_rank, trtllm_config, write_checkpoint  # noqa: E402
from trtcas.rules.llm.hf import read_hf_config  # noqa: E402
from trtcas.rules.llm.spec import ConvertSpec  # noqa: E402

from support.hf_models import make_model  # noqa: E402

TARGET = """
[target]
name = "t"
[model]
{source}
max_batch_size = 1
max_seq_len = 8
{parallel}
[engine]
targets = ["sm86"]
"""


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("llama")
    make_model("LlamaForCausalLM", root, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 16})
    return root


def _edit_config(src: Path, dst: Path, edit) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "config.json":
            (dst / f.name).symlink_to(f)
    config = json.loads((src / "config.json").read_text())
    edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _hub_form(config: dict) -> None:
    params = config.pop("rope_parameters")
    config["rope_theta"] = params.pop("rope_theta")
    config["rope_scaling"] = params
    config["torch_dtype"] = config.pop("dtype")


def test_hub_and_transformers5_config_forms_convert_alike(llama, tmp_path):
    hub = _edit_config(llama, tmp_path / "hub", _hub_form)
    spec = ConvertSpec(tp=2, dtype="float32")
    new, old = trtllm_config(read_hf_config(llama), spec), trtllm_config(read_hf_config(hub), spec)
    assert new == old
    assert new["rotary_base"] == 500000.0  # rope_theta inside rope_parameters is read, not defaulted
    assert new["rotary_scaling"]["rope_type"] == "llama3" and new["rotary_scaling"]["factor"] == 8.0


def test_a_sharded_checkpoint_converts_like_a_single_file(llama, tmp_path):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(llama).save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    spec = ConvertSpec(tp=2, dtype="bfloat16")
    for rank in (0, 1):
        single, sharded = convert_rank(llama, spec, rank), convert_rank(tmp_path / "sharded", spec, rank)
        assert single.keys() == sharded.keys()
        assert all(np.array_equal(single[k].view(np.uint16), sharded[k].view(np.uint16)) for k in single)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["rope_parameters"].update(rope_type="yarn"), "rope type 'yarn' is not supported"),
    (lambda c: c.update(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}),
     "rope type 'dynamic' is not supported"),
    (lambda c: c["rope_parameters"].update(attention_factor=2.0), "attention_factor of rope type 'llama3'"),
    (lambda c: c.update(hidden_act="gelu"), "hidden_act 'gelu' is not silu"),
    (lambda c: c.update(attention_bias=True), "attention_bias is true"),
    (lambda c: c.update(mlp_bias=True), "mlp_bias is true"),
    (lambda c: c.update(architectures=["FalconForCausalLM"]), "architecture 'FalconForCausalLM' is not supported"),
    (lambda c: c.update(sliding_window=4), "sliding_window=4 / layer_types are not part of LlamaForCausalLM"),
    (lambda c: c.update(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 2}),
     "partial_rotary_factor must be in"),
    (lambda c: c.update(rms_norm_eps="small"), "'rms_norm_eps' must be a positive number, got 'small'"),
    (lambda c: c["rope_parameters"].pop("factor"), "rope type 'llama3' needs factor as a positive number, got None"),
    (lambda c: c["rope_parameters"].update(low_freq_factor=4.0, high_freq_factor=4.0),
     "needs low_freq_factor < high_freq_factor"),
], ids=["yarn", "dynamic", "unknown-param", "gelu", "attention-bias", "mlp-bias", "architecture", "window", "partial",
        "eps", "no-factor", "llama3-bands"])
def test_math_changing_fields_are_refused_in_one_line(llama, tmp_path, edit, message):
    _edit_config(llama, tmp_path / "hf", edit)
    (tmp_path / "trtcas.toml").write_text(TARGET.format(source='hf = "hf"', parallel=""))
    with pytest.raises(TrtcasError, match=message) as caught:
        trtcas.build(tmp_path / "trtcas.toml", cache_dir=tmp_path / "cache")
    assert "\n" not in str(caught.value)


def test_phi3_longrope_and_qwen_layer_types_are_checked(tmp_path):
    phi = make_model("Phi3ForCausalLM", tmp_path / "phi")
    _edit_config(tmp_path / "phi", tmp_path / "phi-long", lambda c: c.update(rope_parameters={
        "rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 4, "long_factor": [2.0] * 4}))
    with pytest.raises(TrtcasError, match="rope type 'longrope' is not supported"):
        read_hf_config(tmp_path / "phi-long")
    del phi
    make_model("Qwen2ForCausalLM", tmp_path / "qwen")
    _edit_config(tmp_path / "qwen", tmp_path / "qwen-bad", lambda c: c.update(
        use_sliding_window=True, sliding_window=4, layer_types=["sliding_attention"]))
    with pytest.raises(TrtcasError, match="layer_types must list 2 of"):
        read_hf_config(tmp_path / "qwen-bad")
    _edit_config(tmp_path / "qwen", tmp_path / "qwen-window", lambda c: c.update(
        use_sliding_window=True, sliding_window=4, layer_types=["full_attention", "sliding_attention"]))
    config = trtllm_config(read_hf_config(tmp_path / "qwen-window"), ConvertSpec())
    assert config["sliding_window"] == 4 and config["layer_types"] == ["full_attention", "sliding_attention"]
    # a window the model does not use (use_sliding_window false, as hub Qwen2 configs say) is not applied
    _edit_config(tmp_path / "qwen", tmp_path / "qwen-off", lambda c: c.update(use_sliding_window=False, sliding_window=4,
                                                                           layer_types=None))
    assert "sliding_window" not in trtllm_config(read_hf_config(tmp_path / "qwen-off"), ConvertSpec())


@pytest.mark.parametrize(("parallel", "message"), [
    ("[parallel]\ntp = 1", r"\[parallel\] tp = 1 but the checkpoint ckpt/config.json was converted for tp_size=2"),
    ("[parallel]\ntp = 4", r"\[parallel\] tp = 4 but the checkpoint"),
])
def test_checkpoint_targets_check_parallel_against_the_mapping(llama, tmp_path, parallel, message):
    write_checkpoint(llama, ConvertSpec(tp=2, dtype="float32"), tmp_path / "ckpt")
    (tmp_path / "trtcas.toml").write_text(TARGET.format(source='checkpoint = "ckpt"', parallel=parallel))
    out = subprocess.run([str(Path(sys.executable).parent / "trtcas"), "build", str(tmp_path / "trtcas.toml"),
                          "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trtcas: error: ")
    assert __import__("re").search(message, lines[0]), lines[0]


def test_a_checkpoint_target_without_parallel_takes_its_mapping(llama, tmp_path):
    pytest.importorskip("tensorrt_rtx")
    write_checkpoint(llama, ConvertSpec(tp=2, dtype="bfloat16"), tmp_path / "ckpt")
    (tmp_path / "trtcas.toml").write_text(TARGET.format(source='checkpoint = "ckpt"', parallel=""))
    result = trtcas.build(tmp_path / "trtcas.toml", cache_dir=tmp_path / "cache")
    assert result.ok, result.error
    assert {r.id for r in result.actions if r.rule == "trt.engine"} == {"engine[rank0]", "engine[rank1]"}
    assert trtcas.run(tmp_path / "trtcas.toml", [1, 2, 3], cache_dir=tmp_path / "cache").ranks == 2
