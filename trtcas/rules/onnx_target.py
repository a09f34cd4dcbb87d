"""``[model] onnx = "..."`` target files -> network, engine and (when refittable) refit actions.

    [model]
    onnx = "model.onnx"            # external data files next to it are found and keyed
    [engine]
    backend = "auto"               # auto | tensorrt | tensorrt_rtx
    targets = ["sm86"]             # AOT targets (TensorRT-RTX); empty = backend defaults
    precision = "fp32"
    optimization_level = 3
    refit = "auto"                 # auto | yes | no
    profiles = [{ x = { min = [1, 8], opt = [4, 8], max = [16, 8] } }]
    [output]
    dir = "out"                    # engines/rank0.engine and build.json go here

Planning loads the backend (to decide refittable vs embedded and to read the effective
builder config into the key), so it needs TensorRT; `trtcas cache ...` does not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trtcas.errors import TrtcasError
from trtcas.graph.action import Action, InputRef
from trtcas.graph.dag import PlannedTarget, Planner, register_planner

ENGINE_KEYS = {
    "backend", "precision", "optimization_level", "targets", "refit", "strip_weights", "profiles",
    "memory_pool_limits", "tactic_sources", "hardware_compatibility", "version_compatible", "exclude_lean_runtime",
}


def _table(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise TrtcasError(f"[{name}] must be a table")
    return value


def engine_settings(config: Mapping[str, Any]):
    """(toolchain, EngineSpec, refittable, why) from the [engine] table, validated."""
    from trtcas.rules.engine import EngineSpec, decide_refittable, validate_spec
    from trtcas.rules.toolchain import load_toolchain

    table = dict(_table(config, "engine"))
    unknown = set(table) - ENGINE_KEYS
    if unknown:
        raise TrtcasError(f"[engine]: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(ENGINE_KEYS))}")
    backend_name = str(table.pop("backend", "auto"))
    try:
        spec = EngineSpec(**table)
    except TypeError as exc:
        raise TrtcasError(f"[engine]: {exc}") from None
    toolchain = load_toolchain(backend_name)
    validate_spec(spec, toolchain.backend)
    refittable, why = decide_refittable(spec, toolchain.backend)
    return backend_name, toolchain, spec, refittable, why


def spec_params(spec) -> dict[str, Any]:
    """EngineSpec -> plain params (what EngineSpec(**params) rebuilds)."""
    return {
        "precision": spec.precision, "optimization_level": spec.optimization_level, "targets": list(spec.targets),
        "refit": spec.refit, "strip_weights": spec.strip_weights,
        "profiles": [p.canonical() for p in spec.profiles],
        "memory_pool_limits": {k: v for k, v in spec.memory_pool_limits},
        "tactic_sources": list(spec.tactic_sources) if spec.tactic_sources is not None else None,
        "hardware_compatibility": spec.hardware_compatibility, "version_compatible": spec.version_compatible,
        "exclude_lean_runtime": spec.exclude_lean_runtime,
    }


def external_data_files(onnx_path: Path) -> list[str]:
    """Names of the external-data files an ONNX model refers to (relative to it)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except FileNotFoundError:
        raise TrtcasError(f"ONNX model {onnx_path} not found; fix [model] onnx in the target file") from None
    except Exception as exc:
        raise TrtcasError(f"ONNX model {onnx_path} cannot be read ({type(exc).__name__}); is it a valid .onnx file?") from None
    files = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            files.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(files)


def plan_onnx(config: Mapping[str, Any], base: Path) -> PlannedTarget:
    from trtcas.rules.engine import effective_builder_config

    model = _table(config, "model")
    onnx_rel = str(model["onnx"])
    backend_name, toolchain, spec, refittable, why = engine_settings(config)
    backend = toolchain.backend
    network_inputs = {"onnx": InputRef(path=onnx_rel)}
    for i, name in enumerate(external_data_files(base / onnx_rel)):
        network_inputs[f"external_data{i}"] = InputRef(path=str(Path(onnx_rel).parent / name))
    common = {"backend": backend_name, "flavour": backend.flavour}
    profiles = spec_params(spec)["profiles"]
    network = Action("network[rank0]", "trt.network", {**common, "profiles": profiles}, network_inputs)
    engine_inputs = {
        "onnx": InputRef(path=onnx_rel),
        "structure": InputRef(action=network.id, output="structure"),
        "io": InputRef(action=network.id, output="io"),
        "refit_names": InputRef(action=network.id, output="refit_names"),
    }
    actions = [network]
    if refittable:
        shaping = Action("plan_shaping_weights[rank0]", "trt.plan_shaping_weights", {}, {"weights": InputRef(action=network.id, output="weights")})
        actions.append(shaping)
        engine_inputs["plan_shaping_weights"] = InputRef(action=shaping.id, output="weights")
    else:
        engine_inputs["weights"] = InputRef(action=network.id, output="weights")
    engine_params = {
        **common, "spec": spec_params(spec), "refittable": refittable, "aot": bool(backend.capabilities.aot_targets),
        "effective_config": effective_builder_config(spec, backend, refittable),
    }
    engine_out = {} if refittable else {"plan": "engines/rank0.engine"}
    engine = Action("engine[rank0]", "trt.engine", engine_params, engine_inputs, engine_out)
    actions.append(engine)
    if refittable:
        actions.append(Action(
            "refit[rank0]", "trt.refit", common,
            {"engine": InputRef(action=engine.id, output="plan"), "names": InputRef(action=engine.id, output="names"),
             "weights": InputRef(action=network.id, output="weights")},
            {"plan": "engines/rank0.engine"},
        ))
    return PlannedTarget(tuple(actions), (why,) if not refittable else ())


register_planner(Planner("onnx", lambda c: isinstance(c.get("model"), dict) and "onnx" in c["model"], plan_onnx))
