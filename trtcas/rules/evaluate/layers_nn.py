"""Layers with weights or windows: matrix multiply, (de)convolution, pooling, LRN,
normalization, scale, einsum, quantize/dequantize.

Windows are computed as a sum over kernel offsets of strided views of a padded input, for
any number of spatial dims: slow for big images, exact and short, which is what a
reference needs. Padding follows the layer's ``padding_mode``: explicit pre/post padding
(rounding the output size down or up) or SAME_UPPER/SAME_LOWER.
"""

from __future__ import annotations

import itertools

import numpy as np

from trtcas.rules.evaluate.dtypes import numpy_dtype, wide
from trtcas.rules.evaluate.layers_basic import axes_of


def weights_array(c, prop: str) -> np.ndarray | None:
    """A weights-valued property as numpy, or None when it is empty (given as an input)."""
    value = getattr(c.layer, prop)
    if isinstance(value, np.ndarray):
        return value if value.size else None
    if value is None or value.size == 0:
        return None
    try:
        array = value.numpy()
    except Exception:  # noqa: BLE001
        array = None
    if not isinstance(array, np.ndarray):
        raise c.fail(f"{value.dtype.name} {prop} weights, which the API does not expose as numpy")
    return array


def matrix_multiply(c):
    a, b = wide(c.input(0)), wide(c.input(1))
    ops = (c.layer.op0.name, c.layer.op1.name)
    if ops[0] == "TRANSPOSE":
        a = np.swapaxes(a, -1, -2)
    if ops[1] == "TRANSPOSE":
        b = np.swapaxes(b, -1, -2)
    if ops[0] == "VECTOR":
        a = a[..., None, :]
    if ops[1] == "VECTOR":
        b = b[..., :, None]
    out = np.matmul(a, b)
    if ops[1] == "VECTOR":
        out = out[..., 0]
    if ops[0] == "VECTOR":
        out = out[..., 0, :] if ops[1] != "VECTOR" else out[..., 0]
    return [out]


def _pads(c, spatial: tuple[int, ...], window: tuple[int, ...], stride, dilation):
    """(pre, post) padding per spatial dim, plus extra post padding that ROUND_UP needs."""
    mode = c.layer.padding_mode.name
    pre, post = list(c.layer.pre_padding), list(c.layer.post_padding)
    pre = pre + [0] * (len(spatial) - len(pre))
    post = post + [0] * (len(spatial) - len(post))
    extra = [0] * len(spatial)
    for d, n in enumerate(spatial):
        span = dilation[d] * (window[d] - 1) + 1
        if mode in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-n // stride[d])
            total = max(0, (out - 1) * stride[d] + span - n)
            small, big = total // 2, total - total // 2
            pre[d], post[d] = (small, big) if mode == "SAME_UPPER" else (big, small)
        elif mode == "EXPLICIT_ROUND_UP":
            padded = n + pre[d] + post[d] - span
            out = -(-padded // stride[d]) + 1
            if (out - 1) * stride[d] >= n + pre[d]:  # a last window starting in the padding is dropped
                out -= 1
            extra[d] = max(0, (out - 1) * stride[d] + span - (n + pre[d] + post[d]))
        elif mode != "EXPLICIT_ROUND_DOWN":
            raise c.fail(f"PaddingMode.{mode}")
    return pre, post, extra


def _windows(x: np.ndarray, window, stride, dilation, pre, post, extra, fill: float):
    """Yield (kernel offset, strided view) over the padded ``x``; the last len(window) dims
    are spatial. Output spatial size: floor((padded - span) / stride) + 1."""
    k = len(window)
    width = [(0, 0)] * (x.ndim - k) + [(pre[d], post[d] + extra[d]) for d in range(k)]
    padded = np.pad(x, width, constant_values=fill)
    sizes = [(padded.shape[x.ndim - k + d] - (dilation[d] * (window[d] - 1) + 1)) // stride[d] + 1 for d in range(k)]
    for offset in itertools.product(*(range(w) for w in window)):
        index = [slice(None)] * (x.ndim - k) + [
            slice(offset[d] * dilation[d], offset[d] * dilation[d] + (sizes[d] - 1) * stride[d] + 1, stride[d])
            for d in range(k)]
        yield offset, padded[tuple(index)]


def _conv_weights(c, slot: int, prop: str):
    value = c.input(slot, required=False)
    return wide(value) if value is not None else (None if (w := weights_array(c, prop)) is None else wide(w))


def convolution(c):
    x = wide(c.input(0))
    window = tuple(c.layer.kernel_size_nd)
    k, groups = int(c.layer.num_output_maps), int(c.layer.num_groups)
    channels = x.shape[1]
    kernel = _conv_weights(c, 1, "kernel").reshape((k, channels // groups) + window)
    bias = _conv_weights(c, 2, "bias")
    stride, dilation = tuple(c.layer.stride_nd), tuple(c.layer.dilation_nd)
    pre, post, extra = _pads(c, x.shape[2:], window, stride, dilation)
    out = None
    for offset, view in _windows(x, window, stride, dilation, pre, post, extra, 0.0):
        grouped = view.reshape((view.shape[0], groups, channels // groups) + view.shape[2:])
        w = kernel[(slice(None), slice(None)) + offset].reshape(groups, k // groups, channels // groups)
        term = np.einsum("ngc...,gkc->ngk...", grouped, w)
        out = term if out is None else out + term
    out = out.reshape((x.shape[0], k) + out.shape[3:])
    if bias is not None:
        out = out + bias.reshape((1, k) + (1,) * (out.ndim - 2))
    return [out]


def deconvolution(c):
    x = wide(c.input(0))
    window = tuple(c.layer.kernel_size_nd)
    k, groups = int(c.layer.num_output_maps), int(c.layer.num_groups)
    n, channels, spatial = x.shape[0], x.shape[1], x.shape[2:]
    kernel = _conv_weights(c, 1, "kernel").reshape((channels, k // groups) + window)
    bias = _conv_weights(c, 2, "bias")
    stride, dilation = tuple(c.layer.stride_nd), tuple(c.layer.dilation_nd)
    full = [(spatial[d] - 1) * stride[d] + dilation[d] * (window[d] - 1) + 1 for d in range(len(window))]
    mode = c.layer.padding_mode.name
    if mode in ("SAME_UPPER", "SAME_LOWER"):  # output = input * stride; the rest is cropped
        total = [full[d] - spatial[d] * stride[d] for d in range(len(window))]
        small = [t // 2 for t in total]
        pre = small if mode == "SAME_UPPER" else [t - s for t, s in zip(total, small)]
        post = [t - p for t, p in zip(total, pre)]
    elif mode in ("EXPLICIT_ROUND_DOWN", "EXPLICIT_ROUND_UP"):
        pre, post = list(c.layer.pre_padding), list(c.layer.post_padding)
    else:
        raise c.fail(f"deconvolution with PaddingMode.{mode}")
    out = np.zeros((n, k) + tuple(full))
    xg = x.reshape((n, groups, channels // groups) + spatial)
    wg = kernel.reshape((groups, channels // groups, k // groups) + window)
    for offset in itertools.product(*(range(w) for w in window)):
        term = np.einsum("ngc...,gck->ngk...", xg, wg[(slice(None),) * 3 + offset]).reshape((n, k) + spatial)
        index = tuple(slice(offset[d] * dilation[d], offset[d] * dilation[d] + (spatial[d] - 1) * stride[d] + 1,
                            stride[d]) for d in range(len(window)))
        out[(slice(None), slice(None)) + index] += term
    crop = tuple(slice(pre[d], full[d] - post[d]) for d in range(len(window)))
    out = out[(slice(None), slice(None)) + crop]
    if bias is not None:
        out = out + bias.reshape((1, k) + (1,) * (out.ndim - 2))
    return [out]


def pooling(c):
    x = wide(c.input(0))
    window = tuple(c.layer.window_size_nd)
    stride = tuple(c.layer.stride_nd)
    ones = (1,) * len(window)
    pre, post, extra = _pads(c, x.shape[-len(window):], window, stride, ones)
    kind = c.layer.type.name  # after the cast, `type` is the PoolingType
    if kind not in ("MAX", "AVERAGE", "MAX_AVERAGE_BLEND"):
        raise c.fail(f"PoolingType.{kind}")
    biggest = None
    total = None
    for _, view in _windows(x, window, stride, ones, pre, post, extra, -np.inf):
        biggest = view if biggest is None else np.maximum(biggest, view)
    for _, view in _windows(x, window, stride, ones, pre, post, extra, 0.0):
        total = view if total is None else total + view
    if c.layer.average_count_excludes_padding:
        inside = np.ones(x.shape[-len(window):])
        count = sum(v for _, v in _windows(inside, window, stride, ones, pre, post, extra, 0.0))
    else:  # padding counts, but not the extra cells a ROUND_UP output reaches past it
        inside = np.pad(np.ones(x.shape[-len(window):]), list(zip(pre, post)), constant_values=1.0)
        count = sum(v for _, v in _windows(inside, window, stride, ones, [0] * len(window), [0] * len(window),
                                             extra, 0.0))
    average = total / count
    if kind == "MAX":
        return [biggest]
    if kind == "AVERAGE":
        return [average]
    blend = float(c.layer.blend_factor)
    return [blend * biggest + (1 - blend) * average]


def lrn(c):
    x = wide(c.input(0))
    size = int(c.layer.window_size)
    alpha, beta, k = float(c.layer.alpha), float(c.layer.beta), float(c.layer.k)
    squares = np.square(x)
    total = np.zeros_like(x)
    low, high = (size - 1) // 2, size - 1 - (size - 1) // 2
    for ch in range(x.shape[1]):
        total[:, ch] = squares[:, max(0, ch - low): ch + high + 1].sum(axis=1)
    return [x / np.power(k + alpha / size * total, beta)]


def normalization(c):
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the axes bitmask; with
    ``num_groups > 1`` the channels (dim 1) are split into groups first. A v1 layer scales
    per group ([1, G, 1, 1]), a v2 layer per channel ([1, C, 1, 1]), as the bindings say."""
    x = wide(c.input(0))
    scale, bias = wide(c.input(1)), wide(c.input(2))
    eps, groups = float(c.layer.epsilon), int(c.layer.num_groups)
    if groups > 1:
        grouped = x.reshape((x.shape[0], groups, -1))
        mean = grouped.mean(axis=2, keepdims=True)
        var = np.square(grouped - mean).mean(axis=2, keepdims=True)
        normed = (grouped - mean) / np.sqrt(var + eps)
        if scale.size == groups and groups != x.shape[1]:  # per-group affine (v1)
            return [(normed * scale.reshape(1, groups, 1) + bias.reshape(1, groups, 1)).reshape(x.shape)]
        return [normed.reshape(x.shape) * scale + bias]
    axes = axes_of(int(c.layer.axes), x.ndim)
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    return [(x - mean) / np.sqrt(var + eps) * scale + bias]


def scale(c):
    x = wide(c.input(0))
    mode = c.layer.mode.name
    axis = int(c.layer.channel_axis)
    parts = []
    for prop, default in (("shift", 0.0), ("scale", 1.0), ("power", 1.0)):
        w = weights_array(c, prop)
        if w is None:
            parts.append(default)
        elif mode == "UNIFORM":
            parts.append(wide(w).reshape(()))
        elif mode == "CHANNEL":
            parts.append(wide(w).reshape([-1 if i == axis else 1 for i in range(x.ndim)]))
        elif mode == "ELEMENTWISE":
            parts.append(wide(w).reshape(x.shape[axis:]))
        else:
            raise c.fail(f"ScaleMode.{mode}")
    shift, mult, power = parts
    return [np.power(x * mult + shift, power)]


def einsum(c):
    return [np.einsum(c.layer.equation, *(wide(v) for v in c.inputs))]


def _expand_scale(c, scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A scalar, a per-axis vector (``axis``) or a block scale (same rank, each dim the
    input's divided by its block size) broadcast to ``shape``."""
    scale = wide(scale)
    if scale.size == 1:
        return scale.reshape(())
    if scale.ndim == len(shape):  # a block scale (or a per-axis scale of a 1-D input)
        for d in range(len(shape)):
            if scale.shape[d] != shape[d]:
                scale = np.repeat(scale, shape[d] // scale.shape[d], axis=d)
        return scale
    if scale.ndim == 1:
        axis = int(c.layer.axis)
        axis += len(shape) if axis < 0 else 0
        return scale.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    raise c.fail(f"scale of shape {scale.shape} for input of shape {shape}")


_QUANT_RANGE = {"INT8": (-128, 127), "INT4": (-8, 7), "FP8": (-448.0, 448.0), "FP4": (-6.0, 6.0), "UINT8": (0, 255)}


def _zero_point(c, shape: tuple[int, ...]):
    """The optional zero point (input 2), broadcast like the scale; 0 when absent."""
    zp = c.input(2, required=False)
    return 0.0 if zp is None else _expand_scale(c, wide(zp.astype(np.float32)), shape)


def quantize(c):
    x = c.input(0)
    zero = _zero_point(c, x.shape)
    to = c.output_dtypes[0].name
    if to not in _QUANT_RANGE:
        raise c.fail(f"quantizing to {to}")
    q = wide(x) / _expand_scale(c, c.input(1), x.shape)
    low, high = _QUANT_RANGE[to]
    if numpy_dtype(c.output_dtypes[0]).kind in "iu":
        q = np.rint(q)
    q = q + zero
    return [np.clip(q, low, high).astype(np.float32) if to in ("FP8", "FP4") else np.clip(q, low, high)]


def dequantize(c):
    x = c.input(0)
    return [(wide(x.astype(np.float32)) - _zero_point(c, x.shape)) * _expand_scale(c, c.input(1), x.shape)]


LAYERS = {
    "MATRIX_MULTIPLY": matrix_multiply, "CONVOLUTION": convolution, "DECONVOLUTION": deconvolution,
    "POOLING": pooling, "LRN": lrn, "NORMALIZATION": normalization, "SCALE": scale, "EINSUM": einsum,
    "QUANTIZE": quantize, "DEQUANTIZE": dequantize,
}
