"""Differences between two canonical models, as lines for ``trtcas explain``.
"""

from __future__ import annotations

import difflib
from typing import Mapping

import onnx
from onnx import AttributeProto, TensorProto, helper

from trtcas.cas.digest import Digest


def _attr_text(attr: AttributeProto) -> str:
    if attr.type == AttributeProto.TENSOR:
        t = attr.t
        extra = {e.key: e.value for e in t.metadata_props}
        text = f"{extra.get('dtype', TensorProto.DataType.Name(t.data_type).lower())}{list(t.dims)}"
        if "digest" in extra:
            text += f" {Digest.parse(extra['digest']).short}"
        return text
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list):
        return str([v.decode(errors="replace") if isinstance(v, bytes) else v for v in value])
    return str(value)


def _type_text(info: onnx.ValueInfoProto) -> tuple[str, str, dict]:
    tensor_type = info.type.tensor_type
    shape = "[" + ",".join(d.dim_param if d.HasField("dim_param") else str(d.dim_value) for d in tensor_type.shape.dim) + "]"
    props = {p.key: p.value for p in info.metadata_props}
    dtype = props.pop("dtype", TensorProto.DataType.Name(tensor_type.elem_type))
    return shape, dtype, props


def _diff_value_info(label: str, old: onnx.ValueInfoProto, new: onnx.ValueInfoProto) -> list[str]:
    (o_shape, o_dtype, o_props), (n_shape, n_dtype, n_props) = _type_text(old), _type_text(new)
    lines = []
    if o_shape != n_shape:
        lines.append(f"{label} shape {o_shape} -> {n_shape}")
    if o_dtype != n_dtype:
        lines.append(f"{label} dtype {o_dtype} -> {n_dtype}")
    for key in sorted(set(o_props) | set(n_props)):
        if o_props.get(key) != n_props.get(key):
            lines.append(f"{label} {key} {o_props.get(key, '(unset)')} -> {n_props.get(key, '(unset)')}")
    return lines


def _named(model: onnx.ModelProto, names: Mapping[str, str] | None) -> list[onnx.NodeProto]:
    """The model's nodes, renamed ``'relu1' (L5)`` where the layer's own name is known."""
    nodes = []
    for node in model.graph.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        if names and names.get(node.name):
            copy.name = f"{names[node.name]!r} ({node.name})"
        nodes.append(copy)
    return nodes


def _producer_map(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> dict:
    where = {info.name: f"input {i}" for i, info in enumerate(model.graph.input)}
    for node in nodes:
        for i, name in enumerate(node.output):
            where[name] = f"{node.name}:{i}"
    return where


def _align(old_nodes, new_nodes) -> list[tuple[int | None, int | None]]:
    """Pairs of node indices matched by op-type sequence, so one inserted layer shows as
    one added layer, not as every later layer changed."""
    matcher = difflib.SequenceMatcher(a=[n.op_type for n in old_nodes], b=[n.op_type for n in new_nodes], autojunk=False)
    pairs = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            pairs.extend(zip(range(i1, i2), range(j1, j2)))
        else:
            pairs.extend((i, None) for i in range(i1, i2))
            pairs.extend((None, j) for j in range(j1, j2))
    return pairs


def diff_canonical(old: onnx.ModelProto, new: onnx.ModelProto,
                   old_names: Mapping[str, str] | None = None, new_names: Mapping[str, str] | None = None) -> list[str]:
    """Human-readable differences between two canonical models: layers added, removed or
    changed (op type, attribute, input edge, output shape/dtype), network inputs and outputs,
    network flags and profiles. Empty when the models are equal. ``old_names``/``new_names``
    map canonical layer ids (``L5``) to the layers' own names (ONNX node names), which then
    name the layers in the lines."""
    lines: list[str] = []
    old_nodes, new_nodes = _named(old, old_names), _named(new, new_names)
    old_meta = {p.key: p.value for p in old.metadata_props}
    new_meta = {p.key: p.value for p in new.metadata_props}
    for key in sorted(set(old_meta) | set(new_meta)):
        if old_meta.get(key) != new_meta.get(key):
            lines.append(f"{key}: {old_meta.get(key, '(none)')} -> {new_meta.get(key, '(none)')}")

    for label, old_list, new_list in (("input", old.graph.input, new.graph.input), ("output", old.graph.output, new.graph.output)):
        for i in range(max(len(old_list), len(new_list))):
            if i >= len(old_list):
                lines.append(f"{label} {i} added: {' '.join(_type_text(new_list[i])[:2])}")
            elif i >= len(new_list):
                lines.append(f"{label} {i} removed: {' '.join(_type_text(old_list[i])[:2])}")
            else:
                lines.extend(_diff_value_info(f"{label} {i}", old_list[i], new_list[i]))

    pairs = _align(old_nodes, new_nodes)
    old_to_new = {old_nodes[i].name: new_nodes[j].name for i, j in pairs if i is not None and j is not None}
    old_where, new_where = _producer_map(old, old_nodes), _producer_map(new, new_nodes)
    old_infos = {v.name: v for v in list(old.graph.value_info) + list(old.graph.output)}
    new_infos = {v.name: v for v in list(new.graph.value_info) + list(new.graph.output)}

    def translate(where: str) -> str:
        layer, _, out = where.rpartition(":")
        return f"{old_to_new[layer]}:{out}" if layer in old_to_new else where

    for i, j in pairs:
        if j is None:
            lines.append(f"layer {old_nodes[i].name} removed: {old_nodes[i].op_type}")
            continue
        if i is None:
            lines.append(f"layer {new_nodes[j].name} added: {new_nodes[j].op_type}")
            continue
        o, n = old_nodes[i], new_nodes[j]
        label = f"layer {n.name} {n.op_type}" if o.name == n.name else f"layer {o.name}->{n.name} {n.op_type}"
        if o.op_type != n.op_type:
            lines.append(f"{label}: op type {o.op_type} -> {n.op_type}")
        o_attrs = {a.name: _attr_text(a) for a in o.attribute}
        n_attrs = {a.name: _attr_text(a) for a in n.attribute}
        for key in sorted(set(o_attrs) | set(n_attrs)):
            if o_attrs.get(key) != n_attrs.get(key):
                lines.append(f"{label}: attribute {key} {o_attrs.get(key, '(unset)')} -> {n_attrs.get(key, '(unset)')}")
        o_in = [translate(old_where.get(t, "none")) if t else "none" for t in o.input]
        n_in = [new_where.get(t, "none") if t else "none" for t in n.input]
        for slot in range(max(len(o_in), len(n_in))):
            a = o_in[slot] if slot < len(o_in) else "(none)"
            b = n_in[slot] if slot < len(n_in) else "(none)"
            if a != b:
                lines.append(f"{label}: input {slot} from {a} -> from {b}")
        for k in range(min(len(o.output), len(n.output))):
            if o.output[k] in old_infos and n.output[k] in new_infos:
                lines.extend(_diff_value_info(f"{label}: output {k}", old_infos[o.output[k]], new_infos[n.output[k]]))
    return lines
