"""The engine half of every TensorRT target: ``[engine]`` settings -> the actions after a network.

Both planners (ONNX files and LLM checkpoint ranks) end the same way per rank: an engine
built from the network's structure, keyed on the weights when it must embed them, and
otherwise followed by a refit with that rank's weights. This is that shared tail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from trtcas.errors import TrtcasError
from trtcas.graph.action import Action, InputRef

ENGINE_KEYS = {
    "backend", "precision", "optimization_level", "targets", "refit", "strip_weights", "profiles",
    "memory_pool_limits", "tactic_sources", "hardware_compatibility", "version_compatible", "exclude_lean_runtime",
}
# [output] keys of every engine target: where each rank's plan goes under [output] dir.
OUTPUT_KEYS = {"engine"}
DEFAULT_ENGINE_NAME = "engines/rank{rank}.engine"
ENGINE_NAME_FIELDS = ("target", "rank", "backend", "precision", "optimization_level", "targets")
# The sections every engine planner reads (graph.dag.Planner.schema; trtcas.config checks them).
ENGINE_SCHEMA = {"engine": frozenset(ENGINE_KEYS), "output": frozenset(OUTPUT_KEYS)}


def _table(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = config.get(name, {})
    if not isinstance(value, dict):
        raise TrtcasError(f"[{name}] must be a table")
    return value


@dataclass(frozen=True)
class EngineSettings:
    """The validated [engine] table and what it implies on this machine."""

    backend_name: str
    toolchain: Any
    spec: Any
    refittable: bool
    why: str  # why refittable or not, said once in the build output when weights are embedded
    engine_name: str = DEFAULT_ENGINE_NAME  # [output] engine: a template of ENGINE_NAME_FIELDS
    target: str = "target"

    def plan_path(self, rank: int) -> str:
        """Where rank ``rank``'s plan goes, relative to the output dir (not part of any key)."""
        from trtcas.rules.trt.engine import resolved_targets

        backend = self.toolchain.backend
        fields = {"target": self.target, "rank": rank, "backend": backend.flavour, "precision": self.spec.precision,
                  "optimization_level": self.spec.optimization_level,
                  "targets": "-".join(resolved_targets(self.spec, backend)) or "native"}
        return self.engine_name.format(**fields)

    @property
    def common_params(self) -> dict[str, Any]:
        return {"backend": self.backend_name, "flavour": self.toolchain.backend.flavour}

    def engine_params(self) -> dict[str, Any]:
        from trtcas.rules.trt.engine import effective_builder_config

        backend = self.toolchain.backend
        return {
            **self.common_params, "spec": spec_params(self.spec), "refittable": self.refittable,
            "aot": bool(backend.capabilities.aot_targets),
            "effective_config": effective_builder_config(self.spec, backend, self.refittable),
        }


def engine_settings(config: Mapping[str, Any]) -> EngineSettings:
    """The [engine] table, validated against the backend it names."""
    from trtcas.rules.trt.engine import EngineSpec, decide_refittable, validate_spec
    from trtcas.rules.trt.toolchain import load_toolchain

    table = dict(_table(config, "engine"))
    unknown = set(table) - ENGINE_KEYS
    if unknown:
        raise TrtcasError(f"[engine]: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(ENGINE_KEYS))}")
    backend_name = str(table.pop("backend", "auto"))
    try:
        spec = EngineSpec(**table)
    except (TypeError, ValueError) as exc:  # a value of the wrong kind where a check is missing
        raise TrtcasError(f"[engine]: {exc}") from None
    toolchain = load_toolchain(backend_name)
    validate_spec(spec, toolchain.backend)
    refittable, why = decide_refittable(spec, toolchain.backend)
    target = str(_table(config, "target").get("name", "target"))
    settings = EngineSettings(backend_name, toolchain, spec, refittable, why, _engine_name(config), target)
    settings.plan_path(0)  # a template naming an unknown field fails here, before any build
    return settings


def _engine_name(config: Mapping[str, Any]) -> str:
    """``[output] engine``: a relative path template, e.g. ``"{target}-{rank}.engine"``."""
    import string
    from pathlib import PurePosixPath

    name = _table(config, "output").get("engine", DEFAULT_ENGINE_NAME)
    where = f"[output] engine = {name!r}"
    if not isinstance(name, str) or not name.strip():
        raise TrtcasError(f"{where}: must be a file name template like \"{{target}}-rank{{rank}}.engine\"")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(name) if f is not None}
    except ValueError as exc:
        raise TrtcasError(f"{where}: {exc}; write fields as {{rank}}") from None
    unknown = fields - set(ENGINE_NAME_FIELDS)
    if unknown:
        raise TrtcasError(f"{where}: unknown field {{{sorted(unknown)[0]}}}; use some of: "
                          + ", ".join(f"{{{f}}}" for f in ENGINE_NAME_FIELDS))
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.endswith("/"):
        raise TrtcasError(f"{where}: must be a file path inside [output] dir (relative, no '..')")
    return name


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


def engine_actions(
    settings: EngineSettings, rank: int, network: Action, build_inputs: Mapping[str, InputRef],
    engine_params: Mapping[str, Any],
) -> list[Action]:
    """``engine[rank r]`` after ``network`` (plus the plan-shaping subset and ``refit[rank r]``
    when refittable); ``build_inputs`` are the unkeyed inputs the engine is built from."""
    def out(name: str) -> InputRef:
        return InputRef(action=network.id, output=name)

    plan_path = settings.plan_path(rank)
    inputs = {**build_inputs, "structure": out("structure"), "io": out("io"), "refit_names": out("refit_names")}
    actions = []
    if settings.refittable:
        shaping = Action(f"plan_shaping_weights[rank{rank}]", "trt.plan_shaping_weights", {}, {"weights": out("weights")})
        inputs["plan_shaping_weights"] = InputRef(action=shaping.id, output="weights")
        actions.append(shaping)
    else:
        inputs["weights"] = out("weights")
    engine = Action(f"engine[rank{rank}]", "trt.engine", dict(engine_params), inputs,
                    {} if settings.refittable else {"plan": plan_path})
    actions.append(engine)
    if settings.refittable:
        actions.append(Action(
            f"refit[rank{rank}]", "trt.refit", settings.common_params,
            {"engine": InputRef(action=engine.id, output="plan"), "names": InputRef(action=engine.id, output="names"),
             "weights": out("weights")},
            {"plan": plan_path},
        ))
    return actions
