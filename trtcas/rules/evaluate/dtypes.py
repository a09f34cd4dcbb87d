"""TensorRT data types as numpy dtypes, and the rounding a layer's output goes through.

Layers compute in float64 (so that an fp32 network is compared with another reference at
1e-4 without the evaluator's own error mattering) and each output is then rounded to the
dtype TensorRT reports for it: that is where an fp16 or bf16 network loses precision, and
where the evaluator must lose it too. numpy has no bf16/fp8/int4/fp4; ml_dtypes does.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from trtcas.rules.evaluate.errors import EvaluateError

_NUMPY = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
    "FP8": np.dtype(ml_dtypes.float8_e4m3fn),
    "INT4": np.dtype(ml_dtypes.int4),
    "FP4": np.dtype(ml_dtypes.float4_e2m1fn),
    "E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
}
_LOW_FLOATS = frozenset({"HALF", "BF16", "FP8", "FP4", "E8M0"})


def numpy_dtype(trt_dtype) -> np.dtype:
    """The numpy dtype that holds values of TensorRT dtype ``trt_dtype`` exactly."""
    try:
        return _NUMPY[trt_dtype.name]
    except KeyError:
        raise EvaluateError(f"TensorRT data type {trt_dtype.name} has no numpy equivalent in the evaluator") from None


def is_float(array: np.ndarray) -> bool:
    """numpy's float kinds plus ml_dtypes' (bf16, fp8, fp4 report kind 'V' in some versions)."""
    return array.dtype.kind == "f" or array.dtype in (_NUMPY["BF16"], _NUMPY["FP8"], _NUMPY["FP4"], _NUMPY["E8M0"])


def wide(array: np.ndarray) -> np.ndarray:
    """``array`` in the type a layer computes in: float64 for floats, unchanged otherwise."""
    return array.astype(np.float64) if is_float(array) else array


def to_dtype(array, trt_dtype) -> np.ndarray:
    """Round (floats) or convert (ints, bools) ``array`` to TensorRT dtype ``trt_dtype``.

    Float -> int conversions truncate toward zero, as TensorRT's cast does; low-precision
    floats round through float32 first only where ml_dtypes cannot cast from float64."""
    dtype = numpy_dtype(trt_dtype)
    array = np.asarray(array)
    if array.dtype == dtype:
        return array
    if is_float(array) and dtype.kind in "iu":
        return np.trunc(array.astype(np.float64)).astype(dtype)
    if trt_dtype.name in _LOW_FLOATS and array.dtype != np.float32:
        return array.astype(np.float32).astype(dtype) if array.dtype.kind in "iub" else array.astype(dtype)
    return array.astype(dtype)
