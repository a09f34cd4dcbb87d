"""One adapter over the two TensorRT flavours: full ``tensorrt`` and ``tensorrt_rtx``.

Both expose the same Python API (Builder, OnnxParser, BuilderFlag, Refitter, Runtime), but
they differ in what they can do on a given machine: TensorRT-RTX compiles engines ahead of
time for named GPU architectures even with no GPU present, yet cannot build a refittable or
weight-stripped engine without one; full TensorRT builds only for the GPU it runs on. Rules
ask :class:`BackendCapabilities` ("can I build refittable here?") instead of testing the
flavour, so the knowledge of which flavour can do what lives in this one module.

TensorRT is imported lazily, inside functions, so that ``trtcas cache ...`` works on a
machine without it.
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import os
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from trtcas.errors import TrtcasError

FLAVOURS = ("tensorrt", "tensorrt_rtx")
BACKEND_NAMES = ("auto",) + FLAVOURS

# How to get each flavour; named in the error when it is missing.
_INSTALL_HINT = {
    "tensorrt": "pip install tensorrt --extra-index-url https://pypi.nvidia.com",
    "tensorrt_rtx": "pip install tensorrt-rtx-cu13",
}
_OTHER = {"tensorrt": "tensorrt_rtx", "tensorrt_rtx": "tensorrt"}

# The targets TensorRT-RTX compiles for when none are named. We always pass targets
# explicitly (so an engine's key names exactly what it was compiled for, independent of a
# library default); this is the list used when the user names none. Seen on 1.7.1.116.
_RTX_DEFAULT_TARGETS = ("sm80", "sm86", "sm89", "sm120")

# Reduced-precision builder flags, by the precision name used in EngineSpec.
PRECISION_FLAGS = {"fp16": "FP16", "bf16": "BF16", "int8": "INT8", "fp8": "FP8"}

# Memory pools that matter to a GPU build (the DLA pools do not exist on the GPUs we target).
MEMORY_POOLS = ("workspace", "tactic_dram", "tactic_shared_memory")

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class BackendCapabilities:
    """What this backend can do on this machine. Rules branch on these, never on flavour.

    ``aot_targets`` are the GPU architectures the builder can compile for without that GPU
    (``"sm86"`` ...); empty means "only the GPU the build runs on". ``default_targets`` are
    the targets used when a spec names none. ``precision_flags`` are the precisions that
    exist as builder flags (empty when networks are strongly typed and the network's own
    types decide). ``hardware_compatibility_levels`` is empty when the builder ignores the
    setting (TensorRT-RTX logs "unsupported" and carries on, so we refuse it up front).
    """

    builds_without_gpu: bool
    gpu_present: bool
    gpu_target: str | None
    can_build_refittable: bool
    can_refit: bool
    aot_targets: tuple[str, ...]
    default_targets: tuple[str, ...]
    precision_flags: tuple[str, ...]
    strongly_typed_networks: bool
    tactic_sources: tuple[str, ...]
    memory_pools: tuple[str, ...]
    hardware_compatibility_levels: tuple[str, ...]
    version_compatible: bool


@dataclass(frozen=True)
class Backend:
    """A loaded TensorRT flavour: the module, its exact version and what it can do here."""

    flavour: str
    version: str
    capabilities: BackendCapabilities
    trt: ModuleType = field(repr=False, compare=False)

    def logger(self, min_severity: str = "info") -> Any:
        """A ``trt.ILogger`` that keeps messages in ``.lines`` so build logs can be stored.

        ``min_severity``: ``internal_error|error|warning|info|verbose``. Lines look like
        ``"[W] message"``. TensorRT calls the logger from its own threads; ``list.append``
        is atomic, so no lock is needed.
        """
        return _capturing_logger_class(self.trt)(min_severity)


@functools.cache
def load_backend(name: str = "auto") -> Backend:
    """Load the named TensorRT flavour (``auto``: ``tensorrt`` if importable, else
    ``tensorrt_rtx``). Cached per name: capability probing touches the CUDA driver once.
    Tests that change ``TRTCAS_ASSUME_NO_GPU`` call ``load_backend.cache_clear()``.
    """
    if name not in BACKEND_NAMES:
        raise TrtcasError(f"unknown TensorRT backend {name!r}; use one of: {', '.join(BACKEND_NAMES)}")
    if name == "auto":
        for flavour in FLAVOURS:
            try:
                return _load(flavour, _import(flavour))
            except ImportError:
                continue
        raise TrtcasError(
            "no TensorRT flavour is installed (tried tensorrt, tensorrt_rtx); "
            f"{_INSTALL_HINT['tensorrt_rtx']} (or {_INSTALL_HINT['tensorrt']})")
    try:
        module = _import(name)
    except ImportError as exc:
        raise TrtcasError(
            f"TensorRT flavour {name!r} is not installed ({_first_line(exc)}); {_INSTALL_HINT[name]} "
            f"or set engine.backend = \"{_OTHER[name]}\"") from None
    return _load(name, module)


def _import(flavour: str) -> ModuleType:
    """Import a flavour; a broken install (missing shared library) counts as not installed."""
    try:
        return importlib.import_module(flavour)
    except OSError as exc:  # e.g. libnvinfer.so.10 not found when the module loads
        raise ImportError(str(exc)) from exc


def _load(flavour: str, trt: ModuleType) -> Backend:
    return Backend(flavour=flavour, version=str(trt.__version__),
                   capabilities=_capabilities(flavour, trt, _detect_gpu_target()), trt=trt)


def _capabilities(flavour: str, trt: ModuleType, gpu_target: str | None) -> BackendCapabilities:
    """Derive what the flavour can do here: from its API where the API tells, otherwise
    from facts seen on real machines (see the comments)."""
    aot = _aot_targets(trt)
    gpu_present = gpu_target is not None
    builder_flags = set(trt.BuilderFlag.__members__)
    if flavour == "tensorrt_rtx":
        # CPU-only AOT builds work, but any refittable weight makes the build fail with
        # MyelinCheckException CUDA_SUCCESS; refit needs a GPU the flavour supports (an
        # H100, SM90, is refused: "target_sm '90' does not have arch kind assigned").
        gpu_usable = gpu_target in aot
        builds_without_gpu, can_refit = True, gpu_usable
        default_targets = tuple(t for t in _RTX_DEFAULT_TARGETS if t in aot)
        strongly_typed = True  # create_network(0) already yields a strongly typed network
        hw_levels: tuple[str, ...] = ()  # set/getHardwareCompatibilityLevel are "unsupported"
    else:
        builds_without_gpu, can_refit = False, gpu_present
        default_targets = ()
        strongly_typed = False  # we create networks with no flags: weakly typed
        hw_levels = _enum_names(trt, "HardwareCompatibilityLevel", exclude=("NONE",))
    return BackendCapabilities(
        builds_without_gpu=builds_without_gpu,
        gpu_present=gpu_present,
        gpu_target=gpu_target,
        can_build_refittable=can_refit,
        can_refit=can_refit,
        aot_targets=aot,
        default_targets=default_targets,
        precision_flags=tuple(p for p, flag in PRECISION_FLAGS.items() if flag in builder_flags),
        strongly_typed_networks=strongly_typed,
        tactic_sources=_enum_names(trt, "TacticSource"),
        memory_pools=tuple(p for p in MEMORY_POOLS if p.upper() in trt.MemoryPoolType.__members__),
        hardware_compatibility_levels=hw_levels,
        version_compatible="VERSION_COMPATIBLE" in builder_flags,
    )


def _aot_targets(trt: ModuleType) -> tuple[str, ...]:
    """``ComputeCapability`` members as ``sm<NN>``, ascending; empty when the flavour has no
    ahead-of-time targets (full TensorRT builds for the GPU it runs on)."""
    enum = getattr(trt, "ComputeCapability", None)
    if enum is None:
        return ()
    numbers = sorted(int(n[2:]) for n in enum.__members__ if n.startswith("SM") and n[2:].isdigit())
    return tuple(f"sm{n}" for n in numbers)


def _enum_names(trt: ModuleType, enum_name: str, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    enum = getattr(trt, enum_name, None)
    if enum is None:
        return ()
    return tuple(n.lower() for n in enum.__members__ if n not in exclude)


def _detect_gpu_target() -> str | None:
    """``"sm86"`` for the first visible CUDA device, or None when there is none.

    Asks the driver API directly (``libcuda``) rather than TensorRT or the CUDA runtime,
    which on a driverless machine print errors or abort. ``TRTCAS_ASSUME_NO_GPU=1`` forces
    None, to exercise CPU-only behaviour on a GPU machine.
    """
    if os.environ.get("TRTCAS_ASSUME_NO_GPU", "").strip().lower() in _TRUE:
        return None
    try:
        cuda = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return None
    count, device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    try:
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
            return None
        if cuda.cuDeviceGet(ctypes.byref(device), 0) != 0:
            return None
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
        if (cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device) != 0
                or cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device) != 0):
            return None
    except AttributeError:  # a libcuda without the symbols: treat as no GPU
        return None
    return f"sm{major.value}{minor.value}"


_SEVERITY_ORDER = ("internal_error", "error", "warning", "info", "verbose")
_SEVERITY_TAG = {"internal_error": "F", "error": "E", "warning": "W", "info": "I", "verbose": "V"}


@functools.cache
def _capturing_logger_class(trt: ModuleType) -> type:
    """Built once per TensorRT module, because ``trt.ILogger`` only exists after import."""

    class CapturingLogger(trt.ILogger):
        """Keeps every message at or above ``min_severity`` in ``self.lines``."""

        def __init__(self, min_severity: str = "info"):
            trt.ILogger.__init__(self)
            if min_severity not in _SEVERITY_ORDER:
                raise TrtcasError(f"unknown log severity {min_severity!r}; use one of: {', '.join(_SEVERITY_ORDER)}")
            self._max_rank = _SEVERITY_ORDER.index(min_severity)
            self.lines: list[str] = []
            self.forward = None  # optional callable(line): an action's log, live (`build -v`)

        def log(self, severity, msg):  # noqa: D102 (TensorRT's callback)
            line = self._keep(severity, msg)
            if line is not None and self.forward is not None:
                self.forward(line)

        def native(self, line: str) -> None:
            """A line TensorRT's native code wrote to stderr (rules.trt.native_stderr): an
            error ("Internal Error: ..."), kept like the logger's own but not forwarded: fd 2
            is the pipe it came from, so a forward that writes to stderr (an API caller's
            reporter) would feed it back in, forever."""
            self._keep(trt.ILogger.Severity.ERROR if "error" in line.lower() else trt.ILogger.Severity.WARNING, line)

        def _keep(self, severity, msg: str) -> str | None:
            name = severity.name.lower()
            if _SEVERITY_ORDER.index(name) > self._max_rank:
                return None
            line = f"[{_SEVERITY_TAG[name]}] {msg}"
            self.lines.append(line)
            return line

        def errors(self, since: int = 0) -> list[str]:
            """Error lines logged since index ``since`` (TensorRT's own wording)."""
            return [ln for ln in self.lines[since:] if ln.startswith(("[E]", "[F]"))]

    return CapturingLogger




def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
