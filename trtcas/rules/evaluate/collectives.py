"""Tensor-parallel ranks evaluated together: each rank's walk pauses at a collective, and
the driver combines the ranks' values and resumes them.

The TensorRT Python API has no getter for an ``IDistCollectiveLayer``'s operation, reduce
operation, root or groups (only ``num_ranks``). So the operation is read from what *is*
public, the declared shapes: an output whose dim 0 is ``num_ranks`` times the input's is
an ALL_GATHER, one whose dim 0 is the input's divided by ``num_ranks`` a REDUCE_SCATTER,
an equal shape an ALL_REDUCE. The reduce operation (and BROADCAST, which also keeps the
shape) cannot be seen at all: it defaults to SUM, and a caller whose network reduces
otherwise names it per layer in ``collectives``. That default is a stated assumption, not a
reading of the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from trtcas.rules.evaluate.dtypes import wide
from trtcas.rules.evaluate.errors import EvaluateError
from trtcas.rules.evaluate.walk import CollectiveRequest, evaluate_steps

OPERATIONS = ("ALL_REDUCE", "ALL_GATHER", "REDUCE_SCATTER", "BROADCAST")
_REDUCERS = {"SUM": np.sum, "PROD": np.prod, "MAX": np.max, "MIN": np.min, "AVG": np.mean}


@dataclass(frozen=True)
class CollectiveSpec:
    """What a collective layer does, as given to ``add_dist_collective`` (names of
    ``trt.CollectiveOperation`` / ``trt.ReduceOperation`` members)."""

    operation: str
    reduce: str = "SUM"
    root: int = 0

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise EvaluateError(f"collective operation {self.operation!r} is not simulated; use one of {OPERATIONS}")
        if self.reduce not in _REDUCERS and self.operation in ("ALL_REDUCE", "REDUCE_SCATTER"):
            raise EvaluateError(f"reduce operation {self.reduce!r} is not simulated; use one of {tuple(_REDUCERS)}")


def infer_spec(request: CollectiveRequest) -> CollectiveSpec:
    """The operation the declared shapes imply (reduce SUM: the API does not say)."""
    n = request.num_ranks
    rows_in, rows_out = request.declared_input_shape[:1], request.declared_output_shape[:1]
    if n > 1 and rows_in and rows_out and -1 not in (rows_in[0], rows_out[0]):
        if rows_out[0] == rows_in[0] * n:
            return CollectiveSpec("ALL_GATHER")
        if rows_out[0] * n == rows_in[0]:
            return CollectiveSpec("REDUCE_SCATTER")
    if request.declared_input_shape != request.declared_output_shape and -1 not in request.declared_output_shape:
        raise EvaluateError(f"layer {request.layer_name!r} (DIST_COLLECTIVE): shapes {request.declared_input_shape} "
                            f"-> {request.declared_output_shape} match no collective over {n} ranks; "
                            "name its operation in `collectives`")
    return CollectiveSpec("ALL_REDUCE")


def combine(spec: CollectiveSpec, values: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each rank's result of one collective over ``values`` (rank order)."""
    if spec.operation == "ALL_GATHER":
        return [np.concatenate(values, axis=0)] * len(values)
    if spec.operation == "BROADCAST":
        return [values[spec.root]] * len(values)
    reduced = _REDUCERS[spec.reduce](np.stack([wide(v) for v in values]), axis=0)
    if spec.operation == "ALL_REDUCE":
        return [reduced] * len(values)
    if reduced.shape[0] % len(values):
        raise EvaluateError(f"REDUCE_SCATTER of {reduced.shape[0]} rows over {len(values)} ranks")
    return list(np.split(reduced, len(values), axis=0))


def evaluate_ranks(trt, networks: Sequence, feeds_per_rank, constants_per_rank: Sequence | None = None,
                   collectives: Mapping[str, CollectiveSpec] | None = None) -> list[dict[str, np.ndarray]]:
    """Evaluate one network per rank in lock step; returns each rank's outputs.

    ``feeds_per_rank`` is one feed dict per rank (or one dict that every rank gets);
    ``collectives`` (layer name -> :class:`CollectiveSpec`) overrides what the shapes imply.
    Every rank must reach the same collective layer (by name) at each step, as the ranks of
    a real tensor-parallel engine must, or the evaluation fails naming where they parted.
    """
    world = len(networks)
    feeds = [feeds_per_rank] * world if isinstance(feeds_per_rank, Mapping) else list(feeds_per_rank)
    constants = list(constants_per_rank) if constants_per_rank is not None else [None] * world
    if len(feeds) != world or len(constants) != world:
        raise EvaluateError(f"{world} networks but {len(feeds)} feeds and {len(constants)} constant maps")
    steps = [evaluate_steps(trt, net, feed, const) for net, feed, const in zip(networks, feeds, constants)]
    pending = [_advance(step, None) for step in steps]
    while True:
        done = [isinstance(p, _Done) for p in pending]
        if all(done):
            return [p.outputs for p in pending]
        if any(done):
            finished = [r for r, d in enumerate(done) if d]
            waiting = {pending[r].layer_name for r, d in enumerate(done) if not d}
            raise EvaluateError(f"rank(s) {finished} finished while others wait at collective(s) {sorted(waiting)}")
        names = {p.layer_name for p in pending}
        if len(names) != 1:
            raise EvaluateError(f"ranks reached different collectives at once: {sorted(names)}")
        request = pending[0]
        if request.num_ranks not in (1, world) and not (collectives and request.layer_name in collectives):
            raise EvaluateError(f"layer {request.layer_name!r} (DIST_COLLECTIVE) says {request.num_ranks} ranks; "
                                f"{world} networks were given")
        spec = (collectives or {}).get(request.layer_name) or infer_spec(request)
        combined = combine(spec, [p.value for p in pending])
        pending = [_advance(step, value) for step, value in zip(steps, combined)]


@dataclass(frozen=True)
class _Done:
    outputs: dict


def _advance(step, value):
    try:
        return next(step) if value is None else step.send(value)
    except StopIteration as stop:
        return _Done(stop.value)
