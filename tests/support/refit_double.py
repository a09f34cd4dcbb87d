"""A named test double of the TensorRT toolchain for the refit path (refit needs a GPU).

Registered by the ``refit_double`` fixture (conftest.py) in ``TOOLCHAINS`` under
``refit-test-double``; the shipped package has no trace of it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

NAME = "refit-test-double"


# Refit needs a GPU. This double wraps the real TensorRT-RTX backend but claims it can build
# refittable engines and refit: its "refittable" build is a real CPU build with weights
# embedded, and its "refit" appends a digest of the weights it was given to the plan.
# It exists to test the graph logic (engine hit, refit runs), not TensorRT's refitter.
def refit_test_double(name: str = NAME):
    from trtcas.rules.trt.backend import load_backend
    from trtcas.rules.trt.engine import build_plan
    from trtcas.rules.trt.toolchain import Toolchain

    real = load_backend("tensorrt_rtx")
    caps = dataclasses.replace(real.capabilities, can_build_refittable=True, can_refit=True)
    backend = dataclasses.replace(real, capabilities=caps)

    def fake_build(backend, parsed, spec, refittable, into=None):
        plan = build_plan(real, parsed, dataclasses.replace(spec, refit="no"), False, into)
        from trtcas.rules.trt.engine import effective_builder_config
        return dataclasses.replace(plan, effective_config=effective_builder_config(spec, backend, refittable))

    def fake_refit(backend, plan, weights):
        marker = b"".join(name.encode() + np.ascontiguousarray(a).tobytes() for name, a in sorted(weights.items()))
        from trtcas.cas.digest import hash_bytes
        return plan + b"REFIT-TEST-DOUBLE:" + hash_bytes(marker).hex.encode()

    return Toolchain(name, backend, fake_build, fake_refit)
