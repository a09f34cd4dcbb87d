"""The TensorRT operations the rules perform, bundled with the backend that performs them.

Rules never call ``build_plan``/``refit_plan`` directly; they ask ``load_toolchain(name)``,
which looks ``name`` up in ``TOOLCHAINS`` (entry point group ``trtcas.backends``; built in:
``auto``, ``tensorrt``, ``tensorrt_rtx``). A plugin package can add a backend there; the
tests register a *named test double* the same way (refit needs a GPU these machines lack),
and nothing in the shipped package knows of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from trtcas.registry import Registry
from trtcas.rules.trt.backend import Backend, load_backend


@dataclass(frozen=True)
class Toolchain:
    name: str
    backend: Backend
    build_plan: Callable  # (backend, parsed, spec, refittable, into=None) -> EnginePlan (into: stream the plan there)
    refit_plan: Callable  # (backend, plan bytes, {name: array}) -> bytes


def real_toolchain(name: str) -> Toolchain:
    """A TensorRT flavour (``auto``, ``tensorrt``, ``tensorrt_rtx``) with the real build and refit."""
    from trtcas.rules.trt.engine import build_plan
    from trtcas.rules.trt.refit import refit_plan

    return Toolchain(name, load_backend(name), build_plan, refit_plan)


# name -> factory(name) -> Toolchain
TOOLCHAINS: Registry[Callable[[str], Toolchain]] = Registry(
    "TensorRT backend", entry_point_group="trtcas.backends", builtin={"auto": real_toolchain}
)


def load_toolchain(name: str = "auto") -> Toolchain:
    return TOOLCHAINS.get(name)(name)
