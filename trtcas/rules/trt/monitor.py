"""TensorRT's ``IProgressMonitor``, wired to the running action: progress and cancel.

The builder reports phases (``phase_start`` with a step count, ``step_complete``,
``phase_finish``); each step is passed to the action's context (a progress bar on the
terminal), and ``step_complete`` returns False once the build was cancelled, which makes
``build_serialized_network`` stop and return None. Which action's context hears the builder
is a context variable set around the build (:func:`monitoring`), so ``build_plan`` and the
toolchains that wrap it keep their signatures.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Any, Iterator

_CONTEXT: ContextVar[Any] = ContextVar("trtcas_build_context", default=None)


@contextmanager
def monitoring(ctx: Any) -> Iterator[None]:
    """Builds inside this block report to ``ctx`` (``progress``, ``cancelled``)."""
    token = _CONTEXT.set(ctx)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def progress_monitor(trt: ModuleType) -> Any | None:
    """A monitor for the build about to start, or None outside :func:`monitoring` (or on a
    flavour without ``IProgressMonitor``)."""
    ctx = _CONTEXT.get()
    if ctx is None or not hasattr(trt, "IProgressMonitor"):
        return None
    return _monitor_class(trt)(ctx)


@functools.cache
def _monitor_class(trt: ModuleType) -> type:
    class ActionProgressMonitor(trt.IProgressMonitor):
        """Reports the outermost phase's steps (the whole build), labelled with the phase
        running now; says stop once cancelled."""

        def __init__(self, ctx: Any):
            trt.IProgressMonitor.__init__(self)
            self.ctx = ctx
            self.cancelled = False
            self._phases: list[list[Any]] = []  # [name, steps done, steps] from outermost to innermost

        def phase_start(self, phase_name, parent_phase, num_steps):  # noqa: D102 (TensorRT's callback)
            self._phases.append([phase_name, 0, int(num_steps)])
            self._report()

        def step_complete(self, phase_name, step):  # noqa: D102
            for phase in self._phases:
                if phase[0] == phase_name:
                    phase[1] = int(step) + 1
            self._report()
            self.cancelled = self.cancelled or bool(getattr(self.ctx, "cancelled", lambda: False)())
            return not self.cancelled

        def phase_finish(self, phase_name):  # noqa: D102
            names = [p[0] for p in self._phases]
            if phase_name in names:
                del self._phases[len(names) - 1 - names[::-1].index(phase_name):]
            if self._phases:
                self._report()

        def _report(self) -> None:
            report = getattr(self.ctx, "progress", None)
            if report is None or not self._phases:
                return
            name, done, steps = self._phases[0]
            label = name if len(self._phases) == 1 else f"{name}: {self._phases[-1][0]}"
            report(label, done, max(steps, done))

    return ActionProgressMonitor
