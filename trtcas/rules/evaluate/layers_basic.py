"""Pointwise, reduction and small bookkeeping layers, from the TensorRT API's own definitions.

Each function takes a :class:`~trtcas.rules.evaluate.walk.Call` and returns the layer's
outputs; the walk rounds them to the dtypes TensorRT reports. Formulas follow the
``ActivationType``/``UnaryOperation``/``ElementWiseOperation`` docstrings of the bindings
(e.g. SELU's ``beta * (alpha * exp(x) - alpha)``), not another framework's conventions.
"""

from __future__ import annotations

import math

import numpy as np

from trtcas.rules.evaluate.dtypes import is_float, numpy_dtype, wide
from trtcas.rules.evaluate.errors import EvaluateError


def axes_of(mask: int, rank: int) -> tuple[int, ...]:
    """A TensorRT axes bitmask (bit i = dimension i) as a tuple of axes."""
    return tuple(i for i in range(rank) if mask >> i & 1)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x.astype(np.float64)


def constant(c):
    weights = c.layer.weights
    shape = tuple(c.layer.shape)
    array = weights if isinstance(weights, np.ndarray) else None
    if array is None:
        try:
            candidate = weights.numpy()
            array = candidate if isinstance(candidate, np.ndarray) else None
        except Exception:  # noqa: BLE001 - the binding raises for dtypes numpy lacks
            array = None
    if array is None:
        array = c.constants.get(c.layer.name)
        if array is None:
            raise c.fail(f"{weights.dtype.name} constant weights, which the API does not expose as numpy "
                         "(pass them in `constants` by layer name)")
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise EvaluateError(f"layer {c.layer.name!r} (CONSTANT): {array.size} weights for shape {shape}")
    return [np.asarray(array).reshape(shape)]


def identity(c):
    return [c.input(0)]


def cast(c):
    return [c.input(0)]  # the walk converts to the output dtype (to_type)


def _int_div(a, b, floor: bool):
    q = np.floor_divide(a, b)
    if floor:
        return q
    return np.where((np.remainder(a, b) != 0) & ((a < 0) != (b < 0)), q + 1, q)  # truncation toward zero


def elementwise(c):
    a, b = c.input(0), c.input(1)
    if a.ndim != b.ndim:
        raise c.fail(f"inputs of different ranks ({a.ndim} and {b.ndim})")
    op = c.layer.op.name
    floats = is_float(a) or is_float(b)
    x, y = (wide(a), wide(b)) if floats else (a.astype(np.int64) if a.dtype != np.bool_ else a,
                                               b.astype(np.int64) if b.dtype != np.bool_ else b)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if op == "SUM":
            return [x + y]
        if op == "PROD":
            return [x * y]
        if op == "MAX":
            return [np.maximum(x, y)]
        if op == "MIN":
            return [np.minimum(x, y)]
        if op == "SUB":
            return [x - y]
        if op == "DIV":
            return [x / y if floats else _int_div(x, y, floor=False)]
        if op == "FLOOR_DIV":
            return [np.floor(x / y) if floats else _int_div(x, y, floor=True)]
        if op == "POW":
            return [np.power(x, y) if floats else np.power(x, y).astype(np.int64)]
        if op == "AND":
            return [np.logical_and(x, y)]
        if op == "OR":
            return [np.logical_or(x, y)]
        if op == "XOR":
            return [np.logical_xor(x, y)]
        if op == "EQUAL":
            return [x == y]
        if op == "GREATER":
            return [x > y]
        if op == "LESS":
            return [x < y]
    raise c.fail(f"ElementWiseOperation.{op}")


_UNARY = {
    "EXP": np.exp, "LOG": np.log, "SQRT": np.sqrt, "RECIP": lambda x: 1.0 / x, "ABS": np.abs,
    "NEG": np.negative, "SIN": np.sin, "COS": np.cos, "TAN": np.tan, "SINH": np.sinh, "COSH": np.cosh,
    "ASIN": np.arcsin, "ACOS": np.arccos, "ATAN": np.arctan, "ASINH": np.arcsinh, "ACOSH": np.arccosh,
    "ATANH": np.arctanh, "CEIL": np.ceil, "FLOOR": np.floor, "ERF": _erf, "NOT": np.logical_not,
    "SIGN": np.sign, "ROUND": np.rint, "ISINF": np.isinf, "ISNAN": np.isnan,
}


def unary(c):
    op = c.layer.op.name
    if op not in _UNARY:
        raise c.fail(f"UnaryOperation.{op}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return [_UNARY[op](wide(c.input(0)))]


def _activation(kind: str, x: np.ndarray, alpha: float, beta: float):
    if kind == "RELU":
        return np.maximum(x, 0)
    if kind == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-x))
    if kind == "TANH":
        return np.tanh(x)
    if kind == "LEAKY_RELU":
        return np.where(x >= 0, x, alpha * x)
    if kind == "ELU":
        return np.where(x >= 0, x, alpha * (np.exp(x) - 1))
    if kind == "SELU":
        return np.where(x > 0, beta * x, beta * (alpha * np.exp(x) - alpha))
    if kind == "SOFTSIGN":
        return x / (1 + np.abs(x))
    if kind == "SOFTPLUS":
        return alpha * np.logaddexp(beta * x, 0.0)
    if kind == "CLIP":
        return np.maximum(alpha, np.minimum(beta, x))
    if kind == "HARD_SIGMOID":
        return np.maximum(0, np.minimum(1, alpha * x + beta))
    if kind == "SCALED_TANH":
        return alpha * np.tanh(beta * x)
    if kind == "THRESHOLDED_RELU":
        return np.where(x > alpha, x, 0)
    if kind == "GELU_ERF":
        return 0.5 * x * (1 + _erf(math.sqrt(0.5) * x))
    if kind == "GELU_TANH":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (0.044715 * x ** 3 + x)))
    return None


def activation(c):
    kind = c.layer.type.name  # after the cast, `type` is the ActivationType
    with np.errstate(over="ignore"):
        out = _activation(kind, wide(c.input(0)), float(c.layer.alpha), float(c.layer.beta))
    if out is None:
        raise c.fail(f"ActivationType.{kind}")
    return [out]


def parametric_relu(c):
    x, slope = wide(c.input(0)), wide(c.input(1))
    return [np.where(x >= 0, x, slope * x)]


_REDUCE = {"SUM": np.sum, "PROD": np.prod, "MAX": np.max, "MIN": np.min, "AVG": np.mean}


def reduce(c):
    op = c.layer.op.name
    if op not in _REDUCE:
        raise c.fail(f"ReduceOperation.{op}")
    x = c.input(0)
    axes = axes_of(c.layer.axes, x.ndim)
    return [_REDUCE[op](wide(x), axis=axes, keepdims=bool(c.layer.keep_dims))]


def select(c):
    return [np.where(c.input(0), wide(c.input(1)), wide(c.input(2)))]


def softmax(c):
    x = wide(c.input(0))
    axes = axes_of(c.layer.axes, x.ndim)
    shifted = np.exp(x - np.max(x, axis=axes, keepdims=True))
    return [shifted / np.sum(shifted, axis=axes, keepdims=True)]


def shape(c):
    return [np.asarray(c.input(0).shape, np.int64)]


def assertion(c):
    if not np.all(c.input(0)):
        raise EvaluateError(f"assertion layer {c.layer.name!r} failed: {c.layer.message}")
    return []


def _scalar_or_vector(value, default):
    return default if value is None else np.asarray(value)


def fill(c):
    op = c.layer.operation.name
    if op != "LINSPACE":
        raise c.fail(f"FillOperation.{op} (TensorRT's random stream cannot be reproduced)")
    dims = c.input(0, required=False)
    shape = tuple(int(d) for d in dims) if dims is not None else tuple(c.layer.shape)
    alpha = _scalar_or_vector(c.input(1, required=False), None)
    beta = _scalar_or_vector(c.input(2, required=False), None)
    if alpha is None:
        alpha = np.asarray(c.layer.alpha)
    if beta is None:
        beta = np.broadcast_to(np.asarray(c.layer.beta, np.float64), (len(shape),))
    integer = numpy_dtype(c.output_dtypes[0]).kind in "iu"
    grid = np.indices(shape, dtype=np.int64 if integer else np.float64)
    beta = np.asarray(beta).reshape((len(shape),) + (1,) * len(shape))
    out = np.asarray(alpha).reshape(()) + np.sum(grid * beta, axis=0)
    return [out]


def topk(c):
    x = c.input(0)
    axes = axes_of(c.layer.axes, x.ndim)
    if len(axes) != 1:
        raise c.fail(f"top-k over {len(axes)} axes")
    axis = axes[0]
    k_input = c.input(1, required=False)
    k = int(np.asarray(k_input).reshape(())) if k_input is not None else int(c.layer.k)
    largest = c.layer.op.name == "MAX"
    key = -wide(x) if largest else wide(x)
    order = np.argsort(key, axis=axis, kind="stable")
    index = np.take(order, np.arange(k), axis=axis)
    return [np.take_along_axis(x, index, axis=axis), index]


def cumulative(c):
    if c.layer.op.name != "SUM":
        raise c.fail(f"CumulativeOperation.{c.layer.op.name}")
    x = wide(c.input(0))
    axis = int(np.asarray(c.input(1)).reshape(()))
    axis += x.ndim if axis < 0 else 0
    if c.layer.reverse:
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis)
    if c.layer.exclusive:
        out = out - x
    return [np.flip(out, axis) if c.layer.reverse else out]


def _axes_input(c, rank: int) -> list[int]:
    return sorted(int(a) + (rank if a < 0 else 0) for a in np.asarray(c.input(1)).reshape(-1))


def squeeze(c):
    x = c.input(0)
    if c.input(1, required=False) is None:  # no axes: the output's declared rank decides
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(_axes_input(c, x.ndim)))]


def unsqueeze(c):
    x = c.input(0)
    axes = np.asarray(c.input(1)).reshape(-1)
    rank = x.ndim + axes.size
    return [np.expand_dims(x, axis=tuple(sorted(int(a) + (rank if a < 0 else 0) for a in axes)))]


def one_hot(c):
    indices, values, depth = c.input(0).astype(np.int64), c.input(1), int(np.asarray(c.input(2)).reshape(()))
    axis = int(c.layer.axis)
    axis += indices.ndim + 1 if axis < 0 else 0
    indices = np.where(indices < 0, indices + depth, indices)
    hot = np.expand_dims(indices, axis) == np.arange(depth).reshape([-1 if i == axis else 1 for i in range(indices.ndim + 1)])
    return [np.where(hot, values[1], values[0])]


def non_zero(c):
    return [np.stack(np.nonzero(c.input(0))).astype(np.int64).reshape(c.input(0).ndim, -1)]


LAYERS = {
    "CONSTANT": constant, "IDENTITY": identity, "CAST": cast, "ELEMENTWISE": elementwise, "UNARY": unary,
    "ACTIVATION": activation, "PARAMETRIC_RELU": parametric_relu, "REDUCE": reduce, "SELECT": select,
    "SOFTMAX": softmax, "SHAPE": shape, "ASSERTION": assertion, "FILL": fill, "TOPK": topk,
    "CUMULATIVE": cumulative, "SQUEEZE": squeeze, "UNSQUEEZE": unsqueeze, "ONE_HOT": one_hot,
    "NON_ZERO": non_zero,
}
