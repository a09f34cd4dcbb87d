"""Build an engine plan from a parsed network, and say exactly what the builder used.

The engine's cache key must contain everything that shapes the plan. Rather than
reconstructing that from the spec (and missing a library default), the effective builder
config is *read back* from a real ``IBuilderConfig`` after the spec was applied: every
enabled flag (including ones on by default, like TF32), the resolved optimization level,
compute-capability targets, memory-pool limits, tactic sources and the rest. The same two
functions, :func:`_configure` and :func:`_describe`, serve both the key
(:func:`effective_builder_config`) and the build (:func:`build_plan`), so the key cannot
drift from what was built.

The environment fingerprint (flavour, exact version, CUDA, driver, GPU) is not repeated
here; the graph adds it to the key.
"""
from __future__ import annotations

import functools
import mmap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Mapping

from trtcas.errors import TrtcasError
from trtcas.graph.interrupt import BuildCancelled
from trtcas.rules.messages import require, tidy_message
from trtcas.rules.trt.backend import MEMORY_POOLS, PRECISION_FLAGS, Backend
from trtcas.rules.trt.monitor import progress_monitor
from trtcas.rules.trt.native_stderr import native_stderr_to
from trtcas.rules.trt.network import ParsedNetwork, Profile, apply_profiles
from trtcas.rules.trt.target_gate import BUILD_GATE

PRECISIONS = ("fp32",) + tuple(PRECISION_FLAGS)
REFIT_CHOICES = ("auto", "yes", "no")
OPTIMIZATION_LEVELS = range(0, 6)
HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")


@dataclass(frozen=True)
class EngineSpec:
    """What the user asked of the builder. Values are normalized on construction (targets
    sorted and de-duplicated, mappings turned into sorted tuples) so equal requests compare
    and hash equal, and checked for what can be checked without a backend.

    - ``precision``: the lowest precision the builder may pick beyond the network's own
      types. ``fp32`` sets no reduced-precision flag; on a backend whose networks are
      strongly typed (TensorRT-RTX) it is the only choice and the ONNX types decide.
    - ``targets``: GPU architectures to compile for (``"sm86"``); empty = the backend's
      default targets.
    - ``refit``: ``auto`` builds refittable when the backend can here; ``yes`` requires it.
    - ``strip_weights``: leave refittable weights out of the plan (needs a refittable build).
    - ``memory_pool_limits``: pool name (``workspace``, ``tactic_dram``,
      ``tactic_shared_memory``) -> bytes; unnamed pools keep the builder's default.
    - ``tactic_sources``: names of the tactic sources to allow; None = builder default.
    - ``hardware_compatibility``: ``none|ampere_plus|same_compute_capability``.
    - ``version_compatible`` / ``exclude_lean_runtime``: forward-compatible plans; the
      lean runtime must then be shipped separately if excluded.
    """

    precision: str = "fp32"
    optimization_level: int = 3
    targets: tuple[str, ...] = ()
    refit: str = "auto"
    strip_weights: bool = False
    profiles: tuple[Profile, ...] = ()
    memory_pool_limits: tuple[tuple[str, int], ...] = ()
    tactic_sources: tuple[str, ...] | None = None
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False

    def __post_init__(self) -> None:
        require(self.precision in PRECISIONS,
                 f"unknown precision {self.precision!r}; use one of: {', '.join(PRECISIONS)}")
        require(isinstance(self.optimization_level, int) and not isinstance(self.optimization_level, bool)
                 and self.optimization_level in OPTIMIZATION_LEVELS,
                 f"optimization_level {self.optimization_level!r} is out of range; use an integer from 0 to 5")
        require(self.refit in REFIT_CHOICES, f"unknown refit choice {self.refit!r}; use auto, yes or no")
        require(not (self.strip_weights and self.refit == "no"),
                 "strip_weights = true needs a refittable engine but refit = \"no\"; set refit to auto or yes")
        require(self.hardware_compatibility in HARDWARE_COMPATIBILITY,
                 f"unknown hardware_compatibility {self.hardware_compatibility!r}; "
                 f"use one of: {', '.join(HARDWARE_COMPATIBILITY)}")
        require(not (self.exclude_lean_runtime and not self.version_compatible),
                 "exclude_lean_runtime = true only applies to version_compatible engines; set both or neither")
        object.__setattr__(self, "targets", _normal_targets(self.targets))
        example = "[{ x = { min = [1, 8], opt = [4, 8], max = [16, 8] } }]"
        require(isinstance(self.profiles, (list, tuple)) and all(isinstance(p, (Profile, Mapping)) for p in self.profiles),
                f"profiles must be a list of tables, one per profile, like {example}; got {self.profiles!r}")
        object.__setattr__(self, "profiles", tuple(p if isinstance(p, Profile) else Profile(p)
                                                   for p in self.profiles))
        object.__setattr__(self, "memory_pool_limits", _normal_pools(self.memory_pool_limits))
        if self.tactic_sources is not None:
            require(not isinstance(self.tactic_sources, str),
                     f"tactic_sources must be a list of names, got {self.tactic_sources!r}")
            object.__setattr__(self, "tactic_sources", tuple(sorted({s.lower() for s in self.tactic_sources})))


@dataclass(frozen=True, eq=False)
class EnginePlan:
    """A built plan with what it took: the log TensorRT wrote, wall seconds, and the
    effective builder config (the same dict :func:`effective_builder_config` returns)."""

    plan: bytes | memoryview
    log: tuple[str, ...]
    seconds: float
    effective_config: dict[str, Any]
    path: Path | None = None  # the file the plan was streamed to (``plan`` maps it), if it was


def validate_spec(spec: EngineSpec, backend: Backend) -> None:
    """Check the parts of a spec that depend on the backend; one line per problem."""
    caps, who = backend.capabilities, f"{backend.flavour} {backend.version}"
    if spec.targets and not caps.aot_targets:
        raise TrtcasError(f"{who} builds only for the GPU it runs on and takes no targets; remove "
                          f"engine.targets ({', '.join(spec.targets)}) or use a backend with AOT targets")
    for target in spec.targets:
        require(target in caps.aot_targets,
                 f"target {target!r} is not available in {who}; choose from: {', '.join(caps.aot_targets)}")
    if spec.precision != "fp32" and spec.precision not in caps.precision_flags:
        why = ("its networks are strongly typed, so the ONNX tensor types decide: export the model in "
               f"{spec.precision} and keep precision = \"fp32\"") if caps.strongly_typed_networks else \
            "choose another precision"
        raise TrtcasError(f"precision {spec.precision!r} is not a builder flag in {who}; {why}")
    for pool, _ in spec.memory_pool_limits:
        require(pool in caps.memory_pools,
                 f"memory pool {pool!r} does not exist in {who}; use one of: {', '.join(caps.memory_pools)}")
    for source in spec.tactic_sources or ():
        require(source in caps.tactic_sources, f"tactic source {source!r} does not exist in {who}; "
                                                f"use some of: {', '.join(caps.tactic_sources) or 'none'}")
    if spec.hardware_compatibility != "none":
        require(spec.hardware_compatibility in caps.hardware_compatibility_levels,
                 f"hardware_compatibility {spec.hardware_compatibility!r} is not supported by {who}; "
                 "set it to \"none\" (name targets instead where the backend has them)")
    require(not spec.version_compatible or caps.version_compatible,
             f"version_compatible engines are not supported by {who}; set version_compatible = false")


def resolved_targets(spec: EngineSpec, backend: Backend) -> tuple[str, ...]:
    """The targets the plan is compiled for: the spec's, else the backend's defaults."""
    return spec.targets or backend.capabilities.default_targets


def decide_refittable(spec: EngineSpec, backend: Backend) -> tuple[bool, str]:
    """Whether to build refittable, and why (for ``trtcas explain`` and build logs).

    A refittable engine lets a fine-tune skip the build (refit instead) but the builder can
    only make one where the backend says so; ``auto`` falls back to embedding weights.
    """
    caps, who = backend.capabilities, f"{backend.flavour} {backend.version}"
    why_not = (f"{who} cannot build refittable engines on this machine "
               f"({'no GPU found' if not caps.gpu_present else 'GPU ' + str(caps.gpu_target) + ' not supported'})")
    if spec.refit == "no":
        return False, "refit = \"no\": weights are embedded in the engine"
    if caps.can_build_refittable:
        return True, f"refit = \"{spec.refit}\": {who} can build refittable engines here"
    if spec.refit == "yes":
        raise TrtcasError(f"refit = \"yes\" but {why_not}; set engine.refit = \"auto\" or \"no\", "
                          "or build on a machine with a supported GPU")
    if spec.strip_weights:
        raise TrtcasError(f"strip_weights = true needs a refittable engine but {why_not}; "
                          "set strip_weights = false or build on a machine with a supported GPU")
    return False, f"refit = \"auto\": {why_not}, so weights are embedded in the engine"


def effective_builder_config(spec: EngineSpec, backend: Backend, refittable: bool) -> dict[str, Any]:
    """Everything the builder will use for ``spec``, as a canonical dict for the engine key.

    Read back from a real builder config (see the module docstring). Keys are sorted;
    values are str, int, bool, None, lists and dicts only.
    """
    _check_refittable_arg(spec, refittable)
    validate_spec(spec, backend)
    logger = backend.logger("error")
    builder = backend.trt.Builder(logger)
    config = builder.create_builder_config()
    _configure(config, spec, backend, refittable)
    return _describe(config, spec, backend, refittable)


def build_plan(backend: Backend, parsed: ParsedNetwork, spec: EngineSpec, refittable: bool,
               into: Path | None = None) -> EnginePlan:
    """Build a serialized engine. ``refittable`` comes from :func:`decide_refittable`; it
    is an argument so the caller's decision (already part of the key) is the one used.

    ``into``: a new file to stream the plan to, where the flavour can (see :func:`_serialize`).

    Refittable builds use ``REFIT`` (any new weight values), not ``REFIT_IDENTICAL``: the
    cache refits engines with *different* weights (a fine-tune, another TP rank), and
    TensorRT documents that different weights under ``REFIT_IDENTICAL`` "yield
    unpredictable behavior". ``STRIP_PLAN`` is added when ``strip_weights``.
    """
    _check_refittable_arg(spec, refittable)
    validate_spec(spec, backend)
    config = parsed.builder.create_builder_config()
    _configure(config, spec, backend, refittable)
    apply_profiles(parsed, config, spec.profiles)
    effective = _describe(config, spec, backend, refittable)
    monitor = progress_monitor(backend.trt)  # progress bar and Ctrl-C (see rules.trt.monitor)
    if monitor is not None:
        config.progress_monitor = monitor
    mark = len(parsed.logger.lines)
    start = time.perf_counter()
    with BUILD_GATE.open_for(tuple(effective.get("targets") or ())), \
            native_stderr_to(parsed.logger.native):  # see target_gate; Myelin's raw stderr lines join the build log
        serialized, streamed_to = _serialize(backend.trt, parsed, config, into)
    seconds = time.perf_counter() - start
    if serialized is None and monitor is not None and monitor.cancelled:
        raise BuildCancelled(f"building {parsed.source} was cancelled")
    if serialized is None:
        raise TrtcasError(_build_failure(backend, parsed, spec, refittable, parsed.logger.errors(mark)))
    return EnginePlan(plan=serialized, log=tuple(parsed.logger.lines[mark:]), seconds=seconds,
                      effective_config=effective, path=streamed_to)


def _serialize(trt: Any, parsed: ParsedNetwork, config: Any, into: Path | None) -> tuple[memoryview | None, Path | None]:
    """The plan as a view, never a copy (a plan is as large as the weights it embeds), or
    None when the build failed; and the file it was streamed to, if it was.

    Where the flavour can stream a plan and ``into`` is given, TensorRT writes it to that
    file piece by piece, and the view maps the file: the process never holds the plan in
    its own memory, next to the copies of the weights TensorRT still holds when it writes.
    Else the view is of TensorRT's host memory. Both give the same bytes.
    """
    if into is None or not hasattr(parsed.builder, "build_serialized_network_to_stream"):
        serialized = parsed.builder.build_serialized_network(parsed.network, config)
        return (None if serialized is None else memoryview(serialized)), None
    with open(into, "xb") as out:
        writer = _file_writer_class(trt)(out)
        built = parsed.builder.build_serialized_network_to_stream(parsed.network, config, writer)
    if writer.error is not None:
        raise writer.error
    if not built:
        return None, None
    with open(into, "rb") as stream:
        return memoryview(mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)), into


@functools.cache
def _file_writer_class(trt: Any) -> type:
    class FileWriter(trt.IStreamWriter):
        """TensorRT's stream writer into an open file. A failed write (a full disk) is kept
        to be raised after the build, which TensorRT stops once a write comes up short."""

        def __init__(self, out: BinaryIO):
            trt.IStreamWriter.__init__(self)
            self.out = out
            self.error: OSError | None = None

        def write(self, data) -> int:  # noqa: D102 (TensorRT's callback)
            if self.error is not None:
                return 0
            try:
                return self.out.write(data)
            except OSError as exc:
                self.error = exc
                return 0

    return FileWriter


# -- applying a spec to a builder config, and reading it back ----------------------------


def _configure(config: Any, spec: EngineSpec, backend: Backend, refittable: bool) -> None:
    trt = backend.trt
    flag = trt.BuilderFlag
    if spec.precision != "fp32":
        config.set_flag(getattr(flag, PRECISION_FLAGS[spec.precision]))
    config.builder_optimization_level = spec.optimization_level
    targets = resolved_targets(spec, backend)
    if targets:
        config.num_compute_capabilities = len(targets)
        for index, target in enumerate(targets):
            config.set_compute_capability(trt.ComputeCapability.__members__[target.upper()], index)
    for pool, limit in spec.memory_pool_limits:
        config.set_memory_pool_limit(trt.MemoryPoolType.__members__[pool.upper()], limit)
    if spec.tactic_sources is not None:
        mask = 0
        for source in spec.tactic_sources:
            mask |= 1 << int(trt.TacticSource.__members__[source.upper()])
        config.set_tactic_sources(mask)
    if spec.hardware_compatibility != "none":
        config.hardware_compatibility_level = \
            trt.HardwareCompatibilityLevel.__members__[spec.hardware_compatibility.upper()]
    if spec.version_compatible:
        config.set_flag(flag.VERSION_COMPATIBLE)
    if spec.exclude_lean_runtime:
        config.set_flag(flag.EXCLUDE_LEAN_RUNTIME)
    if refittable:
        config.set_flag(flag.REFIT)
        if spec.strip_weights:
            config.set_flag(flag.STRIP_PLAN)


# Scalar builder-config settings that can change a plan, read back when the flavour has them.
_SCALAR_SETTINGS = ("avg_timing_iterations", "default_device_type", "engine_capability", "l2_limit_for_tiling",
                    "max_aux_streams", "max_num_tactics", "profiling_verbosity", "runtime_platform",
                    "tiling_optimization_level")


def _describe(config: Any, spec: EngineSpec, backend: Backend, refittable: bool) -> dict[str, Any]:
    trt, caps = backend.trt, backend.capabilities
    out: dict[str, Any] = {
        "precision": spec.precision,
        "strongly_typed": caps.strongly_typed_networks,
        "refittable": refittable,
        "strip_weights": spec.strip_weights,
        "flags": sorted(name for name, f in trt.BuilderFlag.__members__.items() if config.get_flag(f)),
        "optimization_level": int(config.builder_optimization_level),
        "memory_pool_limits": {p: int(config.get_memory_pool_limit(trt.MemoryPoolType.__members__[p.upper()]))
                               for p in sorted(caps.memory_pools)},
        "profiles": [p.canonical() for p in spec.profiles],
    }
    if caps.aot_targets:
        out["targets"] = [config.get_compute_capability(i).name.lower()
                          for i in range(config.num_compute_capabilities)]
    else:  # the plan is for the GPU the build runs on
        out["targets"] = [caps.gpu_target] if caps.gpu_target else []
    if hasattr(trt, "TacticSource"):
        mask = int(config.get_tactic_sources())
        out["tactic_sources"] = sorted(n.lower() for n, s in trt.TacticSource.__members__.items()
                                       if mask & (1 << int(s)))
    # Reading the level on a flavour that ignores it only logs "unsupported": skip it there.
    out["hardware_compatibility"] = (config.hardware_compatibility_level.name.lower()
                                     if caps.hardware_compatibility_levels else None)
    if hasattr(trt, "PreviewFeature"):
        out["preview_features"] = sorted(n.lower() for n, f in trt.PreviewFeature.__members__.items()
                                         if config.get_preview_feature(f))
    for name in _SCALAR_SETTINGS:
        if hasattr(config, name):
            value = getattr(config, name)
            out[name] = value.name.lower() if hasattr(value, "name") else int(value)
    return dict(sorted(out.items()))


def _build_failure(backend: Backend, parsed: ParsedNetwork, spec: EngineSpec, refittable: bool,
                   errors: list[str]) -> str:
    caps, who = backend.capabilities, f"{backend.flavour} {backend.version}"
    text = " ".join(errors)
    if "CUDA_SUCCESS" in text and not caps.gpu_present:
        if refittable or spec.strip_weights:
            return (f"building {parsed.source} failed: {who} cannot build refittable or weight-stripped engines "
                    "without a GPU (Myelin CHECK(status == CUDA_SUCCESS) failed); refittable/weight-stripped "
                    "builds need a GPU: set engine.refit = \"auto\" or \"no\" here, or build on a supported GPU")
        return (f"building {parsed.source} failed: Myelin needed a GPU on this GPU-less machine; "
                "build on a supported GPU")
    last = " | ".join(tidy_message(e[4:], 300) for e in errors[-2:]) or "no error was logged"
    hint = "the builder log has the details"
    if "workspace" in text.lower():
        hint = "raise memory_pool_limits.workspace or leave it at the default"
    elif "nvinfer_lean" in text:
        hint = "version_compatible needs the lean runtime library: set exclude_lean_runtime = true or install it"
    return f"building {parsed.source} for {', '.join(resolved_targets(spec, backend)) or 'this GPU'} " \
           f"with {who} failed: {last}; {hint}"


# -- small checks ------------------------------------------------------------------------




def _check_refittable_arg(spec: EngineSpec, refittable: bool) -> None:
    """A caller bug, not a user error: the decision contradicts the spec."""
    if refittable and spec.refit == "no":
        raise ValueError("refittable=True contradicts spec.refit == 'no'; use decide_refittable()")
    if spec.strip_weights and not refittable:
        raise ValueError("spec.strip_weights needs refittable=True; use decide_refittable()")


def _normal_targets(targets: Any) -> tuple[str, ...]:
    """``["SM86", "sm80", "sm86"]`` -> ``("sm80", "sm86")``: order and case never matter."""
    require(not isinstance(targets, str), f"targets must be a list like [\"sm86\"], got {targets!r}")
    normal = set()
    for target in targets:
        t = str(target).strip().lower()
        require(t.startswith("sm") and t[2:].isdigit(),
                 f"target {target!r} is not a compute capability name; write it like \"sm86\"")
        normal.add(t)
    return tuple(sorted(normal, key=lambda t: int(t[2:])))


def _normal_pools(pools: Any) -> tuple[tuple[str, int], ...]:
    items = pools.items() if isinstance(pools, Mapping) else pools
    normal = {}
    for name, limit in items:
        key = str(name).lower()
        require(key in MEMORY_POOLS, f"unknown memory pool {name!r}; use one of: {', '.join(MEMORY_POOLS)}")
        require(isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0,
                 f"memory pool {key} limit must be a non-negative number of bytes, got {limit!r}")
        normal[key] = int(limit)
    return tuple(sorted(normal.items()))
