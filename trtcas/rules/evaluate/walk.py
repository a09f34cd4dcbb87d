"""Walking a network layer by layer: order, feeds, dispatch, and the pause at collectives.

One rank's evaluation is a generator (:func:`evaluate_steps`): it computes layers in
dependency order and, at a distributed collective, yields a :class:`CollectiveRequest`
and waits to be sent the collective's result. A single network answers its own requests
(a group of one rank); :mod:`.collectives` drives several ranks in lock step. Keeping the
pause inside the walk, rather than evaluating ranks in threads, makes a deadlock (ranks
that disagree on their collectives) an error with a message instead of a hang.

Only what the network's outputs need is computed, so an unsupported layer on a dead
branch does not stop an evaluation whose outputs never see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Mapping

import numpy as np

from trtcas.rules.evaluate.dtypes import numpy_dtype, to_dtype
from trtcas.rules.evaluate.errors import EvaluateError, unsupported

# Layer types whose semantics live in a loop or conditional subgraph: not evaluated.
_CONTROL_FLOW = frozenset({"TRIP_LIMIT", "RECURRENCE", "ITERATOR", "LOOP_OUTPUT", "CONDITION",
                           "CONDITIONAL_INPUT", "CONDITIONAL_OUTPUT"})


@dataclass(frozen=True)
class CollectiveRequest:
    """What a rank yields at an ``IDistCollectiveLayer``: its own input, and the facts the
    public API reports (``num_ranks``, the declared input and output shapes). The collective
    and reduce operation have no getters in the TensorRT Python API, so the driver decides
    them (see :mod:`.collectives`)."""

    layer_name: str
    value: np.ndarray
    num_ranks: int
    declared_input_shape: tuple[int, ...]
    declared_output_shape: tuple[int, ...]
    output_dtype: Any  # trt.DataType


@dataclass(frozen=True)
class Call:
    """One layer's evaluation: the layer (already cast to its own class), its input values
    by slot (None for an unset optional input), the TensorRT dtypes of its outputs, and
    how to read any tensor's value (for attributes that are tensors, e.g. an attention mask)."""

    trt: Any
    layer: Any
    inputs: tuple
    output_dtypes: tuple
    constants: Mapping[str, np.ndarray]
    value_of: Callable[[Any], np.ndarray] = field(repr=False)

    def input(self, slot: int, required: bool = True) -> np.ndarray | None:
        value = self.inputs[slot] if slot < len(self.inputs) else None
        if value is None and required:
            raise EvaluateError(f"layer {self.layer.name!r} ({self.layer.type.name}): input {slot} is not set")
        return value

    def fail(self, what: str) -> EvaluateError:
        return unsupported(self.layer, what)


LayerFn = Callable[[Call], list]


def _registry(trt) -> dict[str, LayerFn]:
    from trtcas.rules.evaluate import layers_basic, layers_llm, layers_nn, layers_shape

    table: dict[str, LayerFn] = {}
    for module in (layers_basic, layers_shape, layers_nn, layers_llm):
        table.update(module.LAYERS)
    return table


def _layer_order(network) -> list:
    """Indices of the layers the outputs depend on, producers first."""
    producer = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = i
    needed: set[int] = set()
    order: list[int] = []
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    stack = [(producer[name], False) for name in reversed(outputs) if name in producer]
    while stack:  # iterative post-order DFS: deep networks exceed Python's recursion limit
        index, expanded = stack.pop()
        if expanded:
            order.append(index)
            continue
        if index in needed:
            continue
        needed.add(index)
        stack.append((index, True))
        layer = network.get_layer(index)
        for tensor in _layer_inputs(layer):
            if tensor.name in producer and producer[tensor.name] not in needed:
                stack.append((producer[tensor.name], False))
    return order


def _layer_inputs(layer) -> list:
    return [t for t in (layer.get_input(j) for j in range(layer.num_inputs)) if t is not None]


def _check_feed(tensor, value) -> np.ndarray:
    declared = tuple(tensor.shape)
    array = np.asarray(value)
    if len(declared) != array.ndim or any(d not in (-1, a) for d, a in zip(declared, array.shape)):
        raise EvaluateError(f"feed for input {tensor.name!r} has shape {array.shape}, the network declares {declared}")
    return to_dtype(array, tensor.dtype)


def evaluate_steps(trt, network, feeds: Mapping[str, np.ndarray],
                   constants: Mapping[str, np.ndarray] | None = None
                   ) -> Generator[CollectiveRequest, np.ndarray, dict[str, np.ndarray]]:
    """Evaluate ``network`` on ``feeds``; yields at each collective and returns the outputs
    by name. ``constants`` (layer name -> array) supplies constant layers whose weights the
    API cannot hand out as numpy (bf16, fp8, int4, fp4)."""
    from trtcas.rules.canonical import layer_classes

    classes = layer_classes(trt)
    table = _registry(trt)
    env: dict[str, np.ndarray] = {}
    names = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    missing = sorted(set(names) - set(feeds))
    if missing:
        raise EvaluateError(f"no feed for network input(s) {', '.join(missing)}")
    for name, tensor in names.items():
        env[name] = _check_feed(tensor, feeds[name])

    def value_of(tensor) -> np.ndarray:
        if tensor is None:
            return None
        try:
            return env[tensor.name]
        except KeyError:
            raise EvaluateError(f"tensor {tensor.name!r} has no value: no layer outside a loop or conditional body produces it (control flow is not supported)") from None

    for index in _layer_order(network):
        layer = network.get_layer(index)
        kind = layer.type.name
        if kind in _CONTROL_FLOW:
            raise unsupported(layer, "control flow (loops and conditionals)")
        if kind.startswith("PLUGIN"):
            raise unsupported(layer, "a plugin layer (its computation is not in the network)")
        if kind != "DIST_COLLECTIVE" and kind not in table:
            raise unsupported(layer, f"layer type {kind}")
        inputs = tuple(value_of(layer.get_input(j)) for j in range(layer.num_inputs))
        out_dtypes = tuple(layer.get_output(j).dtype for j in range(layer.num_outputs))
        if kind == "DIST_COLLECTIVE":
            layer.__class__ = classes[layer.type]
            request = CollectiveRequest(layer.name, inputs[0], int(layer.num_ranks),
                                        tuple(layer.get_input(0).shape), tuple(layer.get_output(0).shape),
                                        out_dtypes[0])
            outputs = [(yield request)]
        else:
            layer.__class__ = classes[layer.type]
            call = Call(trt, layer, inputs, out_dtypes, constants or {}, value_of)
            outputs = table[kind](call)
        if len(outputs) != layer.num_outputs:
            raise EvaluateError(f"layer {layer.name!r} ({kind}): evaluator produced {len(outputs)} outputs, "
                                f"the layer has {layer.num_outputs}")
        for j, value in enumerate(outputs):
            env[layer.get_output(j).name] = to_dtype(value, out_dtypes[j])
    return {network.get_output(i).name: env[network.get_output(i).name] for i in range(network.num_outputs)}


def single_rank_collective(request: CollectiveRequest) -> np.ndarray:
    """A collective in a network evaluated alone: a group of one rank, where every
    collective returns its input. A layer that says it spans more ranks needs
    :func:`~trtcas.rules.evaluate.collectives.evaluate_ranks`."""
    if request.num_ranks > 1:
        raise EvaluateError(f"layer {request.layer_name!r} (DIST_COLLECTIVE) spans {request.num_ranks} ranks; "
                            "evaluate the ranks together with evaluate_ranks()")
    return request.value


def evaluate_network(trt, network, feeds: Mapping[str, np.ndarray],
                     constants: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Evaluate one network on ``feeds`` (input name -> array; dims declared -1 take the
    feed's). Returns output name -> array in the dtype TensorRT reports for each output."""
    steps = evaluate_steps(trt, network, feeds, constants)
    try:
        request = next(steps)
        while True:
            request = steps.send(single_rank_collective(request))
    except StopIteration as done:
        return done.value


def numpy_dtype_of(tensor) -> np.dtype:
    """The numpy dtype of a network tensor (for callers building feeds)."""
    return numpy_dtype(tensor.dtype)
