"""The canonical order of layers: depth-first from the outputs, by structure alone, so node
order among independent nodes and every name are invisible to the digest.
"""

from __future__ import annotations

import hashlib
import heapq

from trtcas.rules.canonical.model import (
    Layer,
    Network,
    OwnerRef,
    Tensor,
    TensorRef,
    WeightRef,
)


def _h(*parts) -> bytes:
    return hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()


def _sig_value(value):
    if isinstance(value, WeightRef):
        return ("weights", value.dtype, value.shape, value.refittable)
    if isinstance(value, TensorRef):
        return ("tensor",)
    if isinstance(value, OwnerRef):
        return ("owner", value.kind)
    return value


def _local_signature(net: Network, layer: Layer) -> bytes:
    attrs = tuple((k, _sig_value(v)) for k, v in layer.attrs)
    outs = tuple(_tensor_sig(net.tensors[k]) for k in layer.outputs)
    return _h(layer.op, attrs, outs)


def _tensor_sig(tensor: Tensor):
    return (tensor.dtype, tensor.shape, tuple(n is not None for n in tensor.dim_names), tensor.props)


def _producers(net: Network) -> dict:
    producers = {key: ("input", pos) for pos, key in enumerate(net.inputs)}
    for position, layer in enumerate(net.layers):
        for out_idx, key in enumerate(layer.outputs):
            producers[key] = ("layer", position, out_idx)
    return producers


def _dependency_order(net: Network, producers: dict) -> list[int]:
    """Any topological order (positions into ``net.layers``) over forward edges; used only
    to compute hashes, so which valid order it is does not matter. A cycle that is not a
    recurrence back edge is broken at the lowest insertion index (deterministic)."""
    n = len(net.layers)
    deps = [set() for _ in range(n)]
    users = [set() for _ in range(n)]
    for pos, layer in enumerate(net.layers):
        for slot, key in enumerate(layer.inputs):
            prod = producers.get(key) if key is not None else None
            if prod and prod[0] == "layer" and slot not in layer.back_edges and prod[1] != pos:
                deps[pos].add(prod[1])
                users[prod[1]].add(pos)
    remaining = [len(d) for d in deps]
    ready = [p for p in range(n) if remaining[p] == 0]
    heapq.heapify(ready)
    order, done = [], [False] * n
    while len(order) < n:
        if not ready:
            stuck = min(p for p in range(n) if not done[p])
            remaining[stuck] = 0
            ready.append(stuck)
        pos = heapq.heappop(ready)
        if done[pos]:
            continue
        done[pos] = True
        order.append(pos)
        for user in users[pos]:
            remaining[user] -= 1
            if remaining[user] == 0 and not done[user]:
                heapq.heappush(ready, user)
    return order


def _structural_keys(net: Network, producers: dict) -> list:
    """A name- and order-free key per layer: a bottom-up hash (local signature and, per
    input slot, the producer's hash and output index or the network input position), then
    a top-down hash over it (per output, the multiset of consumers' hashes and slots and
    any network-output positions), then the weight digests, then the insertion index as
    the last resort for layers that are interchangeable in structure and weights."""
    order = _dependency_order(net, producers)
    local = [_local_signature(net, layer) for layer in net.layers]
    up: list = [None] * len(net.layers)
    for pos in order:
        layer = net.layers[pos]
        parts = []
        for slot, key in enumerate(layer.inputs):
            prod = producers.get(key) if key is not None else None
            if prod is None:
                parts.append(("none",) if key is None else ("dangling",))
            elif prod[0] == "input":
                parts.append(prod)
            elif slot in layer.back_edges or up[prod[1]] is None:
                parts.append(("back", local[prod[1]], prod[2]))
            else:
                parts.append((up[prod[1]], prod[2]))
        up[pos] = _h(local[pos], tuple(parts))

    consumers = _consumers(net)
    output_positions: dict = {}
    for out_pos, key in enumerate(net.outputs):
        output_positions.setdefault(key, []).append(out_pos)
    down: list = [None] * len(net.layers)
    for pos in reversed(order):
        per_output = []
        for key in net.layers[pos].outputs:
            uses = sorted(((down[c] if down[c] is not None else up[c]), slot) for c, slot in consumers.get(key, []))
            per_output.append((tuple(uses), tuple(output_positions.get(key, ()))))
        down[pos] = _h(up[pos], tuple(per_output))
    return [
        (down[p], tuple(v.digest.hex for _, v in layer.attrs if isinstance(v, WeightRef)), p)
        for p, layer in enumerate(net.layers)
    ]


def _consumers(net: Network) -> dict:
    consumers: dict = {}
    for pos, layer in enumerate(net.layers):
        for slot, key in enumerate(layer.inputs):
            if key is not None:
                consumers.setdefault(key, []).append((pos, slot))
    return consumers


def canonical_order(net: Network) -> list[int]:
    """Layer positions in canonical order: a depth-first post-order from the network
    outputs (by output position), visiting each layer's inputs by slot.

    That order depends only on structure, never on names or insertion order, and a local
    change (one attribute) leaves it unchanged, so two versions of a network diff layer by
    layer. Layers no output depends on (assertions, a loop's trip limit, a conditional's
    condition, dead layers) are then taken as further roots, the one with the smallest
    structural key (``_structural_keys``) first, each followed depth-first the same way.
    """
    producers = _producers(net)
    n = len(net.layers)
    result: list[int] = []
    state = [0] * n  # 0 unvisited, 1 on the DFS stack, 2 emitted

    def producer_layer(key):
        prod = producers.get(key) if key is not None else None
        return prod[1] if prod and prod[0] == "layer" else None

    def visit(root: int) -> None:
        stack = [(root, 0)]
        state[root] = 1
        while stack:
            pos, slot = stack[-1]
            inputs = net.layers[pos].inputs
            if slot < len(inputs):
                stack[-1] = (pos, slot + 1)
                if slot in net.layers[pos].back_edges:
                    continue  # the loop body is reached from its own outputs or as a later root
                prod = producer_layer(inputs[slot])
                if prod is not None and state[prod] == 0:  # on-stack producers close a loop: skip
                    state[prod] = 1
                    stack.append((prod, 0))
                continue
            stack.pop()
            state[pos] = 2
            result.append(pos)

    for key in net.outputs:
        prod = producer_layer(key)
        if prod is not None and state[prod] == 0:
            visit(prod)
    if len(result) < n:
        keys = _structural_keys(net, producers)
        consumers = _consumers(net)
        while len(result) < n:
            remaining = [p for p in range(n) if state[p] == 0]
            sinks = [
                p for p in remaining
                if all(state[c] != 0 for key in net.layers[p].outputs for c, _ in consumers.get(key, []))
            ]
            visit(min(sinks or remaining, key=keys.__getitem__))
    return result
