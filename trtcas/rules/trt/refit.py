"""Engine plan + one set of weights -> refitted engine plan.

This is what makes a fine-tune cheap: the engine built for the network's structure is
reused and only its weights are replaced. It needs a GPU (deserializing an engine does),
so it first asks the backend whether refit is possible here.

Only TensorRT's public API is used (Runtime, Refitter, Weights, serialization config), so
the same code serves full TensorRT and TensorRT-RTX.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from trtcas.errors import TrtcasError
from trtcas.rules.messages import name_list, tidy_message
from trtcas.rules.trt.backend import Backend


def refit_plan(backend: Backend, plan: bytes, weights: Mapping[str, np.ndarray]) -> bytes:
    """Return ``plan`` with ``weights`` (refit name -> array) written into it.

    Every refittable weight must be supplied, not only the changed ones: a cached engine
    carries the weights of whichever build made it (another rank, an earlier fine-tune), so
    a weight left out would silently keep a stranger's value. ``get_missing_weights`` must
    also be empty. The result keeps its weights and stays refittable where the flavour
    allows, so it can be refitted again.
    """
    caps, who = backend.capabilities, f"{backend.flavour} {backend.version}"
    if not caps.can_refit:
        reason = "no GPU found" if not caps.gpu_present else f"GPU {caps.gpu_target} is not supported"
        raise TrtcasError(f"cannot refit an engine here: {who} needs a supported GPU to refit ({reason}); "
                          "run the refit on a GPU machine or build with engine.refit = \"no\"")
    trt = backend.trt
    logger = backend.logger("warning")
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise TrtcasError(f"{who} could not load the engine plan for refit: {_last_error(logger)}; "
                          "the plan may come from another TensorRT version or be corrupt, rebuild it")
    refitter = trt.Refitter(engine, logger)
    refittable = set(refitter.get_all_weights())
    if not refittable:
        raise TrtcasError("the engine has no refittable weights (it was built without REFIT); "
                          "rebuild it with engine.refit = \"yes\" or \"auto\" on a GPU machine")
    unknown = sorted(set(weights) - refittable)
    if unknown:
        raise TrtcasError(f"{len(unknown)} weights are not refittable in this engine: {name_list(unknown)}; "
                          "check that the weights belong to this network")
    keep_alive = []  # trt.Weights does not copy: the arrays must outlive refit_cuda_engine()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name])
        keep_alive.append(array)
        if not refitter.set_named_weights(name, _trt_weights(trt, array)):
            proto = refitter.get_weights_prototype(name)
            raise TrtcasError(f"weight {name!r} was rejected: got {array.dtype} x {array.size}, the engine "
                              f"expects {str(proto.dtype).rsplit('.', 1)[-1]} x {proto.size}; "
                              "supply the same dtype and element count as at build time")
    missing = sorted((refittable - set(weights)) | set(refitter.get_missing_weights()))
    if missing:
        raise TrtcasError(f"refit needs {len(missing)} more weights: {name_list(missing)}; "
                          "supply every refittable weight of the engine")
    if not refitter.refit_cuda_engine():
        raise TrtcasError(f"{who} failed to refit the engine: {_last_error(logger)}")
    return _serialize_with_weights(trt, engine)


def _trt_weights(trt: Any, array: np.ndarray) -> Any:
    """numpy has no bfloat16; arrays typed by ``ml_dtypes.bfloat16`` are passed by pointer."""
    if array.dtype.name == "bfloat16":
        return trt.Weights(trt.DataType.BF16, array.ctypes.data, array.size)
    return trt.Weights(array)


def _serialize_with_weights(trt: Any, engine: Any) -> bytes:
    """Serialize keeping the new weights (a weight-stripped engine would otherwise drop
    them again) and, where the flavour can, keeping the engine refittable."""
    if hasattr(engine, "create_serialization_config"):
        config = engine.create_serialization_config()
        config.clear_flag(trt.SerializationFlag.EXCLUDE_WEIGHTS)
        if "INCLUDE_REFIT" in trt.SerializationFlag.__members__:
            config.set_flag(trt.SerializationFlag.INCLUDE_REFIT)
        serialized = engine.serialize_with_config(config)
    else:
        serialized = engine.serialize()
    return bytes(memoryview(serialized))


def _last_error(logger: Any) -> str:
    errors = logger.errors()
    return tidy_message(errors[-1][4:]) if errors else "no reason logged"

