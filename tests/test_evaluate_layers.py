"""Layer semantics of the numpy evaluator on small hand-built networks, and its refusals.

Each case builds a network with TensorRT-RTX's own ``add_*`` calls and checks the
evaluator's answer against the formula TensorRT documents for that layer.
"""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from trtcas.rules.evaluate import CollectiveSpec, EvaluateError, evaluate_network, evaluate_ranks

trt = pytest.importorskip("tensorrt_rtx", reason="these tests exercise TensorRT-RTX (pip install tensorrt-rtx-cu13)")

RNG = np.random.default_rng(3)
X = RNG.standard_normal((2, 3, 4)).astype(np.float32)


_KEEP: list = []  # TensorRT does not copy weights, nor own its builder: keep both alive


def _network():
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    _KEEP.extend((logger, builder))
    return builder.create_network(0)


def _weights(array):
    array = np.ascontiguousarray(array)
    _KEEP.append(array)
    return trt.Weights(array)


@pytest.fixture
def net():
    return _network()


def _run(network, out, feeds, **kwargs):
    out.name = "out"
    network.mark_output(out)
    return evaluate_network(trt, network, feeds, **kwargs)["out"]


def _erf(x):
    return np.vectorize(math.erf)(x)


ACTIVATIONS = {
    "RELU": lambda x, a, b: np.maximum(x, 0),
    "LEAKY_RELU": lambda x, a, b: np.where(x >= 0, x, a * x),
    "ELU": lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1)),
    "SELU": lambda x, a, b: np.where(x > 0, b * x, b * (a * np.exp(x) - a)),
    "SOFTPLUS": lambda x, a, b: a * np.log(np.exp(b * x) + 1),
    "CLIP": lambda x, a, b: np.clip(x, a, b),
    "HARD_SIGMOID": lambda x, a, b: np.clip(a * x + b, 0, 1),
    "SCALED_TANH": lambda x, a, b: a * np.tanh(b * x),
    "THRESHOLDED_RELU": lambda x, a, b: np.where(x > a, x, 0),
    "GELU_ERF": lambda x, a, b: 0.5 * x * (1 + _erf(x / np.sqrt(2))),
    "GELU_TANH": lambda x, a, b: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))),
}


@pytest.mark.parametrize("kind", sorted(ACTIVATIONS))
def test_activation_formulas(net, kind):
    x = net.add_input("x", trt.float32, X.shape)
    layer = net.add_activation(x, getattr(trt.ActivationType, kind))
    layer.alpha, layer.beta = 0.3, 1.7
    got = _run(net, layer.get_output(0), {"x": X})
    np.testing.assert_allclose(got, ACTIVATIONS[kind](X.astype(np.float64), 0.3, 1.7), rtol=1e-5, atol=1e-6)


def test_shuffle_placeholders_and_transposes(net):
    x = net.add_input("x", trt.float32, (-1, 3, 4))
    layer = net.add_shuffle(x)
    layer.first_transpose = (0, 2, 1)
    layer.reshape_dims = (0, -1)
    layer.second_transpose = (1, 0)
    np.testing.assert_array_equal(_run(net, layer.get_output(0), {"x": X}), X.transpose(0, 2, 1).reshape(2, -1).T)


@pytest.mark.parametrize("mode,expected", [("WRAP", [3, 0, 1]), ("CLAMP", [3, 3, 3]), ("FILL", [3, 0, 0]),
                                           ("REFLECT", [3, 2, 1])])
def test_slice_sample_modes(net, mode, expected):
    x = net.add_input("x", trt.float32, (4,))
    layer = net.add_slice(x, (3,), (3,), (1,))
    layer.mode = getattr(trt.SampleMode, mode)
    got = _run(net, layer.get_output(0), {"x": np.arange(4, dtype=np.float32)})
    np.testing.assert_array_equal(got, expected)


def test_gather_modes(net):
    data = net.add_input("d", trt.float32, (3, 4))
    idx = net.add_input("i", trt.int32, (3, 1))
    default = net.add_gather(data, idx, 1)
    element = net.add_gather_v2(data, idx, trt.GatherMode.ELEMENT)
    element.axis = 1
    for layer, name in ((default, "a"), (element, "b")):
        layer.get_output(0).name = name
        net.mark_output(layer.get_output(0))
    d, i = np.arange(12, dtype=np.float32).reshape(3, 4), np.array([[1], [3], [0]], np.int32)
    out = evaluate_network(trt, net, {"d": d, "i": i})
    np.testing.assert_array_equal(out["a"], np.take(d, i, axis=1))
    np.testing.assert_array_equal(out["b"], np.take_along_axis(d, i, axis=1))


def test_matmul_vector_and_transpose(net):
    a = net.add_input("a", trt.float32, (2, 3, 4))
    v = net.add_input("v", trt.float32, (2, 3))
    layer = net.add_matrix_multiply(a, trt.MatrixOperation.TRANSPOSE, v, trt.MatrixOperation.VECTOR)
    av, vv = X, RNG.standard_normal((2, 3)).astype(np.float32)
    got = _run(net, layer.get_output(0), {"a": av, "v": vv})
    np.testing.assert_allclose(got, np.einsum("bkm,bk->bm", av, vv), rtol=1e-6)


def test_normalization_and_softmax_axes(net):
    x = net.add_input("x", trt.float32, X.shape)
    ones = net.add_constant((1, 1, 4), _weights(np.full((1, 1, 4), 2.0, np.float32))).get_output(0)
    zeros = net.add_constant((1, 1, 4), _weights(np.full((1, 1, 4), 0.5, np.float32))).get_output(0)
    norm = net.add_normalization_v2(x, ones, zeros, 1 << 2)
    soft = net.add_softmax(norm.get_output(0))
    soft.axes = 1 << 1
    x64 = X.astype(np.float64)
    normed = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * 2 + 0.5
    want = np.exp(normed) / np.exp(normed).sum(1, keepdims=True)
    np.testing.assert_allclose(_run(net, soft.get_output(0), {"x": X}), want, rtol=1e-5)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_embedding_with_position_ids(net, interleaved):
    x = RNG.standard_normal((1, 2, 3, 4)).astype(np.float32)
    angles = RNG.standard_normal((5, 2)).astype(np.float32)
    inp = net.add_input("x", trt.float32, x.shape)
    cos = net.add_constant((5, 2), _weights(np.cos(angles))).get_output(0)
    sin = net.add_constant((5, 2), _weights(np.sin(angles))).get_output(0)
    layer = net.add_rotary_embedding(inp, cos, sin, interleaved, 0)
    pos = net.add_input("p", trt.int64, (1, 3))
    layer.set_input(3, pos)
    p = np.array([[4, 0, 2]], np.int64)
    got = _run(net, layer.get_output(0), {"x": x, "p": p})
    c, s = np.cos(angles[p])[:, None], np.sin(angles[p])[:, None]
    a, b = (x[..., 0::2], x[..., 1::2]) if interleaved else (x[..., :2], x[..., 2:])
    ra, rb = a * c - b * s, b * c + a * s
    want = np.stack([ra, rb], -1).reshape(x.shape) if interleaved else np.concatenate([ra, rb], -1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["UPPER_LEFT", "LOWER_RIGHT"])
def test_causal_gqa_attention(net, kind):
    q = RNG.standard_normal((1, 4, 2, 8)).astype(np.float32)
    k = RNG.standard_normal((1, 2, 3, 8)).astype(np.float32)
    v = RNG.standard_normal((1, 2, 3, 8)).astype(np.float32)
    inputs = [net.add_input(n, trt.float32, a.shape) for n, a in (("q", q), ("k", k), ("v", v))]
    att = net.add_attention_v2(*inputs, trt.AttentionNormalizationOp.SOFTMAX, getattr(trt.CausalMaskKind, kind))
    got = _run(net, att.get_output(0), {"q": q, "k": k, "v": v})
    kk, vv = np.repeat(k, 2, 1).astype(np.float64), np.repeat(v, 2, 1).astype(np.float64)
    scores = q @ kk.transpose(0, 1, 3, 2)  # TensorRT does not scale: the writer pre-scales Q
    shift = 0 if kind == "UPPER_LEFT" else 1
    allowed = np.arange(3)[None, :] <= np.arange(2)[:, None] + shift
    scores = np.where(allowed, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(got, probs / probs.sum(-1, keepdims=True) @ vv, rtol=1e-5, atol=1e-6)


def _collective_net(op, reduce, ranks=2):
    network = _network()
    x = network.add_input("x", trt.float32, (2, 3))
    layer = network.add_dist_collective(x, op, reduce, -1, list(range(ranks)))
    layer.num_ranks = ranks
    layer.name = "coll"
    layer.get_output(0).name = "out"
    network.mark_output(layer.get_output(0))
    return network


def test_collectives_across_ranks():
    feeds = [{"x": np.full((2, 3), r + 1, np.float32)} for r in range(2)]
    gather = _collective_net(trt.CollectiveOperation.ALL_GATHER, trt.ReduceOperation.NONE)
    outs = evaluate_ranks(trt, [gather, _collective_net(trt.CollectiveOperation.ALL_GATHER,
                                                        trt.ReduceOperation.NONE)], feeds)
    assert outs[1]["out"].shape == (4, 3) and outs[1]["out"][2, 0] == 2
    reduce = [_collective_net(trt.CollectiveOperation.ALL_REDUCE, trt.ReduceOperation.MAX) for _ in range(2)]
    assert evaluate_ranks(trt, reduce, feeds)[0]["out"][0, 0] == 3  # SUM: the API hides MAX
    spec = {"coll": CollectiveSpec("ALL_REDUCE", "MAX")}
    assert evaluate_ranks(trt, reduce, feeds, collectives=spec)[0]["out"][0, 0] == 2


def test_unsupported_layers_are_named(net):
    x = net.add_input("x", trt.float32, (4,))
    fill = net.add_fill((4,), trt.FillOperation.RANDOM_UNIFORM, trt.float32)
    fill.name = "noise"
    total = net.add_elementwise(x, fill.get_output(0), trt.ElementWiseOperation.SUM)
    with pytest.raises(EvaluateError, match=r"layer 'noise' \(FILL\): FillOperation.RANDOM_UNIFORM"):
        _run(net, total.get_output(0), {"x": np.zeros(4, np.float32)})


def test_bf16_constants_come_from_the_caller(net):
    values = np.arange(4, dtype=np.float32).astype(ml_dtypes.bfloat16)
    _KEEP.append(values)
    const = net.add_constant((4,), trt.Weights(trt.DataType.BF16, values.ctypes.data, values.size))
    const.name = "w"
    out = net.add_cast(const.get_output(0), trt.float32).get_output(0)
    with pytest.raises(EvaluateError, match="layer 'w'"):
        _run(net, out, {})
    np.testing.assert_array_equal(evaluate_network(trt, net, {}, constants={"w": values})["out"], [0, 1, 2, 3])


def test_feed_shapes_are_checked(net):
    x = net.add_input("x", trt.float32, (-1, 4))
    with pytest.raises(EvaluateError, match="feed for input 'x'"):
        _run(net, net.add_identity(x).get_output(0), {"x": np.zeros((2, 5), np.float32)})
