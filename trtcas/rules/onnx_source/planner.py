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
from trtcas.graph.dag import PlannedTarget, Planner
from trtcas.rules.trt.engine_actions import (
    ENGINE_SCHEMA,
    check_distinct_plans,
    engine_actions,
    engine_settings,
    engine_variants,
    spec_params,
)


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
    model = config.get("model", {})
    onnx_rel = str(model["onnx"])
    settings = engine_settings(config)
    network_inputs = {"onnx": InputRef(path=onnx_rel)}
    for i, name in enumerate(external_data_files(base / onnx_rel)):
        network_inputs[f"external_data{i}"] = InputRef(path=str(Path(onnx_rel).parent / name))
    profiles = spec_params(settings.spec)["profiles"]
    network = Action("network[rank0]", "trt.network", {**settings.common_params, "profiles": profiles}, network_inputs)
    actions = [network]
    variants = engine_variants(config)
    for label, variant in variants:
        actions += engine_actions(variant, 0, network, {"onnx": InputRef(path=onnx_rel)}, variant.engine_params(),
                                  label=label, rank_in_id=False)
    embedded = [v.why for _, v in variants if not v.refittable]
    check_distinct_plans(actions)
    return PlannedTarget(tuple(actions), tuple(embedded[:1]), notes_for_rules=("trt.engine",))


PLANNER = Planner(
    "onnx", lambda c: isinstance(c.get("model"), dict) and "onnx" in c["model"], plan_onnx,
    schema={"model": frozenset({"onnx"}), **ENGINE_SCHEMA}, selectors=("model.onnx",),
)
