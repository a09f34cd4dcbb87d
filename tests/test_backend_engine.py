"""Backend adapter, ONNX parsing, engine builds and refit, against real TensorRT(-RTX).

Runs on the CPU-only dev machines (TensorRT-RTX builds AOT engines without a GPU); the
refit round trip needs a GPU and is skipped, with the reason, where the backend says it
cannot refit.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtcas.errors import TrtcasError
from trtcas.rules.onnx_source.parse import parse_onnx
from trtcas.rules.trt import backend as backend_mod
from trtcas.rules.trt.backend import load_backend
from trtcas.rules.trt.engine import EngineSpec, build_plan, decide_refittable, effective_builder_config
from trtcas.rules.trt.network import Profile, ShapeRange
from trtcas.rules.trt.refit import refit_plan

pytest.importorskip("tensorrt_rtx", reason="these tests exercise TensorRT-RTX (pip install tensorrt-rtx-cu13)")

REPO = Path(__file__).resolve().parents[1]


def _load_make_models():
    spec = importlib.util.spec_from_file_location("make_models", REPO / "examples" / "make_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


make_models = _load_make_models()


@pytest.fixture(scope="module")
def backend():
    return load_backend("tensorrt_rtx")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return make_models.write_models(tmp_path_factory.mktemp("models"), seed=0)


def _save(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path


def _mlp(path: Path, batch) -> Path:
    """x[batch, 8] @ W[8, 4] -> Relu; ``batch`` may be a symbolic name (dynamic)."""
    w = numpy_helper.from_array(np.ones((8, 4), np.float32), "W")
    return _save(path, [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
                        helper.make_node("Relu", ["h"], ["y"], name="act")],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])], [w])


# -- backend --------------------------------------------------------------------------


def test_capabilities_without_gpu(monkeypatch):
    monkeypatch.setenv("TRTCAS_ASSUME_NO_GPU", "1")
    load_backend.cache_clear()
    try:
        b = load_backend("auto")  # full tensorrt cannot be installed here, so auto -> rtx
        import tensorrt_rtx

        assert b.flavour == "tensorrt_rtx" and b.trt is tensorrt_rtx
        assert b.version == tensorrt_rtx.__version__
        caps = b.capabilities
        assert caps.builds_without_gpu and not caps.gpu_present and caps.gpu_target is None
        assert not caps.can_build_refittable and not caps.can_refit
        assert {"sm75", "sm80", "sm86", "sm89", "sm120", "sm121"} <= set(caps.aot_targets)
        assert "sm90" not in caps.aot_targets
        assert set(caps.default_targets) <= set(caps.aot_targets) and caps.default_targets
        assert caps.strongly_typed_networks and caps.precision_flags == ()
    finally:
        load_backend.cache_clear()


def test_load_backend_is_cached(backend):
    assert load_backend("tensorrt_rtx") is backend


def test_missing_flavour_and_unknown_name_are_one_line_errors():
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(TrtcasError, match=r"TensorRT flavour 'tensorrt' is not installed.*tensorrt_rtx"):
            load_backend("tensorrt")
    with pytest.raises(TrtcasError, match="unknown TensorRT backend 'tensorflow'"):
        load_backend("tensorflow")


def test_logger_captures_messages(backend, tmp_path):
    logger = backend.logger("verbose")
    builder = backend.trt.Builder(logger)
    network = builder.create_network(0)  # the parser does not keep the network alive
    parser = backend.trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(_mlp(tmp_path / "m.onnx", 2)))
    assert any(line.startswith("[V] ") for line in logger.lines)
    with pytest.raises(TrtcasError, match="unknown log severity"):
        backend.logger("loud")


# -- parsing ----------------------------------------------------------------------------


def test_missing_file(backend, tmp_path):
    with pytest.raises(TrtcasError, match=r"ONNX model not found: .*nothere\.onnx"):
        parse_onnx(backend, tmp_path / "nothere.onnx")


def test_malformed_bytes(backend, tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00this is not a protobuf" * 8)
    with pytest.raises(TrtcasError, match=r"garbage\.onnx is not a valid ONNX model") as err:
        parse_onnx(backend, bad)
    assert "\n" not in str(err.value)


def test_empty_file_and_directory(backend, tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(TrtcasError, match=r"empty\.onnx is empty"):
        parse_onnx(backend, tmp_path / "empty.onnx")
    with pytest.raises(TrtcasError, match="not a regular file"):
        parse_onnx(backend, tmp_path)


def test_unsupported_operator_names_file_and_node(backend, tmp_path):
    path = _save(tmp_path / "exotic.onnx", [helper.make_node("FrobnicateOp", ["x"], ["y"], name="frob_1")],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    with pytest.raises(TrtcasError) as err:
        parse_onnx(backend, path)
    message = str(err.value)
    assert "exotic.onnx" in message and "'frob_1'" in message and "FrobnicateOp" in message
    assert "not supported by tensorrt_rtx" in message and "\n" not in message


def test_invalid_node_names_file_node_and_reason(backend, tmp_path):
    shape = numpy_helper.from_array(np.array([7, 7], np.int64), "target_shape")
    path = _save(tmp_path / "reshape.onnx", [helper.make_node("Reshape", ["x", "target_shape"], ["y"], name="squash")],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7, 7])], [shape])
    with pytest.raises(TrtcasError) as err:
        parse_onnx(backend, path)
    message = str(err.value)
    assert "reshape.onnx" in message and "'squash'" in message and "(op Reshape)" in message
    assert "volume" in message and "cudaError" not in message and "\n" not in message


def test_external_data_is_loaded(backend, tmp_path):
    model = onnx.load(str(_mlp(tmp_path / "inline.onnx", 2)))
    onnx.save(model, str(tmp_path / "external.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="external.weights", size_threshold=0)
    assert (tmp_path / "external.weights").stat().st_size == 8 * 4 * 4
    parsed = parse_onnx(backend, tmp_path / "external.onnx")
    assert build_plan(backend, parsed, EngineSpec(targets=["sm86"]), refittable=False).plan


def test_truncated_external_data_or_a_wrong_shape_names_the_initializer_and_the_file(backend, tmp_path):
    model = onnx.load(str(_mlp(tmp_path / "inline.onnx", 2)))
    onnx.save(model, str(tmp_path / "external.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="external.weights", size_threshold=0)
    data = tmp_path / "external.weights"
    data.write_bytes(data.read_bytes()[:40])
    with pytest.raises(TrtcasError) as err:
        parse_onnx(backend, tmp_path / "external.onnx")
    message = str(err.value)
    assert "external.weights, which holds 40" in message and "truncated" in message and "\n" not in message
    assert "restore the data file or re-export" in message
    inline = onnx.load(str(tmp_path / "inline.onnx"))
    inline.graph.initializer[0].dims[0] += 1  # the bytes no longer fit the dims
    onnx.save(inline, str(tmp_path / "reshaped.onnx"))
    with pytest.raises(TrtcasError, match=rf"initializer '{inline.graph.initializer[0].name}' has \d+ bytes but its dims"):
        parse_onnx(backend, tmp_path / "reshaped.onnx")


# -- profiles -----------------------------------------------------------------------------


def test_dynamic_input_needs_a_profile(backend, tmp_path):
    parsed = parse_onnx(backend, _mlp(tmp_path / "dyn.onnx", "batch"))
    assert parsed.inputs[0].dynamic
    with pytest.raises(TrtcasError, match=r"input 'x' of .*dyn\.onnx has dynamic shape \[-1, 8\]"):
        build_plan(backend, parsed, EngineSpec(targets=["sm86"]), refittable=False)
    with pytest.raises(TrtcasError, match=r"profile 0 names input 'z'.*its inputs: x"):
        build_plan(backend, parsed, EngineSpec(targets=["sm86"], profiles=[Profile({"z": ([1, 8], [2, 8], [4, 8])})]),
                   refittable=False)
    with pytest.raises(TrtcasError, match="fixed size 8 on axis 1"):
        build_plan(backend, parsed, EngineSpec(targets=["sm86"], profiles=[Profile({"x": ([1, 4], [2, 8], [4, 8])})]),
                   refittable=False)
    spec = EngineSpec(targets=["sm86"], profiles=[Profile({"x": {"min": [1, 8], "opt": [4, 8], "max": [16, 8]}})])
    plan = build_plan(backend, parsed, spec, refittable=False)
    assert plan.plan and plan.effective_config["profiles"] == [{"x": {"min": [1, 8], "opt": [4, 8], "max": [16, 8]}}]


def test_shape_range_validation():
    with pytest.raises(TrtcasError, match="min <= opt <= max"):
        ShapeRange((4, 8), (2, 8), (8, 8))
    with pytest.raises(TrtcasError, match="same rank"):
        ShapeRange((1,), (1, 2), (1, 2))
    assert Profile({"b": ((1,), (1,), (1,)), "a": ((2,), (2,), (2,))}) == \
        Profile({"a": ((2,), (2,), (2,)), "b": ((1,), (1,), (1,))})


# -- building -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["conv_block", "transformer_block"])
def test_example_models_build_for_sm86(backend, models, name):
    parsed = parse_onnx(backend, models[name])
    spec = EngineSpec(targets=["sm86"])
    plan = build_plan(backend, parsed, spec, refittable=False)
    assert len(plan.plan) > 10_000 and plan.seconds < 10
    assert plan.effective_config == effective_builder_config(spec, backend, refittable=False)
    assert plan.effective_config["targets"] == ["sm86"] and not plan.effective_config["refittable"]
    assert any("Engine generation completed" in line for line in plan.log)


def test_a_plan_streamed_to_a_file_is_the_plan_built_in_memory(backend, models, tmp_path):
    """Streaming the plan (so the process never holds it whole) must not change one byte."""
    spec = EngineSpec(targets=["sm86"])
    in_memory = build_plan(backend, parse_onnx(backend, models["transformer_block"]), spec, refittable=False)
    streamed = build_plan(backend, parse_onnx(backend, models["transformer_block"]), spec, refittable=False,
                          into=tmp_path / "plan")
    assert in_memory.path is None and streamed.path == tmp_path / "plan"
    assert streamed.path.read_bytes() == bytes(streamed.plan) == bytes(in_memory.plan)


def test_two_targets_and_default_targets(backend, models):
    parsed = parse_onnx(backend, models["conv_block"])
    two = build_plan(backend, parsed, EngineSpec(targets=["SM120", "sm86"]), refittable=False)
    assert two.plan and two.effective_config["targets"] == ["sm86", "sm120"]
    default = effective_builder_config(EngineSpec(), backend, refittable=False)
    assert default["targets"] == list(backend.capabilities.default_targets)


def test_effective_config_is_equal_for_equal_specs(backend):
    a = EngineSpec(targets=["sm86", "sm80"], memory_pool_limits={"workspace": 1 << 30})
    b = EngineSpec(targets=("SM80", "sm86", "sm86"), memory_pool_limits=[("WORKSPACE", 1 << 30)])
    assert a == b and hash(a) == hash(b)
    assert effective_builder_config(a, backend, False) == effective_builder_config(b, backend, False)


def test_effective_config_changes_with_every_field(backend):
    base = EngineSpec(targets=["sm86"])
    variants = {
        "optimization_level": EngineSpec(targets=["sm86"], optimization_level=5),
        "targets": EngineSpec(targets=["sm89"]),
        "more targets": EngineSpec(targets=["sm86", "sm89"]),
        "profiles": EngineSpec(targets=["sm86"], profiles=[Profile({"x": ([1, 8], [2, 8], [4, 8])})]),
        "memory_pool_limits": EngineSpec(targets=["sm86"], memory_pool_limits={"workspace": 1 << 28}),
        "tactic_sources": EngineSpec(targets=["sm86"], tactic_sources=["jit_convolutions"]),
        "version_compatible": EngineSpec(targets=["sm86"], version_compatible=True, exclude_lean_runtime=True),
    }
    base_config = effective_builder_config(base, backend, False)
    seen = [base_config]
    for field, spec in variants.items():
        config = effective_builder_config(spec, backend, False)
        assert config not in seen, f"changing {field} did not change the effective config"
        seen.append(config)
    refittable = effective_builder_config(base, backend, True)
    stripped = effective_builder_config(EngineSpec(targets=["sm86"], strip_weights=True), backend, True)
    assert "REFIT" in refittable["flags"] and refittable not in seen
    assert "STRIP_PLAN" in stripped["flags"] and stripped != refittable
    # precision and hardware_compatibility have one legal value on TensorRT-RTX (below)


@pytest.mark.parametrize("kwargs, match", [
    ({"optimization_level": 6}, "optimization_level 6 is out of range"),
    ({"optimization_level": -1}, "optimization_level -1 is out of range"),
    ({"precision": "fp64"}, "unknown precision 'fp64'"),
    ({"refit": "maybe"}, "unknown refit choice"),
    ({"targets": ["ampere"]}, "write it like \"sm86\""),
    ({"targets": "sm86"}, "must be a list"),
    ({"memory_pool_limits": {"dram": 1}}, "unknown memory pool 'dram'"),
    ({"strip_weights": True, "refit": "no"}, "strip_weights = true needs a refittable engine"),
])
def test_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(TrtcasError, match=match):
        EngineSpec(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"targets": ["sm90"]}, "target 'sm90' is not available in tensorrt_rtx"),
    ({"precision": "fp16"}, "precision 'fp16' is not a builder flag in tensorrt_rtx.*strongly typed"),
    ({"hardware_compatibility": "ampere_plus"}, "not supported by tensorrt_rtx"),
    ({"tactic_sources": ["cublas"]}, "tactic source 'cublas' does not exist"),
])
def test_spec_rejects_what_the_backend_lacks(backend, kwargs, match):
    with pytest.raises(TrtcasError, match=match):
        effective_builder_config(EngineSpec(**kwargs), backend, False)


# -- refit decisions and the CPU-only failure -------------------------------------------


def _cpu_only(backend):
    if backend.capabilities.can_build_refittable:
        pytest.skip("this machine can build refittable engines; the test covers the CPU-only case")


def test_decide_refittable(backend):
    _cpu_only(backend)
    assert decide_refittable(EngineSpec(refit="no"), backend)[0] is False
    refittable, reason = decide_refittable(EngineSpec(refit="auto"), backend)
    assert refittable is False and "no GPU" in reason
    with pytest.raises(TrtcasError, match=r"refit = \"yes\" but tensorrt_rtx .* cannot build refittable engines"):
        decide_refittable(EngineSpec(refit="yes"), backend)
    with pytest.raises(TrtcasError, match="strip_weights = true needs a refittable engine"):
        decide_refittable(EngineSpec(strip_weights=True), backend)


def test_refittable_build_without_gpu_fails_clearly(backend, models):
    _cpu_only(backend)
    parsed = parse_onnx(backend, models["conv_block"])
    with pytest.raises(TrtcasError, match="refittable/weight-stripped builds need a GPU") as err:
        build_plan(backend, parsed, EngineSpec(targets=["sm86"]), refittable=True)
    assert "conv_block.onnx" in str(err.value) and "\n" not in str(err.value)


def test_refit_without_gpu_is_refused(backend):
    _cpu_only(backend)
    with pytest.raises(TrtcasError, match="cannot refit an engine here"):
        refit_plan(backend, b"not a plan", {})


@pytest.mark.gpu
def test_refit_round_trip(backend, tmp_path):
    if not backend.capabilities.can_refit:
        pytest.skip(f"{backend.flavour} {backend.version} cannot refit on this machine (needs a supported GPU)")
    first = make_models.write_models(tmp_path / "a", seed=0, weights_seed=0)["conv_block"]
    tuned = make_models.write_models(tmp_path / "b", seed=0, weights_seed=1)["conv_block"]
    spec = EngineSpec(targets=[backend.capabilities.gpu_target])
    refittable, _ = decide_refittable(spec, backend)
    assert refittable
    plan = build_plan(backend, parse_onnx(backend, first), spec, refittable=True).plan
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tuned)).graph.initializer}
    refitted = refit_plan(backend, plan, weights)
    assert refitted and refitted != plan
    with pytest.raises(TrtcasError, match="refit needs"):
        refit_plan(backend, plan, dict(list(weights.items())[:1]))


# -- example models -------------------------------------------------------------------------


def _structure(path: Path) -> bytes:
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
    return model.SerializeToString()


def test_weights_seed_changes_only_weights(tmp_path):
    a = make_models.write_models(tmp_path / "a", seed=0, weights_seed=0)
    b = make_models.write_models(tmp_path / "b", seed=0, weights_seed=7)
    again = make_models.write_models(tmp_path / "c", seed=0, weights_seed=0)
    other = make_models.write_models(tmp_path / "d", seed=1)
    for name in make_models.MODELS:
        assert a[name].read_bytes() == again[name].read_bytes()
        assert a[name].read_bytes() != b[name].read_bytes()
        assert _structure(a[name]) == _structure(b[name])
    assert any(_structure(a[n]) != _structure(other[n]) for n in make_models.MODELS)


def test_make_models_cli(tmp_path, capsys):
    assert make_models.main([str(tmp_path), "--seed", "2", "--weights-seed", "3"]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"conv_block.onnx", "transformer_block.onnx"}


def test_backend_module_has_no_top_level_tensorrt_import():
    source = Path(backend_mod.__file__).read_text()
    assert "\nimport tensorrt" not in source and "\nfrom tensorrt" not in source
