"""Writing TensorRT layers: the helper every network writer shares (as TensorRT-LLM's
``layers/``): named layers, constants kept alive and shared by name, linear, RMSNorm,
collectives.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from trtcas.rules.formats.safetensors import numpy_dtype
from trtcas.rules.trt.mapped_weights import stacked_rows

_TRT_DTYPE = {"float16": "HALF", "bfloat16": "BF16", "float32": "FLOAT"}
class LayerWriter:
    """Adds layers to one network: names every layer, keeps every constant's array alive,
    and shares derived constants by name. Stateful, hence a class."""

    def __init__(self, trt: Any, network: Any, dtype: str, decomposable_attention: bool = True,
                 stack_parallel_linears: bool = False):
        self.trt, self.net, self.dtype = trt, network, dtype
        self.decomposable_attention = decomposable_attention
        self.stack_parallel_linears = stack_parallel_linears
        self.trt_dtype = getattr(trt.DataType, _TRT_DTYPE[dtype])
        self.constants: dict[str, np.ndarray] = {}
        self._tensors: dict[str, Any] = {}

    def named(self, layer: Any, name: str) -> Any:
        """Name ``layer`` (names are the same on every rank) and return its output."""
        layer.name = name
        return layer.get_output(0)

    def constant(self, name: str, array: np.ndarray) -> Any:
        """A constant named ``name`` (its weights' refit name); one layer per name."""
        if name in self._tensors:
            return self._tensors[name]
        array = np.ascontiguousarray(array) if array.ndim else np.array(array)  # keeps a scalar 0-d
        self.constants[name] = array
        if array.dtype.name == "bfloat16":  # numpy has no bfloat16: pass it by pointer
            weights = self.trt.Weights(self.trt.DataType.BF16, array.ctypes.data, array.size)
        else:
            weights = self.trt.Weights(array)
        tensor = self.named(self.net.add_constant(array.shape, weights), name)
        self._tensors[name] = tensor
        return tensor

    def scalar(self, name: str, value: float, dtype: str | None = None, rank: int = 3) -> Any:
        """A broadcastable ``[1]*rank`` constant (TensorRT's elementwise needs equal ranks)."""
        return self.constant(name, np.full((1,) * rank, value, numpy_dtype(dtype or self.dtype)))

    def shuffle(self, x: Any, name: str, reshape: Sequence[int] | None = None,
                transpose: Sequence[int] | None = None, then_transpose: Sequence[int] | None = None) -> Any:
        """Transpose, reshape (``0`` copies a dim, so dynamic dims need no shape tensor),
        transpose again: TensorRT's shuffle, each step optional."""
        layer = self.net.add_shuffle(x)
        if transpose is not None:
            layer.first_transpose = tuple(transpose)
        if reshape is not None:
            layer.reshape_dims = tuple(reshape)
        if then_transpose is not None:
            layer.second_transpose = tuple(then_transpose)
        return self.named(layer, name)

    def elementwise(self, a: Any, b: Any, op: str, name: str) -> Any:
        return self.named(self.net.add_elementwise(a, b, getattr(self.trt.ElementWiseOperation, op)), name)

    def cast(self, x: Any, dtype: Any, name: str) -> Any:
        return self.named(self.net.add_cast(x, dtype), name)

    def shape_with(self, like: Any, tail: Sequence[int], name: str) -> Any:
        """The int64 shape ``[*like.shape, *tail]``: a size for slices whose leading dims
        follow the (possibly dynamic) batch and sequence."""
        head = self.named(self.net.add_shape(like), f"{name}.shape")
        tail_tensor = self.constant(f"shape.tail.{'x'.join(map(str, tail))}", np.asarray(tail, np.int64))
        return self.named(self.net.add_concatenation([head, tail_tensor]), name)

    def slice(self, x: Any, start: Sequence[int], size: Any, name: str, wrap: bool = False) -> Any:
        layer = self.net.add_slice(x, tuple(start), (1,) * len(start), (1,) * len(start))
        layer.set_input(2, size)
        if wrap:
            layer.mode = self.trt.SampleMode.WRAP
        return self.named(layer, name)

    def linear(self, x: Any, prefix: str, weights: Mapping[str, np.ndarray]) -> Any:
        """``x [b, s, in] -> [b, s, out]`` with TRT-LLM's ``[out, in]`` weight (or W8A16's
        ``[in, out]`` int8 weight dequantized by its per-channel scale), plus ``{prefix}.bias``
        when ``weights`` holds one."""
        kernel = self.constant(f"{prefix}.weight", weights[f"{prefix}.weight"])
        if f"{prefix}.per_channel_scale" in weights:
            scale = self.constant(f"{prefix}.per_channel_scale", weights[f"{prefix}.per_channel_scale"])
            layer = self.net.add_dequantize(kernel, scale, self.trt_dtype)
            layer.axis = 1
            kernel = self.named(layer, f"{prefix}.dequantize")
            op = self.trt.MatrixOperation.NONE
        else:
            op = self.trt.MatrixOperation.TRANSPOSE
        kernel = self.shuffle(kernel, f"{prefix}.weight.expand", reshape=(1, *kernel.shape))
        layer = self.net.add_matrix_multiply(x, self.trt.MatrixOperation.NONE, kernel, op)
        out = self.named(layer, f"{prefix}.matmul")
        if f"{prefix}.bias" not in weights:
            return out
        bias = self.shuffle(self.constant(f"{prefix}.bias", weights[f"{prefix}.bias"]), f"{prefix}.bias.expand",
                            reshape=(1,) * (len(x.shape) - 1) + (-1,))
        return self.elementwise(out, bias, "SUM", f"{prefix}.add_bias")

    def parallel_linears(self, x: Any, name: str, prefixes: Sequence[str], weights: Mapping[str, np.ndarray]) -> list[Any]:
        """:meth:`linear` of ``x`` by each of ``prefixes``, in order.

        With ``stack_parallel_linears`` and plain weights of one shape (no bias, not
        quantized), the weights are one constant ``{name}.weight`` (``[n, out, in]`` viewed
        as ``[n*out, in]``; a view, not a copy, when they lie back to back) and one matmul
        whose output is split again. The result is the same; the build is lighter: given
        separate weights, TensorRT's builder fuses the matmuls itself and holds a stacked
        copy of the weights beside its own copy of them until the plan is written (a gated
        MLP's two projections: ~0.4x of a Llama's weights more at the engine build's peak).
        Refittable engines keep the weights separate, as refit sets them by name."""
        arrays = _stackable(prefixes, weights) if self.stack_parallel_linears else None
        if arrays is None:
            return [self.linear(x, p, weights) for p in prefixes]
        count, (rows, cols) = len(arrays), arrays[0].shape
        stacked = stacked_rows(arrays).reshape(1, count * rows, cols)
        kernel = self.constant(f"{name}.weight", stacked)
        mm = self.trt.MatrixOperation
        product = self.named(self.net.add_matrix_multiply(x, mm.NONE, kernel, mm.TRANSPOSE), f"{name}.matmul")
        split = self.shuffle(product, f"{name}.split", reshape=(0, 0, count, rows))
        outputs = []
        for index, prefix in enumerate(prefixes):
            which = self.constant(f"stacked.index.{index}", np.asarray(index, np.int32))
            outputs.append(self.named(self.net.add_gather(split, which, 2), f"{prefix}.matmul"))
        return outputs

    def rms_norm(self, x: Any, weight_name: str, weights: Mapping[str, np.ndarray], epsilon: float) -> Any:
        """``w * cast(x32 / sqrt(mean(x32²) + eps))``, HF's LlamaRMSNorm, over the last axis
        (of a rank-3 hidden state, or a rank-4 ``[b, heads, s, head_size]`` for q/k norms)."""
        prefix = weight_name.removesuffix(".weight")
        fp32, rank = self.trt.DataType.FLOAT, len(x.shape)
        x32 = self.cast(x, fp32, f"{prefix}.to_float")
        square = self.elementwise(x32, x32, "PROD", f"{prefix}.square")
        mean = self.named(self.net.add_reduce(square, self.trt.ReduceOperation.AVG, 1 << (rank - 1), True),
                          f"{prefix}.mean")
        eps_name = "rms_norm.epsilon" if rank == 3 else f"rms_norm.epsilon.rank{rank}"
        eps = self.scalar(eps_name, epsilon, "float32", rank=rank)
        root = self.named(self.net.add_unary(self.elementwise(mean, eps, "SUM", f"{prefix}.add_epsilon"),
                                              self.trt.UnaryOperation.SQRT), f"{prefix}.sqrt")
        normed = self.cast(self.elementwise(x32, root, "DIV", f"{prefix}.normalize"), self.trt_dtype,
                           f"{prefix}.to_dtype")
        weight = self.shuffle(self.constant(weight_name, weights[weight_name]), f"{prefix}.weight.expand",
                              reshape=(1,) * (rank - 1) + (-1,))
        return self.elementwise(normed, weight, "PROD", f"{prefix}.scale")

    def collective(self, x: Any, tp: int, name: str, gather: bool = False) -> Any:
        """ALL_REDUCE (sum) or ALL_GATHER (along dim 0) over ranks ``[0 .. tp-1]``, the same
        group list on every rank; ``num_ranks = tp`` sizes an all-gather's output."""
        trt = self.trt
        op, reduce = ((trt.CollectiveOperation.ALL_GATHER, trt.ReduceOperation.NONE) if gather
                      else (trt.CollectiveOperation.ALL_REDUCE, trt.ReduceOperation.SUM))
        layer = self.net.add_dist_collective(x, op, reduce, -1, list(range(tp)))
        layer.num_ranks = tp
        return self.named(layer, name)


def _stackable(prefixes: Sequence[str], weights: Mapping[str, np.ndarray]) -> list[np.ndarray] | None:
    """The weights of ``prefixes`` when one matmul can stand for theirs: two or more plain
    2-D weights of one shape and dtype (no bias, not quantized); else None."""
    arrays = [weights.get(f"{p}.weight") for p in prefixes]
    if len(arrays) < 2 or any(f"{p}.bias" in weights or f"{p}.per_channel_scale" in weights for p in prefixes):
        return None
    first = arrays[0]
    if first is None or first.ndim != 2:
        return None
    return arrays if all(a is not None and a.shape == first.shape and a.dtype == first.dtype for a in arrays) else None


# --------------------------------------------------------------------------- shared LLM pieces


def soft_cap(w: LayerWriter, x: Any, cap: float, name: str, dtype: str | None = None) -> Any:
    """``cap * tanh(x / cap)``: logit soft-capping (Gemma 2's attention scores and final
    logits, Grok's ...), in ``dtype`` (default: the model dtype), as HF computes it."""
    rank = len(x.shape)
    bound = w.scalar(f"soft_cap.{cap!r}.{dtype or w.dtype}.rank{rank}", cap, dtype, rank=rank)
    scaled = w.elementwise(x, bound, "DIV", f"{name}.divide")
    tanh = w.named(w.net.add_activation(scaled, w.trt.ActivationType.TANH), f"{name}.tanh")
    return w.elementwise(tanh, bound, "PROD", f"{name}.scale")


def causal_window_mask(max_seq_len: int, window: int | None) -> np.ndarray:
    """``[1, 1, 1, S, S]`` float32 additive mask: 0 where query ``i`` may see key ``j``
    (``j <= i``, and ``i - j < window`` for a sliding window, HF's
    ``sliding_window_overlay``), float32's lowest value elsewhere (as HF's eager masks)."""
    rows, cols = np.arange(max_seq_len)[:, None], np.arange(max_seq_len)[None, :]
    allowed = cols <= rows
    if window is not None:
        allowed &= cols > rows - window
    return np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)[None, None, None]


def decomposed_attention(w: LayerWriter, q: Any, k: Any, v: Any, ids: Any, *, name: str, scale: float,
                         max_seq_len: int, softcap: float | None = None, window: int | None = None) -> Any:
    """Causal (optionally sliding-window, soft-capped) GQA attention from matmul, elementwise,
    softmax layers, for what ``IAttention`` cannot express (a soft-cap between ``Q Kᵀ`` and
    the softmax). ``q [b, n_q, s, d]``, ``k``/``v [b, n_kv, s, d]`` -> ``[b, s, n_q * d]``.

    Follows HF's eager attention: ``Q Kᵀ * scale`` and the soft-cap in the model dtype, mask
    and softmax in float32, probabilities cast back before ``· V``. Query head ``h`` uses KV
    head ``h // (n_q / n_kv)`` (HF's ``repeat_kv``): the heads are viewed as
    ``[b, n_kv, group, s, d]`` against ``[b, n_kv, 1, s, d]`` and the matmul broadcasts.
    """
    n_q, d = int(q.shape[1]), int(q.shape[3])
    n_kv = int(k.shape[1])
    group = n_q // n_kv
    q5 = w.shuffle(q, f"{name}.q.groups", reshape=(0, n_kv, group, -1, d))
    k5, v5 = (w.shuffle(t, f"{name}.{part}.groups", reshape=(0, n_kv, 1, -1, d)) for part, t in (("k", k), ("v", v)))
    mm = w.trt.MatrixOperation
    scores = w.named(w.net.add_matrix_multiply(q5, mm.NONE, k5, mm.TRANSPOSE), f"{name}.scores")
    scores = w.elementwise(scores, w.scalar(f"attention.scale.{scale!r}", scale, rank=5), "PROD", f"{name}.scale")
    if softcap is not None:
        scores = soft_cap(w, scores, softcap, f"{name}.soft_cap")
    scores = w.cast(scores, w.trt.DataType.FLOAT, f"{name}.scores.to_float")
    mask_name = f"attention.mask.{'causal' if window is None else f'window{window}'}"
    mask = w.constant(mask_name, causal_window_mask(max_seq_len, window))
    size = _square_size(w, ids, f"{name}.mask_size")
    scores = w.elementwise(scores, w.slice(mask, (0,) * 5, size, f"{name}.mask"), "SUM", f"{name}.masked")
    softmax = w.net.add_softmax(scores)
    softmax.axes = 1 << 4
    probs = w.cast(w.named(softmax, f"{name}.softmax"), w.trt_dtype, f"{name}.probs")
    context = w.named(w.net.add_matrix_multiply(probs, mm.NONE, v5, mm.NONE), f"{name}.context")
    return w.shuffle(context, f"{name}.merge_heads", transpose=(0, 3, 1, 2, 4), reshape=(0, 0, n_q * d))


def _square_size(w: LayerWriter, ids: Any, name: str) -> Any:
    """The int64 size ``[1, 1, 1, s, s]`` of ``ids [b, s]``'s sequence (static or dynamic)."""
    shape = w.named(w.net.add_shape(ids), f"{name}.shape")
    seq = w.named(w.net.add_slice(shape, (1,), (1,), (1,)), f"{name}.seq")
    ones = w.constant("shape.ones.3", np.ones(3, np.int64))
    return w.named(w.net.add_concatenation([ones, seq, seq]), name)
