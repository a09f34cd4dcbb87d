"""The canonical network and its digests, on real TensorRT-RTX networks.

Cosmetic edits (names, doc strings, producer, node and initializer order) must leave the
structural digest alone; any change of structure must move it; a weight-only change must
move only the full digest and exactly one manifest entry.
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from trtcas.errors import TrtcasError
from trtcas.rules.canonical import (
    TRT_DOMAIN,
    CanonicalNetwork,
    canonicalize_network,
    diff_canonical,
    layer_classes,
)

trt = pytest.importorskip("tensorrt_rtx")
LOG = trt.Logger(trt.Logger.ERROR)


# ---------------------------------------------------------------------------------------
# Networks


class Parsed:
    """Keeps the builder, network and parser alive as long as the canonical form's weight
    views may be read (the parser owns the weights' memory)."""

    def __init__(self, model: onnx.ModelProto, profiles=None):
        self.builder = trt.Builder(LOG)
        self.network = self.builder.create_network(0)
        self.parser = trt.OnnxParser(self.network, LOG)
        data = model.SerializeToString()
        if not self.parser.parse(data):
            errors = [self.parser.get_error(i).desc() for i in range(self.parser.num_errors)]
            raise AssertionError(f"ONNX parse failed: {errors}")
        self.canon: CanonicalNetwork = canonicalize_network(trt, self.network, profiles, onnx_model=model)


def _weights(seed: int = 0, **replace) -> dict:
    rng = np.random.default_rng(seed)
    values = {
        "w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "b1": rng.standard_normal((4,)).astype(np.float32),
        "w2": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "w3": rng.standard_normal((4 * 8 * 8, 10)).astype(np.float32),
        "b3": rng.standard_normal((10,)).astype(np.float32),
        "shape": np.array([1, -1], dtype=np.int64),
    }
    values.update(replace)
    return values


def conv_model(
    stride=(2, 2),
    alpha=0.1,
    softmax_axis=1,
    input_shape=(1, 3, 16, 16),
    cast_to=TP.FLOAT16,
    add_second="a2",
    weights=None,
    order=None,
    names=None,
    initializer_order=None,
    doc="",
    producer="test",
    graph_name="g",
) -> onnx.ModelProto:
    """Two independent conv branches joined by an Add, then a classifier head. ``names``
    renames every tensor, node and initializer; ``order`` permutes nodes (must stay
    topological)."""
    weights = weights if weights is not None else _weights()
    n = names or {}

    def nm(x):
        return n.get(x, x)

    side = input_shape[2] // stride[0]
    if side != 8:  # keep the head's weight shape consistent with the conv output
        weights = dict(weights, w3=np.random.default_rng(7).standard_normal((4 * side * side, 10)).astype(np.float32))
    nodes = [
        helper.make_node("Conv", [nm("x"), nm("w1"), nm("b1")], [nm("c1")], name=nm("conv1"), strides=list(stride), pads=[1, 1, 1, 1], doc_string=doc),
        helper.make_node("LeakyRelu", [nm("c1")], [nm("a1")], name=nm("lrelu"), alpha=alpha),
        helper.make_node("Conv", [nm("x"), nm("w2")], [nm("c2")], name=nm("conv2"), strides=list(stride), pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", [nm("c2")], [nm("a2")], name=nm("sig")),
        helper.make_node("Add", [nm("a1"), nm(add_second)], [nm("s")], name=nm("add")),
        helper.make_node("Reshape", [nm("s"), nm("shape")], [nm("f")], name=nm("flat")),
        helper.make_node("MatMul", [nm("f"), nm("w3")], [nm("m")], name=nm("fc")),
        helper.make_node("Add", [nm("m"), nm("b3")], [nm("m2")], name=nm("fcb")),
        helper.make_node("Softmax", [nm("m2")], [nm("y")], name=nm("softmax"), axis=softmax_axis),
        helper.make_node("Cast", [nm("y")], [nm("z")], name=nm("cast"), to=cast_to),
    ]
    if order is not None:
        nodes = [nodes[i] for i in order]
    inits = [numpy_helper.from_array(v, nm(k)) for k, v in weights.items()]
    if initializer_order is not None:
        inits = [inits[i] for i in initializer_order]
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(nm("x"), TP.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(nm("z"), cast_to, None)],
        inits,
        doc_string=doc,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=producer, doc_string=doc)
    return model


ALL_NAMES = ["x", "w1", "b1", "w2", "w3", "b3", "shape", "c1", "a1", "c2", "a2", "s", "f", "m", "m2", "y", "z",
             "conv1", "lrelu", "conv2", "sig", "add", "flat", "fc", "fcb", "softmax", "cast"]
RENAMED = {name: f"renamed_{i}_{name[::-1]}" for i, name in enumerate(ALL_NAMES)}
# Node positions 0,1 (branch 1) and 2,3 (branch 2) are independent of each other.
INTERLEAVED = [2, 0, 3, 1, 4, 5, 6, 7, 8, 9]
BRANCH2_FIRST = [2, 3, 0, 1, 4, 5, 6, 7, 8, 9]


def canon(**kwargs) -> CanonicalNetwork:
    return Parsed(conv_model(**kwargs)).canon


@pytest.fixture(scope="module")
def base() -> Parsed:
    return Parsed(conv_model())


# ---------------------------------------------------------------------------------------
# Layer classes


def test_every_layer_type_maps_to_its_own_class():
    classes = layer_classes(trt)
    assert set(classes) == set(trt.LayerType.__members__.values())
    generic = sorted(t.name for t, cls in classes.items() if cls is trt.ILayer)
    # PLUGIN is the legacy v1 plugin layer; the API has no class for it any more.
    assert generic == ["PLUGIN"]
    for layer_type, cls in classes.items():
        assert issubclass(cls, trt.ILayer), layer_type
    assert classes[trt.LayerType.CONDITIONAL_INPUT] is trt.IIfConditionalInputLayer
    assert classes[trt.LayerType.SOFTMAX] is trt.ISoftMaxLayer


# ---------------------------------------------------------------------------------------
# Cosmetic edits keep both digests


def test_renaming_docs_and_producer_keep_digests(base):
    other = canon(names=RENAMED, doc="a doc string", producer="someone-else", graph_name="another")
    assert other.structural_digest == base.canon.structural_digest
    assert other.full_digest == base.canon.full_digest
    assert other.weights == base.canon.weights


@pytest.mark.parametrize("order", [INTERLEAVED, BRANCH2_FIRST])
def test_permuting_independent_nodes_keeps_digests(base, order):
    other = canon(order=order)
    assert other.structural_digest == base.canon.structural_digest
    assert other.full_digest == base.canon.full_digest


def test_initializer_order_keeps_digests(base):
    other = canon(initializer_order=[5, 4, 3, 2, 1, 0])
    assert other.full_digest == base.canon.full_digest


def test_tensor_and_layer_names_never_reach_the_model():
    parsed = Parsed(conv_model(names=RENAMED))
    data = parsed.canon.to_bytes()
    for original in RENAMED.values():
        assert original.encode() not in data
    names = {t.name for t in onnx.load_from_string(data).graph.value_info}
    assert all(name.startswith("t") and name[1:].isdigit() for name in names)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_random_topological_orders_and_names_keep_digest(base, data):
    rnd = data.draw(st.randoms(use_true_random=False))
    deps = {1: {0}, 3: {2}, 4: {1, 3}, 5: {4}, 6: {5}, 7: {6}, 8: {7}, 9: {8}}
    order, done = [], set()
    while len(order) < 10:
        ready = [i for i in range(10) if i not in done and deps.get(i, set()) <= done]
        pick = rnd.choice(ready)
        order.append(pick)
        done.add(pick)
    suffix = data.draw(st.text(alphabet="abcxyz_0123456789", min_size=1, max_size=6))
    names = {name: f"{name}_{suffix}_{rnd.randrange(1000)}" for name in ALL_NAMES}
    inits = list(range(6))
    rnd.shuffle(inits)
    other = canon(order=order, names=names, initializer_order=inits)
    assert other.structural_digest == base.canon.structural_digest
    assert other.full_digest == base.canon.full_digest


# ---------------------------------------------------------------------------------------
# Weights


def test_weight_only_change_moves_full_digest_and_one_manifest_entry(base):
    w2 = _weights()["w2"].copy()
    w2[0, 0, 0, 0] += 1.0
    other = canon(weights=_weights(w2=w2))
    assert other.structural_digest == base.canon.structural_digest
    assert other.full_digest != base.canon.full_digest
    old = {e.name: e for e in base.canon.weights.entries}
    new = {e.name: e for e in other.weights.entries}
    assert old.keys() == new.keys()
    changed = [name for name in old if old[name] != new[name]]
    assert len(changed) == 1
    assert other.refit_names[changed[0]] == "w2"
    assert np.array_equal(other.weight_values[changed[0]].reshape(w2.shape), w2)


def test_refit_names_are_the_onnx_initializer_names(base):
    canon_net = base.canon
    # "shape" is folded into the reshape by the parser: no weights of its own.
    assert sorted(canon_net.refit_names.values()) == ["b1", "b3", "w1", "w2", "w3"]
    by_name = {v: k for k, v in canon_net.refit_names.items()}
    assert by_name["w3"].endswith(".weights") and canon_net.weights[by_name["w3"]].shape == (256, 10)
    assert by_name["b1"].endswith(".bias")
    for role, refit_name in canon_net.refit_names.items():
        entry = canon_net.weights[role]
        assert entry.shape == tuple(canon_net.weight_values[role].shape)
        if refit_name in ("w1", "w2"):
            assert role.endswith(".kernel")
    # Conv weights also get the (layer, role) pair Refitter.set_weights takes.
    kernels = [r for r in canon_net.refit_layer_roles if r.endswith(".kernel")]
    assert len(kernels) == 2
    assert len([r for r in canon_net.refit_layer_roles if r.endswith(".bias")]) == 1  # conv2 has none
    assert {canon_net.refit_layer_roles[r][1] for r in kernels} == {"KERNEL"}


def test_weight_entries_hash_the_weight_bytes(base):
    from trtcas.cas.digest import hash_bytes

    for entry in base.canon.weights.entries:
        if entry.name in base.canon.weight_values:
            value = np.ascontiguousarray(base.canon.weight_values[entry.name])
            assert entry.digest == hash_bytes(value.tobytes(), "blake3")


# ---------------------------------------------------------------------------------------
# Structural changes move the structural digest


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"stride": (1, 1)}, id="conv-stride"),
        pytest.param({"alpha": 0.2}, id="activation-alpha"),
        pytest.param({"softmax_axis": 0}, id="softmax-axis"),
        pytest.param({"input_shape": (1, 3, 32, 32)}, id="input-shape"),
        pytest.param({"cast_to": TP.BFLOAT16}, id="cast-dtype"),
        pytest.param({"add_second": "c2"}, id="edge"),
    ],
)
def test_structural_change_moves_structural_digest(base, change):
    other = canon(**change)
    assert other.structural_digest != base.canon.structural_digest
    assert other.full_digest != base.canon.full_digest


def test_profile_change_moves_structural_digest():
    def dynamic(profile):
        model = conv_model()
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
        return Parsed(model, profiles=[profile]).canon

    small = dynamic({0: ((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))})
    same = dynamic({0: ((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))})
    large = dynamic({0: ((1, 3, 16, 16), (2, 3, 16, 16), (8, 3, 16, 16))})
    assert small.structural_digest == same.structural_digest
    assert small.structural_digest != large.structural_digest
    assert any("profile.0.input.0" in line and "[8, 3, 16, 16]" in line for line in diff_canonical(small.model, large.model))


def test_profile_by_input_name_equals_profile_by_position():
    model = conv_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    shapes = ((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))
    by_name = Parsed(model, profiles=[{"x": shapes}]).canon
    by_position = Parsed(model, profiles=[{0: shapes}]).canon
    assert by_name.structural_digest == by_position.structural_digest


def test_bad_profile_is_a_user_error():
    with pytest.raises(TrtcasError, match="no_such_input"):
        Parsed(conv_model(), profiles=[{"no_such_input": ((1,), (1,), (1,))}])
    with pytest.raises(TrtcasError, match="ranks"):
        Parsed(conv_model(), profiles=[{0: ((1, 3), (1, 3, 16, 16), (1, 3, 16, 16))}])
    with pytest.raises(TrtcasError, match="dimension 2 is fixed"):
        Parsed(conv_model(), profiles=[{0: ((1, 3, 8, 16), (1, 3, 16, 16), (1, 3, 16, 16))}])
    with pytest.raises(TrtcasError, match="min <= opt <= max"):
        Parsed(conv_model(), profiles=[{0: ((2, 3, 16, 16), (1, 3, 16, 16), (1, 3, 16, 16))}])


def test_dimension_names_are_canonical():
    def two_inputs(first: str, second: str):
        graph = helper.make_graph(
            [helper.make_node("Add", ["p", "q"], ["r"])],
            "g",
            [helper.make_tensor_value_info("p", TP.FLOAT, [first, 4]), helper.make_tensor_value_info("q", TP.FLOAT, [second, 4])],
            [helper.make_tensor_value_info("r", TP.FLOAT, None)],
        )
        return Parsed(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).canon

    same = two_inputs("batch", "batch")
    assert same.structural_digest == two_inputs("N", "N").structural_digest
    assert b"batch" not in same.to_bytes()


# ---------------------------------------------------------------------------------------
# The model itself, and diffs


def test_model_round_trips_and_declares_its_opsets(base):
    data = base.canon.to_bytes()
    loaded = onnx.load_from_string(data)
    assert loaded.SerializeToString(deterministic=True) == data
    assert {o.domain for o in loaded.opset_import} == {"", TRT_DOMAIN}
    assert all(node.domain == TRT_DOMAIN for node in loaded.graph.node)
    ops = [node.op_type for node in loaded.graph.node]
    assert {"CONVOLUTION", "ACTIVATION", "ELEMENTWISE", "SHUFFLE", "MATRIX_MULTIPLY", "SOFTMAX", "CAST", "CONSTANT"} <= set(ops)
    for node in loaded.graph.node:
        names = [a.name for a in node.attribute]
        assert names == sorted(names)
    assert not loaded.doc_string and not loaded.graph.doc_string


def test_structural_model_drops_only_weight_digests(base):
    full = base.canon.model
    structural = base.canon.structural_model()
    assert b"digest" in full.SerializeToString()
    assert b"digest" not in structural.SerializeToString()
    assert len(structural.graph.node) == len(full.graph.node)


def test_diff_names_the_changed_stride(base):
    other = canon(stride=(1, 1))
    lines = diff_canonical(other.model, base.canon.model)
    stride_lines = [line for line in lines if "stride_nd" in line]
    assert stride_lines, lines
    assert all("CONVOLUTION: attribute stride_nd [1, 1] -> [2, 2]" in line for line in stride_lines)
    assert diff_canonical(base.canon.model, base.canon.model) == []


def test_diff_reports_input_shape_and_added_layer(base):
    bigger = canon(input_shape=(1, 3, 32, 32))
    lines = diff_canonical(base.canon.model, bigger.model)
    assert "input 0 shape [1,3,16,16] -> [1,3,32,32]" in lines

    model = conv_model()
    model.graph.node[-1].output[0] = "z0"
    model.graph.node.append(helper.make_node("Relu", ["z0"], ["z"]))
    with_relu = Parsed(model).canon
    lines = diff_canonical(base.canon.model, with_relu.model)
    assert any(line.startswith("layer L") and line.endswith("added: ACTIVATION") for line in lines), lines


def test_diff_reports_weight_digest_and_edge(base):
    w1 = _weights()["w1"] * 2
    lines = diff_canonical(base.canon.model, canon(weights=_weights(w1=w1)).model)
    assert len(lines) == 1 and "attribute kernel" in lines[0], lines
    lines = diff_canonical(base.canon.model, canon(add_second="c2").model)
    assert any("input 1 from" in line for line in lines), lines


# ---------------------------------------------------------------------------------------
# Hand-built networks


def _hand_built(swap: bool, names: str = "", epsilon: float = 1e-5, constant_seed: int = 1, causal=None):
    """Conv + activation + softmax branch and a normalization + matmul + attention branch,
    added in either order; ``names`` prefixes every layer and tensor name."""
    rng = np.random.default_rng(0)
    keep = []

    def weights(array):
        keep.append(array)
        return trt.Weights(array)

    builder = trt.Builder(LOG)
    net = builder.create_network(0)
    x = net.add_input(names + "x", trt.float32, (1, 4, 8, 8))
    h = net.add_input(names + "h", trt.float32, (1, 2, 4, 8))

    def conv_branch():
        conv = net.add_convolution_nd(x, 4, (3, 3), weights(rng.standard_normal((4, 4, 3, 3)).astype(np.float32)),
                                      weights(rng.standard_normal(4).astype(np.float32)))
        conv.padding_nd = (1, 1)
        act = net.add_activation(conv.get_output(0), trt.ActivationType.RELU)
        soft = net.add_softmax(act.get_output(0))
        soft.axes = 1 << 1
        for layer in (conv, act, soft):
            layer.name = names + layer.name
        return soft.get_output(0)

    def attention_branch():
        gamma = net.add_constant((1, 1, 1, 8), weights(np.ones((1, 1, 1, 8), np.float32)))
        beta = net.add_constant((1, 1, 1, 8), weights(np.zeros((1, 1, 1, 8), np.float32)))
        norm = net.add_normalization(h, gamma.get_output(0), beta.get_output(0), 1 << 3)
        norm.epsilon = epsilon
        proj = net.add_constant((1, 1, 8, 8), weights(np.random.default_rng(constant_seed).standard_normal((1, 1, 8, 8)).astype(np.float32)))
        mm = net.add_matrix_multiply(norm.get_output(0), trt.MatrixOperation.NONE, proj.get_output(0), trt.MatrixOperation.NONE)
        q = net.add_cast(mm.get_output(0), trt.float16).get_output(0)
        kv = net.add_cast(h, trt.float16).get_output(0)
        attention = net.add_attention_v2(q, kv, kv, trt.AttentionNormalizationOp.SOFTMAX, causal or trt.CausalMaskKind.NONE)
        for layer in (gamma, beta, norm, proj, mm):
            layer.name = names + layer.name
        return attention.get_output(0)

    if swap:
        b_out, a_out = attention_branch(), conv_branch()
    else:
        a_out, b_out = conv_branch(), attention_branch()
    for i, tensor in enumerate((a_out, b_out)):
        tensor.name = f"{names}out{i}"
        net.mark_output(tensor)
    result = canonicalize_network(trt, net)
    return result, (builder, net, keep)


def test_hand_built_network_ignores_insertion_order_and_names():
    first, _ = _hand_built(swap=False)
    second, _ = _hand_built(swap=True, names="other_")
    ops = {node.op_type for node in first.model.graph.node}
    assert {"CONVOLUTION", "ACTIVATION", "SOFTMAX", "NORMALIZATION", "CONSTANT", "MATRIX_MULTIPLY", "CAST",
            "ATTENTION_INPUT", "ATTENTION_OUTPUT"} <= ops
    assert first.structural_digest == second.structural_digest
    assert first.full_digest == second.full_digest
    assert b"other_" not in second.to_bytes()


def test_hand_built_network_attribute_and_weight_changes():
    base_net, _ = _hand_built(swap=False)
    eps, _ = _hand_built(swap=False, epsilon=1e-3)
    assert eps.structural_digest != base_net.structural_digest
    assert any("NORMALIZATION: attribute epsilon" in line for line in diff_canonical(base_net.model, eps.model))

    causal, _ = _hand_built(swap=False, causal=trt.CausalMaskKind.UPPER_LEFT)
    assert causal.structural_digest != base_net.structural_digest
    assert any("attention.causal_kind NONE -> UPPER_LEFT" in line for line in diff_canonical(base_net.model, causal.model))

    reseeded, _ = _hand_built(swap=False, constant_seed=2)
    assert reseeded.structural_digest == base_net.structural_digest
    assert reseeded.full_digest != base_net.full_digest
    changed = [a.name for a, b in zip(base_net.weights.entries, reseeded.weights.entries) if a != b]
    assert len(changed) == 1 and changed[0].endswith(".weights")
    assert "Constant" in reseeded.refit_names[changed[0]]


def _loop_and_conditional(prefix: str, trip: int = 3):
    keep = []

    def const(array):
        keep.append(array)
        return net.add_constant(array.shape, trt.Weights(array)).get_output(0)

    builder = trt.Builder(LOG)
    net = builder.create_network(0)
    x = net.add_input(prefix + "x", trt.float32, (2, 4))
    loop = net.add_loop()
    loop.name = prefix + "loop"
    loop.add_trip_limit(const(np.array(trip, np.int32)), trt.TripLimit.COUNT)
    rec = loop.add_recurrence(x)
    add = net.add_elementwise(rec.get_output(0), x, trt.ElementWiseOperation.SUM)
    rec.set_input(1, add.get_output(0))
    out = loop.add_loop_output(rec.get_output(0), trt.LoopOutput.LAST_VALUE)
    cond = net.add_if_conditional()
    cond.name = prefix + "cond"
    cond.set_condition(const(np.array(True)))
    inner = cond.add_input(out.get_output(0))
    relu = net.add_activation(inner.get_output(0), trt.ActivationType.RELU)
    sig = net.add_activation(inner.get_output(0), trt.ActivationType.SIGMOID)
    net.mark_output(cond.add_output(relu.get_output(0), sig.get_output(0)).get_output(0))
    return canonicalize_network(trt, net), (builder, net, keep)


def test_loops_and_conditionals_are_canonical():
    first, _ = _loop_and_conditional("a_")
    second, _ = _loop_and_conditional("zz_")
    assert first.structural_digest == second.structural_digest
    ops = [node.op_type for node in first.model.graph.node]
    for op in ("TRIP_LIMIT", "RECURRENCE", "LOOP_OUTPUT", "CONDITION", "CONDITIONAL_INPUT", "CONDITIONAL_OUTPUT"):
        assert op in ops
    loops = {helper.get_attribute_value(a) for n in first.model.graph.node for a in n.attribute if a.name == "loop"}
    assert loops == {b"loop0"}
    more_trips, _ = _loop_and_conditional("a_", trip=4)
    assert more_trips.structural_digest == first.structural_digest  # the trip count is a weight
    assert more_trips.full_digest != first.full_digest


# ---------------------------------------------------------------------------------------
# Weights numpy cannot hold, and speed


def _bf16_model(values: np.ndarray) -> onnx.ModelProto:
    bits = (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    w = helper.make_tensor("W", TP.BFLOAT16, list(values.shape), vals=bits.tobytes(), raw=True)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xb"], to=TP.BFLOAT16), helper.make_node("MatMul", ["xb", "W"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TP.FLOAT, [4, 4])], [helper.make_tensor_value_info("y", TP.BFLOAT16, None)], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_bf16_weights_are_hashed_from_the_source_model():
    values = np.arange(16, dtype=np.float32).reshape(4, 4)
    first = Parsed(_bf16_model(values)).canon
    second = Parsed(_bf16_model(values + 1)).canon
    assert first.structural_digest == second.structural_digest
    assert first.full_digest != second.full_digest
    (entry,) = first.weights.entries
    assert entry.dtype == "bfloat16" and entry.shape == (4, 4) and entry.digest.size == 32


def test_bf16_weights_without_the_source_model_are_a_user_error():
    model = _bf16_model(np.ones((4, 4), np.float32))
    builder = trt.Builder(LOG)
    net = builder.create_network(0)
    parser = trt.OnnxParser(net, LOG)
    assert parser.parse(model.SerializeToString())
    with pytest.raises(TrtcasError, match="onnx_model"):
        canonicalize_network(trt, net)


def test_a_few_hundred_layers_canonicalize_in_well_under_a_second():
    rng = np.random.default_rng(3)
    nodes, inits, prev = [], [], "x"
    for i in range(100):
        inits.append(numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(rng.standard_normal((16,)).astype(np.float32), f"b{i}"))
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [f"r{i}"]),
        ]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TP.FLOAT, [8, 16])],
                              [helper.make_tensor_value_info(prev, TP.FLOAT, None)], inits)
    parsed = Parsed(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert parsed.network.num_layers >= 300
    start = time.perf_counter()
    again = canonicalize_network(trt, parsed.network)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, elapsed
    assert again.structural_digest == parsed.canon.structural_digest


def test_digest_does_not_depend_on_what_was_queried_before():
    fresh = Parsed(conv_model()).canon
    parsed = Parsed(conv_model())
    net = parsed.network
    for index in reversed(range(net.num_layers)):
        net.get_layer(index).get_output(0).shape
    again = canonicalize_network(trt, net, onnx_model=conv_model())
    assert again.full_digest == fresh.full_digest == parsed.canon.full_digest


# ---------------------------------------------------------------------------------------
# Every layer type this API can build on a CPU, as independent branches

BRANCH_INPUTS = {  # created first, in this order: input positions are structure
    "img": (trt.float32, (1, 4, 8, 8)), "grid": (trt.float32, (1, 3, 3, 2)), "mat": (trt.float32, (4, 4)),
    "q": (trt.float32, (4, 32)), "idx": (trt.int32, (4,)), "ok": (trt.bool, (2,)),
    "hidden": (trt.float16, (1, 2, 4, 8)), "cache": (trt.float16, (1, 2, 16, 8)), "write_at": (trt.int32, (1,)),
    "boxes": (trt.float32, (1, 10, 4)), "scores": (trt.float32, (1, 1, 10)), "tokens": (trt.float16, (1, 4, 8)),
    "experts": (trt.int32, (1, 4, 2)), "expert_weights": (trt.float16, (1, 4, 2)), "gate": (trt.float16, (4, 8, 16)),
    "up": (trt.float16, (4, 8, 16)), "down": (trt.float16, (4, 16, 8)), "state": (trt.float32, (3, 4)),
}


class _Branches:
    """Independent subgraphs that together use every layer type but the plugin ones; each
    method returns the tensors to mark as outputs."""

    def __init__(self, net, inputs):
        self.net, self.x, self.keep = net, inputs, []

    def rng(self, branch: str):
        return np.random.default_rng(BRANCH_NAMES.index(branch))

    def weights(self, array):
        self.keep.append(array)
        return trt.Weights(array)

    def const(self, array):
        return self.net.add_constant(array.shape, self.weights(array)).get_output(0)

    def reshaped(self, tensor, shape):
        shuffle = self.net.add_shuffle(tensor)
        shuffle.reshape_dims = shape
        return shuffle.get_output(0)

    def conv(self):
        net, f32, rng = self.net, np.float32, self.rng("conv")
        conv = net.add_convolution_nd(self.x["img"], 4, (3, 3), self.weights(rng.standard_normal((4, 4, 3, 3)).astype(f32)), trt.Weights())
        pool = net.add_pooling_nd(conv.get_output(0), trt.PoolingType.AVERAGE, (2, 2))
        deconv = net.add_deconvolution_nd(pool.get_output(0), 4, (2, 2), self.weights(rng.standard_normal((4, 4, 2, 2)).astype(f32)), trt.Weights())
        scale = net.add_scale(deconv.get_output(0), trt.ScaleMode.CHANNEL, self.weights(np.ones(4, f32)), self.weights(np.ones(4, f32)), trt.Weights())
        lrn = net.add_lrn(scale.get_output(0), 3, 1e-4, 0.75, 1.0)
        pad = net.add_padding_nd(lrn.get_output(0), (1, 1), (1, 1))
        prelu = net.add_parametric_relu(pad.get_output(0), self.const(np.ones((1, 4, 1, 1), f32)))
        resize = net.add_resize(prelu.get_output(0))
        resize.scales = [1.0, 1.0, 2.0, 2.0]
        return [net.add_grid_sample(resize.get_output(0), self.x["grid"]).get_output(0)]

    def tensor_ops(self):
        net, x, c = self.net, self.x["mat"], self.const
        unary = net.add_unary(x, trt.UnaryOperation.ABS)
        reduce = net.add_reduce(unary.get_output(0), trt.ReduceOperation.MAX, 1 << 1, True)
        topk = net.add_topk(x, trt.TopKOperation.MAX, 2, 1 << 1)
        cat = net.add_concatenation([reduce.get_output(0), topk.get_output(0)])
        cat.axis = 1
        sliced = net.add_slice(cat.get_output(0), (0, 0), (4, 2), (1, 1))
        ein = net.add_einsum([sliced.get_output(0)], "ij->ji")
        gather = net.add_gather(ein.get_output(0), c(np.array([0, 1], np.int32)), 0)
        scatter = net.add_scatter(x, c(np.zeros((1, 4), np.int32)), c(np.ones((1, 4), np.float32)), trt.ScatterMode.ELEMENT)
        cum = net.add_cumulative(scatter.get_output(0), c(np.array(1, np.int32)), trt.CumulativeOperation.SUM, True, False)
        unsq = net.add_unsqueeze(cum.get_output(0), c(np.array([0], np.int64)))
        sq = net.add_squeeze(unsq.get_output(0), c(np.array([0], np.int64)))
        sel = net.add_select(c(np.ones((4, 4), bool)), sq.get_output(0), x)
        rev = net.add_reverse_sequence(self.reshaped(sel.get_output(0), (4, 4, 1)), c(np.array([1, 2, 3, 4], np.int32)))
        ragged = net.add_ragged_softmax(self.reshaped(gather.get_output(0), (1, 2, 4)), c(np.ones((1, 2, 1), np.int32)))
        fill = net.add_fill((2, 3), trt.FillOperation.LINSPACE, trt.float32)
        fill.alpha, fill.beta = 0.0, 1.0
        return [rev.get_output(0), ragged.get_output(0), net.add_non_zero(x).get_output(0), net.add_shape(x).get_output(0),
                fill.get_output(0), topk.get_output(1), net.add_identity(x).get_output(0)]

    def quantize(self):
        net, c = self.net, self.const
        q = net.add_quantize(self.x["q"], c(np.array(0.1, np.float32)), trt.int8)
        dq = net.add_dequantize(q.get_output(0), c(np.array(0.1, np.float32)), trt.float32)
        dyn = net.add_dynamic_quantize_v2(net.add_cast(dq.get_output(0), trt.float16).get_output(0), (1, 16), trt.fp4, trt.fp8)
        dyn.set_input(1, c(np.array(1.0, np.float32)))
        act = net.add_activation(dq.get_output(0), trt.ActivationType.CLIP)
        act.alpha, act.beta = -1.0, 1.0
        one_hot = net.add_one_hot(self.x["idx"], c(np.array([0, 1], np.float32)), c(np.array(5, np.int32)), -1)
        net.add_assertion(self.x["ok"], "must hold")
        return [dyn.get_output(0), dyn.get_output(1), net.add_softmax(act.get_output(0)).get_output(0), one_hot.get_output(0)]

    def llm(self):
        net, c, x = self.net, self.const, self.x
        h = x["hidden"]
        norm = net.add_normalization(h, c(np.ones((1, 1, 1, 8), np.float16)), c(np.zeros((1, 1, 1, 8), np.float16)), 1 << 3)
        proj = net.add_matrix_multiply(norm.get_output(0), trt.MatrixOperation.NONE, c(self.rng("llm").standard_normal((1, 1, 8, 8)).astype(np.float16)), trt.MatrixOperation.NONE)
        rope = net.add_rotary_embedding(proj.get_output(0), c(np.ones((1, 4, 4), np.float16)), c(np.zeros((1, 4, 4), np.float16)), False, 8)
        attention = net.add_attention_v2(rope.get_output(0), h, h, trt.AttentionNormalizationOp.SOFTMAX, trt.CausalMaskKind.UPPER_LEFT)
        kv = net.add_kv_cache_update(x["cache"], attention.get_output(0), x["write_at"], trt.KVCacheMode.LINEAR)
        dist = net.add_dist_collective(self.reshaped(rope.get_output(0), (8, 8)), trt.CollectiveOperation.ALL_REDUCE, trt.ReduceOperation.SUM, -1, None)
        nms = net.add_nms(x["boxes"], x["scores"], c(np.array(5, np.int32)))
        moe = net.add_moe(x["tokens"], x["experts"], x["expert_weights"])
        moe.set_gated_weights(x["gate"], x["up"], x["down"], trt.MoEActType.SILU)
        return [kv.get_output(0), dist.get_output(0), nms.get_output(0), moe.get_output(0)]

    def control_flow(self):
        net = self.net
        loop = net.add_loop()
        loop.add_trip_limit(self.const(np.array(3, np.int32)), trt.TripLimit.COUNT)
        it = loop.add_iterator(self.x["state"], 0, False)
        rec = loop.add_recurrence(it.get_output(0))
        step = net.add_elementwise(rec.get_output(0), it.get_output(0), trt.ElementWiseOperation.SUM)
        rec.set_input(1, step.get_output(0))
        out = loop.add_loop_output(step.get_output(0), trt.LoopOutput.LAST_VALUE)
        branch = net.add_if_conditional()
        branch.set_condition(self.const(np.array(True)))
        inner = branch.add_input(out.get_output(0))
        relu = net.add_activation(inner.get_output(0), trt.ActivationType.RELU)
        sig = net.add_activation(inner.get_output(0), trt.ActivationType.SIGMOID)
        return [branch.add_output(relu.get_output(0), sig.get_output(0)).get_output(0)]


BRANCH_NAMES = ["conv", "tensor_ops", "quantize", "llm", "control_flow"]


def _all_layer_types(branch_order, prefix: str):
    builder = trt.Builder(LOG)
    net = builder.create_network(0)
    inputs = {name: net.add_input(prefix + name, dtype, shape) for name, (dtype, shape) in BRANCH_INPUTS.items()}
    branches = _Branches(net, inputs)
    outputs = {name: getattr(branches, name)() for name in branch_order}
    for name in BRANCH_NAMES:  # output positions are structure: fixed order
        for i, tensor in enumerate(outputs[name]):
            tensor.name = f"{prefix}{name}_{i}"
            net.mark_output(tensor)
    return canonicalize_network(trt, net), (builder, net, branches)


def test_every_cpu_buildable_layer_type_is_canonical():
    first, _ = _all_layer_types(BRANCH_NAMES, prefix="")
    ops = {node.op_type for node in first.model.graph.node}
    # Plugin layers need a plugin library; PLUGIN (v1) cannot be created at all.
    assert set(trt.LayerType.__members__) - ops == {"PLUGIN", "PLUGIN_V2", "PLUGIN_V3"}
    second, _ = _all_layer_types(list(reversed(BRANCH_NAMES)), prefix="renamed_")
    assert second.full_digest == first.full_digest
    assert b"renamed_" not in second.to_bytes()
    third, _ = _all_layer_types(BRANCH_NAMES[2:] + BRANCH_NAMES[:2], prefix="x")
    assert third.full_digest == first.full_digest


def test_two_attentions_get_their_own_ids_in_canonical_order():
    builder = trt.Builder(LOG)
    net = builder.create_network(0)
    q = net.add_input("q", trt.float16, (1, 2, 4, 8))
    first = net.add_attention_v2(q, q, q, trt.AttentionNormalizationOp.SOFTMAX, trt.CausalMaskKind.NONE)
    second = net.add_attention_v2(first.get_output(0), q, q, trt.AttentionNormalizationOp.SOFTMAX, trt.CausalMaskKind.UPPER_LEFT)
    for attention in (first, second):
        attention.name = "same name"  # names must not be what tells owners apart
    net.mark_output(second.get_output(0))
    canon_net = canonicalize_network(trt, net)
    owners = [(n.op_type, helper.get_attribute_value(next(a for a in n.attribute if a.name == "attention")))
              for n in canon_net.model.graph.node]
    assert owners == [("ATTENTION_INPUT", b"attention0"), ("ATTENTION_OUTPUT", b"attention0"),
                      ("ATTENTION_INPUT", b"attention1"), ("ATTENTION_OUTPUT", b"attention1")]
