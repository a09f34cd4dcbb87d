"""Engine keys hold the effective builder configuration only (issue 13 item 12).

Before, the key held the [engine] settings as written beside the config read back from the
builder, so writing out a default (tactic sources, a workspace limit) rebuilt an engine that
TensorRT-RTX then produced byte for byte. Now settings written equal to the builder's
defaults hit, and every setting that changes the read-back config still changes the key.
Real TensorRT-RTX builds, on CPU.
"""

from __future__ import annotations

import onnx
import pytest

import trtcas

import make_models

BASE = """
[target]
name = "conv"
[model]
onnx = "model.onnx"
[engine]
backend = "auto"
targets = ["sm86"]
{extra}
"""


@pytest.fixture(scope="module")
def defaults():
    from trtcas.rules.trt.engine import EngineSpec, effective_builder_config
    from trtcas.rules.trt.toolchain import load_toolchain

    backend = load_toolchain("auto").backend
    return effective_builder_config(EngineSpec(targets=("sm86",)), backend, False)


def engine_status(tmp_path, extra: str) -> tuple[str, str]:
    (tmp_path / "trtcas.toml").write_text(BASE.format(extra=extra))
    if not (tmp_path / "model.onnx").exists():
        onnx.save(make_models.make_conv_block(seed=0), str(tmp_path / "model.onnx"))
    result = trtcas.build(tmp_path / "trtcas.toml", cache_dir=tmp_path / "cache")
    assert result.ok, result.error
    record = next(r for r in result.actions if r.id == "engine[rank0]")
    return record.status, record.key


def test_settings_written_equal_to_the_defaults_hit(tmp_path, defaults):
    status, key = engine_status(tmp_path, "")
    assert status == "built"
    sources = ", ".join(f'"{s}"' for s in defaults["tactic_sources"])
    pools = defaults["memory_pool_limits"]
    written = (
        f"optimization_level = {defaults['optimization_level']}\nprecision = \"fp32\"\nrefit = \"auto\"\n"
        f"tactic_sources = [{sources}]\n"
        f"memory_pool_limits = {{ workspace = {pools['workspace']}, tactic_dram = {pools['tactic_dram']} }}\n"
        "hardware_compatibility = \"none\"\nversion_compatible = false\n"
    )
    assert engine_status(tmp_path, written) == ("cached", key)


def test_a_setting_that_changes_the_builder_config_still_rebuilds(tmp_path, defaults):
    _, key = engine_status(tmp_path, "")
    status, other = engine_status(tmp_path, "memory_pool_limits = { workspace = 1073741824 }")
    assert status == "built" and other != key
    status, third = engine_status(tmp_path, f'tactic_sources = ["{defaults["tactic_sources"][0]}"]')
    assert status == "built" and third not in (key, other)


def test_backend_named_as_the_flavour_auto_resolves_to_hits(tmp_path):
    """``backend = "auto"`` builds with the flavour it resolves to; naming that flavour
    (``backend = "tensorrt_rtx"`` here) is the same engine, so every key is the same."""
    from trtcas.rules.trt.toolchain import load_toolchain

    flavour = load_toolchain("auto").backend.flavour
    base = engine_status(tmp_path, "")
    (tmp_path / "trtcas.toml").write_text(BASE.replace('backend = "auto"', f'backend = "{flavour}"').format(extra=""))
    result = trtcas.build(tmp_path / "trtcas.toml", cache_dir=tmp_path / "cache")
    assert result.ok, result.error
    assert {r.id: r.status for r in result.actions} == {"network[rank0]": "cached", "engine[rank0]": "cached"}
    assert next(r.key for r in result.actions if r.id == "engine[rank0]") == base[1]
