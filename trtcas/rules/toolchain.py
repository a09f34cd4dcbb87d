"""The TensorRT operations the rules perform, bundled with the backend that performs them.

Rules never call ``build_plan``/``refit_plan`` directly; they ask ``load_toolchain(name)``.
For the real flavours that is the backend adapter plus the real functions. Tests register
a *named test double* here (e.g. one that pretends the CPU can build refittable engines,
since refit needs a GPU these machines lack) to exercise the graph's refit logic; nothing
in the shipped package registers one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from trtcas.rules.backend import BACKEND_NAMES, Backend, load_backend


@dataclass(frozen=True)
class Toolchain:
    name: str
    backend: Backend
    build_plan: Callable  # (backend, parsed, spec, refittable) -> EnginePlan
    refit_plan: Callable  # (backend, plan bytes, {name: array}) -> bytes


_DOUBLES: dict[str, Callable[[], Toolchain]] = {}


def register_test_double(name: str, factory: Callable[[], Toolchain]) -> None:
    """Tests only: make ``engine.backend = name`` use a stand-in toolchain."""
    if name in BACKEND_NAMES:
        raise ValueError(f"{name!r} is a real backend name")
    _DOUBLES[name] = factory


def load_toolchain(name: str = "auto") -> Toolchain:
    if name in _DOUBLES:
        return _DOUBLES[name]()
    from trtcas.rules.engine import build_plan
    from trtcas.rules.refit import refit_plan

    return Toolchain(name, load_backend(name), build_plan, refit_plan)
