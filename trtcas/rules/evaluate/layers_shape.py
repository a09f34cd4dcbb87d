"""Layers that move values without computing new ones: shuffle, slice, gather, scatter,
concatenation, padding, resize, reverse-sequence.

Dims that are -1 in the network are concrete here (values carry their shapes), so every
shape rule is applied to real sizes: a reshape's ``0`` copies the input dim (when
``zero_is_placeholder``), ``-1`` is inferred; a slice's start/size/stride come from the
layer's attributes unless an input tensor supplies them (dynamic slices).
"""

from __future__ import annotations

import numpy as np

from trtcas.rules.evaluate.dtypes import is_float, wide


def _ints(value) -> list[int]:
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _reshape_dims(c, x: np.ndarray, dims: list[int]) -> tuple[int, ...]:
    out = []
    for i, d in enumerate(dims):
        if d == 0 and c.layer.zero_is_placeholder:
            if i >= x.ndim:
                raise c.fail(f"reshape placeholder 0 at position {i} of a rank-{x.ndim} input")
            d = x.shape[i]
        out.append(d)
    if out.count(-1) > 1:
        raise c.fail(f"reshape dims {dims} with more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        out[out.index(-1)] = x.size // known if known else 0
    return tuple(out)


def shuffle(c):
    x = c.input(0)
    x = np.transpose(x, tuple(c.layer.first_transpose)[: x.ndim])
    dynamic = c.input(1, required=False)
    dims = _ints(dynamic) if dynamic is not None else c.layer.reshape_dims
    if dims is not None:
        x = x.reshape(_reshape_dims(c, x, list(dims)))
    return [np.transpose(x, tuple(c.layer.second_transpose)[: x.ndim])]


def _sample(mode: str, index: np.ndarray, n: int, c) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates onto ``[0, n)`` per the SampleMode; the mask says which are inside
    (only FILL leaves coordinates outside)."""
    inside = (index >= 0) & (index < n)
    if mode == "STRICT_BOUNDS":
        if not inside.all():
            raise c.fail(f"STRICT_BOUNDS slice reading outside [0, {n})")
        return index, inside
    if n == 0:
        return np.zeros_like(index), np.zeros_like(inside)
    if mode == "WRAP":
        return np.mod(index, n), np.ones_like(inside)
    if mode == "CLAMP":
        return np.clip(index, 0, n - 1), np.ones_like(inside)
    if mode == "FILL":
        return np.clip(index, 0, n - 1), inside
    if mode == "REFLECT":
        if n == 1:
            return np.zeros_like(index), np.ones_like(inside)
        period = 2 * (n - 1)
        folded = np.mod(index, period)
        return np.where(folded < n, folded, period - folded), np.ones_like(inside)
    raise c.fail(f"SampleMode.{mode}")


def slice_(c):
    x = c.input(0)
    rank = x.ndim
    axes_value = c.input(5, required=False)
    axes = _ints(axes_value) if axes_value is not None else (list(c.layer.axes) if c.layer.axes is not None else None)
    if axes is not None:
        axes = [a + rank if a < 0 else a for a in axes]
    count = len(axes) if axes is not None else rank

    def read(slot: int, prop: str) -> list[int]:
        value = c.input(slot, required=False)
        return _ints(value) if value is not None else list(getattr(c.layer, prop))[:count]

    start, size, stride = read(1, "start"), read(2, "shape"), read(3, "stride")
    if axes is not None:  # unnamed axes are taken whole
        full_start, full_size, full_stride = [0] * rank, list(x.shape), [1] * rank
        for k, a in enumerate(axes):
            full_start[a], full_size[a], full_stride[a] = start[k], size[k], stride[k]
        start, size, stride = full_start, full_size, full_stride
    mode = c.layer.mode.name
    indices, masks = [], []
    for d in range(rank):
        index = start[d] + np.arange(size[d], dtype=np.int64) * stride[d]
        index, inside = _sample(mode, index, x.shape[d], c)
        indices.append(index)
        masks.append(inside)
    out = x[np.ix_(*indices)] if rank else x
    if mode == "FILL":
        fill = c.input(4, required=False)
        mask = np.ones(out.shape, bool)
        for d, inside in enumerate(masks):
            mask &= inside.reshape([-1 if i == d else 1 for i in range(rank)])
        out = np.where(mask, out, np.asarray(0 if fill is None else fill).reshape(()).astype(out.dtype))
    return [out]


def _wrap(indices: np.ndarray, n: int) -> np.ndarray:
    indices = indices.astype(np.int64)
    return np.where(indices < 0, indices + n, indices)


def gather(c):
    data, indices = c.input(0), c.input(1)
    axis, mode = int(c.layer.axis), c.layer.mode.name
    batch = int(c.layer.num_elementwise_dims)
    if mode == "DEFAULT":
        indices = _wrap(indices, data.shape[axis])
        if batch == 0:
            return [np.take(data, indices, axis=axis)]
        if batch == 1 and axis >= 1:
            return [np.stack([np.take(data[b], indices[b], axis=axis - 1) for b in range(data.shape[0])])]
        raise c.fail(f"DEFAULT gather with num_elementwise_dims={batch} on axis {axis}")
    if mode == "ELEMENT":
        return [np.take_along_axis(data, _wrap(indices, data.shape[axis]), axis=axis)]
    if mode == "ND":
        return [_gather_nd(data, indices.astype(np.int64), batch)]
    raise c.fail(f"GatherMode.{mode}")


def _gather_nd(data: np.ndarray, indices: np.ndarray, batch: int) -> np.ndarray:
    """ONNX GatherND semantics, which TensorRT's ND mode shares (``batch`` leading dims)."""
    depth = indices.shape[-1]
    batch_shape = data.shape[:batch]
    flat_data = data.reshape((-1,) + data.shape[batch:])
    flat_idx = indices.reshape((int(np.prod(batch_shape, dtype=np.int64)), -1, depth))
    rows = []
    for b in range(flat_idx.shape[0]):
        picks = [flat_data[b][tuple(int(v) + (flat_data.shape[1 + k] if v < 0 else 0) for k, v in enumerate(ix))]
                 for ix in flat_idx[b]]
        rows.append(np.stack(picks) if picks else np.zeros((0,) + data.shape[batch + depth:], data.dtype))
    out = np.stack(rows)
    return out.reshape(indices.shape[:-1] + data.shape[batch + depth:])


def scatter(c):
    data, indices, updates = c.input(0), c.input(1).astype(np.int64), c.input(2)
    out = data.copy()
    if c.layer.mode.name == "ELEMENT":
        axis = int(c.layer.axis)
        indices = _wrap(indices, data.shape[axis])
        grid = list(np.indices(indices.shape))
        grid[axis] = indices
        out[tuple(grid)] = updates
        return [out]
    if c.layer.mode.name == "ND":
        depth = indices.shape[-1]
        for ix, update in zip(indices.reshape(-1, depth), updates.reshape((-1,) + data.shape[depth:])):
            out[tuple(int(v) for v in ix)] = update
        return [out]
    raise c.fail(f"ScatterMode.{c.layer.mode.name}")


def concatenation(c):
    values = [c.input(j) for j in range(len(c.inputs))]
    common = np.result_type(*values) if not any(is_float(v) for v in values) else np.float64
    return [np.concatenate([v.astype(common) for v in values], axis=int(c.layer.axis))]


def padding(c):
    x = c.input(0)
    pre, post = list(c.layer.pre_padding_nd), list(c.layer.post_padding_nd)
    lead = x.ndim - len(pre)  # padding applies to the innermost dims
    width, cut = [(0, 0)] * lead, [slice(None)] * lead
    for a, b in zip(pre, post):
        width.append((max(a, 0), max(b, 0)))
        cut.append(slice(-a if a < 0 else None, b if b < 0 else None))
    return [np.pad(x[tuple(cut)], width)]


def _source_coordinates(c, n_in: int, n_out: int, scale: float) -> np.ndarray:
    o = np.arange(n_out, dtype=np.float64)
    how = c.layer.coordinate_transformation.name
    if how == "ALIGN_CORNERS":
        return o * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    if how == "ASYMMETRIC":
        return o / scale
    if how == "HALF_PIXEL":
        if n_out == 1 and c.layer.selector_for_single_pixel.name == "UPPER":
            return np.zeros(1)
        return (o + 0.5) / scale - 0.5
    raise c.fail(f"ResizeCoordinateTransformation.{how}")


def _round(c, x: np.ndarray) -> np.ndarray:
    how = c.layer.nearest_rounding.name
    rounded = {"HALF_UP": lambda v: np.floor(v + 0.5), "HALF_DOWN": lambda v: np.ceil(v - 0.5),
               "FLOOR": np.floor, "CEIL": np.ceil}.get(how)
    if rounded is None:
        raise c.fail(f"ResizeRoundMode.{how}")
    return rounded(x)


def resize(c):
    x = c.input(0)
    given = c.input(1, required=False)
    if given is not None and is_float(given):
        scales, out_shape = [float(s) for s in np.asarray(given).reshape(-1)], None
    elif given is not None:
        scales, out_shape = None, _ints(given)
    else:
        scales = list(c.layer.scales) or None
        out_shape = None if scales else list(c.layer.shape)
    if out_shape is None:
        out_shape = [int(np.floor(n * s)) for n, s in zip(x.shape, scales)]
    mode = c.layer.resize_mode.name
    if mode not in ("NEAREST", "LINEAR"):
        raise c.fail(f"InterpolationMode.{mode}")
    y = wide(x)
    for axis, (n_in, n_out) in enumerate(zip(x.shape, out_shape)):
        scale = scales[axis] if scales else n_out / n_in
        if n_in == n_out and scale == 1:
            continue
        coords = _source_coordinates(c, n_in, n_out, scale)
        if mode == "NEAREST":
            y = np.take(y, np.clip(_round(c, coords), 0, n_in - 1).astype(np.int64), axis=axis)
            continue
        coords = np.clip(coords, 0, n_in - 1)
        low = np.floor(coords).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        w = (coords - low).reshape([-1 if i == axis else 1 for i in range(y.ndim)])
        y = np.take(y, low, axis=axis) * (1 - w) + np.take(y, high, axis=axis) * w
    return [y]


def reverse_sequence(c):
    x, lengths = c.input(0), _ints(c.input(1))
    batch_axis, seq_axis = int(c.layer.batch_axis), int(c.layer.sequence_axis)
    out = x.copy()
    for b, n in enumerate(lengths):
        src = [slice(None)] * x.ndim
        src[batch_axis], src[seq_axis] = b, slice(0, n)
        out[tuple(src)] = np.flip(x[tuple(src)], axis=seq_axis - (1 if seq_axis > batch_axis else 0))
    return [out]


LAYERS = {
    "SHUFFLE": shuffle, "SLICE": slice_, "GATHER": gather, "SCATTER": scatter,
    "CONCATENATION": concatenation, "PADDING": padding, "RESIZE": resize, "REVERSE_SEQUENCE": reverse_sequence,
}
