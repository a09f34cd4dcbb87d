"""The engine half of every TensorRT target: ``[engine]`` settings -> the actions after a network.

Both planners (ONNX files and LLM checkpoint ranks) end the same way per rank: an engine
built from the network's structure, keyed on the weights when it must embed them, and
otherwise followed by a refit with that rank's weights. This is that shared tail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from trtcas.errors import TrtcasError
from trtcas.graph.action import Action, InputRef

ENGINE_KEYS = {
    "backend", "precision", "optimization_level", "targets", "refit", "strip_weights", "profiles",
    "memory_pool_limits", "tactic_sources", "hardware_compatibility", "version_compatible", "exclude_lean_runtime",
    "matrix",
}
# A matrix entry overrides engine settings for its own engine; the network (backend, profiles)
# is shared by all entries. ``name`` labels the entry (default: its targets, e.g. "sm86").
MATRIX_KEYS = (ENGINE_KEYS - {"backend", "profiles", "matrix"}) | {"name"}
_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")
# [output] keys of every engine target: where each rank's plan goes under [output] dir.
OUTPUT_KEYS = {"engine"}
# {variant} is "rank0", "rank0-sm86" (a matrix entry of a rank) or "sm86" (of a one-network target).
DEFAULT_ENGINE_NAME = "engines/{variant}.engine"
ENGINE_NAME_FIELDS = ("target", "rank", "variant", "label", "backend", "precision", "optimization_level", "targets")
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

    def plan_path(self, rank: int, variant: str = "", label: str = "") -> str:
        """Where a plan goes, relative to the output dir (not part of any key): the
        ``[output] engine`` template filled in (see ENGINE_NAME_FIELDS)."""
        from trtcas.rules.trt.engine import resolved_targets

        backend = self.toolchain.backend
        fields = {"target": self.target, "rank": rank, "variant": variant or f"rank{rank}", "label": label,
                  "backend": backend.flavour, "precision": self.spec.precision,
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
    """The [engine] table (without its matrix), validated against the backend it names."""
    table = dict(_table(config, "engine"))
    unknown = set(table) - ENGINE_KEYS
    if unknown:
        raise TrtcasError(f"[engine]: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(ENGINE_KEYS))}")
    table.pop("matrix", None)
    return _settings(table, config)


def engine_variants(config: Mapping[str, Any]) -> list[tuple[str | None, EngineSettings]]:
    """One (label, settings) per engine to build: ``[(None, settings)]`` without a matrix,
    else one per ``[engine] matrix`` entry (its settings over the table's), labelled by its
    ``name`` or its targets (``sm86``, ``sm86+sm89``)."""
    base = engine_settings(config)
    matrix = _table(config, "engine").get("matrix")
    if matrix is None:
        return [(None, base)]
    if not isinstance(matrix, list) or not matrix or not all(isinstance(e, dict) for e in matrix):
        raise TrtcasError("[engine] matrix must be a non-empty list of tables, e.g. [{ targets = [\"sm86\"] }, { targets = [\"sm120\"] }]")
    table = {k: v for k, v in _table(config, "engine").items() if k != "matrix"}
    variants: list[tuple[str | None, EngineSettings]] = []
    for index, entry in enumerate(matrix):
        unknown = set(entry) - MATRIX_KEYS
        if unknown:
            raise TrtcasError(f"[engine] matrix entry {index}: cannot set {', '.join(sorted(unknown))} "
                              f"(an entry may set: {', '.join(sorted(MATRIX_KEYS))})")
        settings = _settings({**table, **{k: v for k, v in entry.items() if k != "name"}}, config)
        label = str(entry.get("name") or "+".join(settings.spec.targets))
        if not _LABEL.match(label):
            raise TrtcasError(f"[engine] matrix entry {index}: give it targets or a name of letters, digits, '.', '_', '+', '-' "
                              f"(got {label!r})")
        if label in (seen := [v[0] for v in variants]):
            raise TrtcasError(f"[engine] matrix entry {index}: {label!r} is already entry {seen.index(label)}; give one a name")
        variants.append((label, settings))
    return variants


def _settings(table: dict[str, Any], config: Mapping[str, Any]) -> EngineSettings:
    from trtcas.rules.trt.backend import BACKEND_NAMES
    from trtcas.rules.trt.engine import EngineSpec, decide_refittable, validate_spec
    from trtcas.rules.trt.toolchain import load_toolchain

    backend_name = str(table.pop("backend", "auto"))
    try:
        spec = EngineSpec(**table)
    except (TypeError, ValueError) as exc:  # a value of the wrong kind where a check is missing
        raise TrtcasError(f"[engine]: {exc}") from None
    toolchain = load_toolchain(backend_name)
    if backend_name in BACKEND_NAMES:  # "auto" is the flavour it resolves to: the same engine, the same key
        backend_name = toolchain.backend.flavour
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


def check_distinct_plans(actions: list[Action]) -> None:
    """Two engines must not be placed in one file (``[output] engine`` without ``{variant}``
    or ``{rank}`` for a target of several engines)."""
    seen: dict[str, str] = {}
    for action in actions:
        path = action.materialize.get("plan")
        if path is None:
            continue
        if path in seen:
            raise TrtcasError(f"[output] engine: {seen[path]} and {action.id} would both be written to {path}; "
                              "put {variant} (or {rank}) in the name")
        seen[path] = action.id


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
    engine_params: Mapping[str, Any], label: str | None = None, rank_in_id: bool = True,
) -> list[Action]:
    """``engine[rank r]`` after ``network`` (plus the plan-shaping subset and ``refit[rank r]``
    when refittable); ``build_inputs`` are the unkeyed inputs the engine is built from.

    A matrix entry's ``label`` names its actions and plan: ``engine[rank0,sm86]`` and
    ``engines/rank0-sm86.engine``, or ``engine[sm86]`` and ``engines/sm86.engine`` without
    ``rank_in_id`` (single-network targets)."""
    def out(name: str) -> InputRef:
        return InputRef(action=network.id, output=name)

    tag = f"rank{rank}" if label is None else (f"rank{rank},{label}" if rank_in_id else label)
    plan_path = settings.plan_path(rank, tag.replace(",", "-"), label or "")
    inputs = {**build_inputs, "structure": out("structure"), "io": out("io"), "refit_names": out("refit_names")}
    actions = []
    if settings.refittable:
        shaping = Action(f"plan_shaping_weights[{tag}]", "trt.plan_shaping_weights", {}, {"weights": out("weights")})
        inputs["plan_shaping_weights"] = InputRef(action=shaping.id, output="weights")
        actions.append(shaping)
    else:
        inputs["weights"] = out("weights")
    engine = Action(f"engine[{tag}]", "trt.engine", dict(engine_params), inputs,
                    {} if settings.refittable else {"plan": plan_path})
    actions.append(engine)
    if settings.refittable:
        actions.append(Action(
            f"refit[{tag}]", "trt.refit", settings.common_params,
            {"engine": InputRef(action=engine.id, output="plan"), "names": InputRef(action=engine.id, output="names"),
             "weights": out("weights")},
            {"plan": plan_path},
        ))
    return actions
