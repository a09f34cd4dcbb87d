"""Emitting the canonical ONNX model (domain ``trt``) from the read, ordered network, and
the public entry point ``canonicalize_network``.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper

from trtcas.cas.digest import DEFAULT_ALGO, hash_bytes
from trtcas.cas.manifest import TensorEntry, TensorManifest
from trtcas.rules.canonical.model import (
    CANONICAL_VERSION,
    DEFAULT_DOMAIN_OPSET,
    IR_VERSION,
    PRODUCER_NAME,
    ROLE_OF_PROPERTY,
    TRT_DOMAIN,
    TRT_TO_ONNX_DTYPE,
    CanonicalizeError,
    CanonicalNetwork,
    Network,
    OwnerRef,
    Tensor,
    TensorRef,
    WeightRef,
    serialize,
    strip_weight_digests,
)
from trtcas.rules.canonical.onnx_names import OnnxHints
from trtcas.rules.canonical.order import canonical_order
from trtcas.rules.canonical.read import KnownWeights, read_network


def _onnx_dtype(trt_dtype_name: str) -> int:
    return TRT_TO_ONNX_DTYPE.get(trt_dtype_name, TensorProto.UNDEFINED)


def _attribute(name: str, value) -> AttributeProto:
    attr = AttributeProto()
    attr.name = name
    if isinstance(value, TensorProto):
        attr.type = AttributeProto.TENSOR
        attr.t.CopyFrom(value)
    elif isinstance(value, bool) or isinstance(value, int):
        attr.type = AttributeProto.INT
        attr.i = int(value)
    elif isinstance(value, float):
        if float(np.float32(value)) == value:
            attr.type = AttributeProto.FLOAT
            attr.f = value
        else:  # a double that float32 would round: keep it exact as text
            attr.type = AttributeProto.STRING
            attr.s = repr(value).encode()
    elif isinstance(value, str):
        attr.type = AttributeProto.STRING
        attr.s = value.encode()
    elif isinstance(value, tuple):
        if all(isinstance(v, int) for v in value):
            attr.type = AttributeProto.INTS
            attr.ints.extend(value)
        elif all(isinstance(v, (int, float)) for v in value):
            attr.type = AttributeProto.FLOATS
            attr.floats.extend(float(v) for v in value)
        else:
            attr.type = AttributeProto.STRINGS
            attr.strings.extend(str(v).encode() for v in value)
    else:
        raise TypeError(f"no attribute encoding for {type(value).__name__}")
    return attr


def _weight_tensor(role: str, ref: WeightRef) -> TensorProto:
    """A weights reference: type and dims, no data, and (in ``metadata_props``) the role,
    dtype and digest. Not ``data_location=EXTERNAL``: viewers and the checker would go
    looking for a file named after the role."""
    tensor = TensorProto()
    tensor.name = role
    try:
        tensor.data_type = helper.np_dtype_to_tensor_dtype(np.dtype(ref.dtype))
    except Exception:  # noqa: BLE001 - dtypes numpy does not know
        tensor.data_type = TensorProto.UNDEFINED
    tensor.dims.extend(ref.shape)
    entries = [("role", role), ("dtype", ref.dtype), ("digest", str(ref.digest))]
    if ref.refittable:
        entries.append(("refittable", "1"))
    for key, value in entries:
        entry = tensor.metadata_props.add()
        entry.key, entry.value = key, value
    return tensor


def _value_info(name: str, tensor: Tensor, dim_names: Mapping[str, str]) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto()
    info.name = name
    tensor_type = info.type.tensor_type
    tensor_type.elem_type = _onnx_dtype(tensor.dtype)
    shape = tensor_type.shape
    shape.SetInParent()
    for size, dim_name in zip(tensor.shape, tensor.dim_names):
        dim = shape.dim.add()
        if dim_name is not None:
            dim.dim_param = dim_names[dim_name]
        elif size >= 0:
            dim.dim_value = size
        else:
            dim.dim_param = "?"
    for key, value in (("dtype", tensor.dtype),) + tensor.props:
        prop = info.metadata_props.add()
        prop.key, prop.value = key, str(value)
    return info


def _owner_ids(net: Network, order: Sequence[int]) -> dict:
    ids, counts = {}, {}
    for pos in order:
        for _, value in net.layers[pos].attrs:
            if isinstance(value, OwnerRef) and (value.kind, value.group) not in ids:
                count = counts.get(value.kind, 0)
                ids[(value.kind, value.group)] = f"{value.kind}{count}"
                counts[value.kind] = count + 1
    return ids


def _dim_name_map(net: Network, tensor_names: Mapping[str, str]) -> dict:
    names: dict = {}
    for key in sorted(tensor_names, key=lambda k: int(tensor_names[k][1:])):
        for dim_name in net.tensors[key].dim_names:
            if dim_name is not None and dim_name not in names:
                names[dim_name] = f"d{len(names)}"
    return names


def _profile_props(profiles: list[dict]) -> list[tuple[str, str]]:
    props = []
    for p_index, profile in enumerate(profiles or ()):
        for position in sorted(profile):
            lo, opt, hi = profile[position]
            props.append((f"profile.{p_index}.input.{position}", f"min={list(lo)};opt={list(opt)};max={list(hi)}"))
    return props


def _normalize_profiles(input_names: Sequence[str], input_tensors: Sequence[Tensor], profiles) -> list[dict]:
    """Profiles keyed by input position with int tuples; input names are accepted and turned
    into positions, so a renamed input keeps its profile's digest. Shapes are checked
    against the inputs here, where the message can name the input, rather than failing
    later inside an engine build."""
    result = []
    for p_index, profile in enumerate(profiles or ()):
        normalized = {}
        for key, shapes in dict(profile).items():
            position = _profile_position(input_names, p_index, key)
            where = f"profile {p_index} input {position}"
            try:
                lo, opt, hi = (tuple(int(d) for d in s) for s in shapes)
            except (TypeError, ValueError) as exc:
                raise CanonicalizeError(f"{where}: expected (min, opt, max) shapes") from exc
            if not len(lo) == len(opt) == len(hi):
                raise CanonicalizeError(f"{where}: min/opt/max shapes have different ranks")
            if any(not a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise CanonicalizeError(f"{where}: need min <= opt <= max in every dimension, got {lo}, {opt}, {hi}")
            tensor = input_tensors[position]
            if dict(tensor.props).get("is_shape_tensor") != 1:  # shape tensors take values, not shapes
                if len(lo) != len(tensor.shape):
                    raise CanonicalizeError(f"{where}: shapes of rank {len(lo)} for an input of rank {len(tensor.shape)}")
                fixed = [i for i, d in enumerate(tensor.shape) if d >= 0 and not lo[i] == hi[i] == d]
                if fixed:
                    raise CanonicalizeError(f"{where}: dimension {fixed[0]} is fixed at {tensor.shape[fixed[0]]} in the network")
            normalized[position] = (lo, opt, hi)
        result.append(normalized)
    return result


def _profile_position(input_names: Sequence[str], p_index: int, key) -> int:
    if isinstance(key, str):
        if key not in input_names:
            raise CanonicalizeError(f"profile {p_index} names input {key!r}, which the network does not have")
        return list(input_names).index(key)
    position = int(key)
    if not 0 <= position < len(input_names):
        raise CanonicalizeError(f"profile {p_index} names input {position}; the network has {len(input_names)} inputs")
    return position


def _build_model(net: Network, order: Sequence[int], profiles: list[dict]):
    """The canonical model, filled in a fixed order, plus role -> weights and role -> layer
    name for the manifest and refit maps."""
    tensor_names = {key: f"t{i}" for i, key in enumerate(net.inputs)}
    layer_ids = {}
    for canon_idx, pos in enumerate(order):
        layer_ids[pos] = f"L{canon_idx}"
        for key in net.layers[pos].outputs:
            tensor_names.setdefault(key, f"t{len(tensor_names)}")
    owner_ids = _owner_ids(net, order)
    dim_names = _dim_name_map(net, tensor_names)

    model = onnx.ModelProto()
    model.ir_version = IR_VERSION
    model.producer_name = PRODUCER_NAME
    model.producer_version = str(CANONICAL_VERSION)
    for domain, version in (("", DEFAULT_DOMAIN_OPSET), (TRT_DOMAIN, CANONICAL_VERSION)):
        opset = model.opset_import.add()
        opset.domain, opset.version = domain, version
    graph = model.graph
    graph.name = "canonical"
    weights: dict = {}  # role -> WeightRef
    roles_layer: dict = {}  # role -> TensorRT layer name
    for pos in order:
        layer = net.layers[pos]
        node = graph.node.add()
        node.name = layer_ids[pos]
        node.op_type = layer.op
        node.domain = TRT_DOMAIN
        node.input.extend("" if key is None else tensor_names.get(key, "") for key in layer.inputs)
        node.output.extend(tensor_names[key] for key in layer.outputs)
        for prop, value in layer.attrs:
            if isinstance(value, WeightRef):
                role = f"{node.name}.{prop}"
                weights[role] = value
                roles_layer[role] = layer.name
                value = _weight_tensor(role, value)
            elif isinstance(value, TensorRef):
                value = tensor_names.get(value.key, "")
            elif isinstance(value, OwnerRef):
                value = owner_ids[(value.kind, value.group)]
            node.attribute.append(_attribute(prop, value))

    for key in net.inputs:
        graph.input.append(_value_info(tensor_names[key], net.tensors[key], dim_names))
    for key in net.outputs:
        graph.output.append(_value_info(tensor_names[key], net.tensors[key], dim_names))
    io = set(net.inputs) | set(net.outputs)
    for key in sorted(tensor_names, key=lambda k: int(tensor_names[k][1:])):
        if key not in io:
            graph.value_info.append(_value_info(tensor_names[key], net.tensors[key], dim_names))

    meta = [("trtcas.canonical_version", str(CANONICAL_VERSION)), ("network.flags", ",".join(net.flags))]
    meta += _profile_props(profiles)
    for key, value in meta:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    return model, weights, roles_layer


def canonicalize_network(
    trt,
    network,
    profiles: Iterable[Mapping] | None = None,
    *,
    onnx_model: onnx.ModelProto | None = None,
    algo: str = DEFAULT_ALGO,
    copy_weights: bool = True,
    known: KnownWeights | None = None,
) -> CanonicalNetwork:
    """Canonicalize ``network`` (an ``INetworkDefinition`` of module ``trt``).

    ``profiles``: optimization profiles, each a mapping input position (or input name) ->
    (min, opt, max) shape. ``onnx_model``: the model the network was parsed from, if any;
    it supplies refit names of non-constant weights and the bytes of weights whose dtype
    numpy lacks (bf16, fp8, int4, fp4), which the TensorRT API cannot hand out.
    ``copy_weights=False`` hands out ``weight_values`` as views into TensorRT's memory
    (no copy of a multi-GB rank; valid only while the network and its parser live).
    ``known``: digests (and bf16 bytes) of constants the network's writer already has, by
    constant name; a weight taken by digest has no entry in ``weight_values``.
    """
    net = read_network(trt, network, OnnxHints(onnx_model), algo, copy_weights, known)
    normalized = _normalize_profiles(net.inputs, [net.tensors[k] for k in net.inputs], profiles)
    order = canonical_order(net)
    model, weights, roles_layer = _build_model(net, order, normalized)

    entries, refit_names, values, layer_roles = [], {}, {}, {}
    for role, ref in weights.items():
        entries.append(TensorEntry(role, ref.dtype, ref.shape, ref.digest))
        if ref.value is not None:
            values[role] = ref.value
        if ref.refit_name is not None:
            refit_names[role] = ref.refit_name
        trt_role = ROLE_OF_PROPERTY.get(ref.prop)
        if trt_role is not None and trt_role != "CONSTANT" and ref.digest.size:  # not an absent bias
            layer_roles[role] = (roles_layer[role], trt_role)
    full = serialize(model)
    structural = serialize(strip_weight_digests(model))
    return CanonicalNetwork(
        model=model,
        structural_digest=hash_bytes(structural, algo),
        full_digest=hash_bytes(full, algo),
        weights=TensorManifest.of(entries),
        refit_names=refit_names,
        weight_values=values,
        refit_layer_roles=layer_roles,
    )
