"""Evaluate the ONNX backend node tests through TensorRT-RTX's parser and trtcas's numpy
reference evaluator, and count how many agree with ONNX's expected outputs at 1e-4.

    python benchmarks/evaluate_onnx_backend.py [--limit N] [--filter SUBSTRING] [--verbose]

Prints JSON: {cases, parsed, evaluated, agree_1e-4, disagree, failed_by_reason, ...}.
The cases are those of ``onnx.backend.test.case.node`` (the models and expected outputs the
onnx wheel generates; the wheel no longer ships them as files). A case fails to *parse*
when TensorRT cannot import the model (unsupported op, sequence types, ...): that is a
TensorRT limit, not the evaluator's. ``unsupported`` counts networks with a layer type or
attribute the evaluator refuses; ``disagree`` are evaluated networks whose outputs differ:
the figure the evaluator answers for.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

RTOL = ATOL = 1e-4


@dataclass(frozen=True)
class CaseResult:
    name: str
    status: str  # parse_failed | unsupported | error | disagree | agree | no_inputs
    reason: str = ""
    layer_types: tuple[str, ...] = field(default=())


def node_cases(name_filter: str | None = None):
    """(name, model, inputs, outputs) of ONNX's node test cases, generated in memory."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    for case in cases:
        if name_filter and name_filter not in case.name:
            continue
        if not case.data_sets:
            continue
        inputs, outputs = case.data_sets[0]
        yield case.name, case.model, [_array(v) for v in inputs], [_array(v) for v in outputs]


def _array(value):
    """Test data as numpy (exotic dtypes come as TensorProto; ml_dtypes holds them)."""
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else value


def _layer_types(network) -> tuple[str, ...]:
    return tuple(sorted({network.get_layer(i).type.name for i in range(network.num_layers)}))


def _ulp(dtype) -> float:
    """Machine epsilon of a float dtype narrower than float32 (0 otherwise)."""
    import ml_dtypes

    if dtype.itemsize >= 4 or "float" not in dtype.name:
        return 0.0
    return float(ml_dtypes.finfo(dtype).eps)


def _compare(name: str, got: np.ndarray, want) -> str | None:
    want = np.asarray(want)
    got = np.asarray(got)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape} != expected {want.shape}"
    if want.dtype.kind in "biuU" or got.dtype.kind in "bi" and want.dtype.kind in "bi":
        if not np.array_equal(got.astype(np.int64) if got.dtype.kind != "U" else got, want.astype(np.int64)):
            return f"{name}: values differ"
        return None
    g, w = got.astype(np.float64), want.astype(np.float64)
    # a half/bf16/fp8 output cannot agree closer than its own rounding: one unit in the last place
    ulp = _ulp(got.dtype)
    if not np.allclose(g, w, rtol=max(RTOL, ulp), atol=max(ATOL, ulp), equal_nan=True):
        return f"{name}: max abs error {np.nanmax(np.abs(g - w)):.3g}"
    return None


def evaluate_case(trt, logger, name, model, inputs, outputs) -> CaseResult:
    from trtcas.rules.evaluate import EvaluateError, evaluate_network

    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    try:
        ok = parser.parse(model.SerializeToString())
    except Exception as exc:  # noqa: BLE001
        return CaseResult(name, "parse_failed", type(exc).__name__)
    if not ok or network.num_outputs == 0:
        reason = parser.get_error(0).desc().splitlines()[0][:120] if parser.num_errors else "no outputs"
        return CaseResult(name, "parse_failed", reason)
    types = _layer_types(network)
    graph_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    by_name = dict(zip(graph_inputs, inputs))
    feeds = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name not in by_name:
            return CaseResult(name, "error", f"no data for network input {tensor.name}", types)
        feeds[tensor.name] = np.asarray(by_name[tensor.name])
    try:
        with np.errstate(all="ignore"):
            got = evaluate_network(trt, network, feeds)
    except EvaluateError as exc:
        return CaseResult(name, "unsupported", str(exc), types)
    except Exception as exc:  # noqa: BLE001 - a crash is counted, and named
        return CaseResult(name, "error", f"{type(exc).__name__}: {exc}"[:200], types)
    expected = dict(zip([o.name for o in model.graph.output], outputs))
    problems = []
    for out_name, value in got.items():
        if out_name not in expected:
            problems.append(f"{out_name}: not an ONNX output")
            continue
        problem = _compare(out_name, value, expected[out_name])
        if problem:
            problems.append(problem)
    if problems:
        return CaseResult(name, "disagree", "; ".join(problems)[:200], types)
    return CaseResult(name, "agree", "", types)


def run(limit: int | None = None, name_filter: str | None = None) -> tuple[dict, list[CaseResult]]:
    import tensorrt_rtx as trt

    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    results = []
    start = time.perf_counter()
    for k, (name, model, inputs, outputs) in enumerate(node_cases(name_filter)):
        if limit is not None and k >= limit:
            break
        results.append(evaluate_case(trt, logger, name, model, inputs, outputs))
    counts = collections.Counter(r.status for r in results)
    reasons = collections.Counter()
    for r in results:
        if r.status == "unsupported":
            reasons["unsupported: " + r.reason.split("): ", 1)[-1].split(" is not supported")[0]] += 1
        elif r.status in ("error", "parse_failed"):
            reasons[f"{r.status}"] += 1
    summary = {
        "cases": len(results),
        "parsed": len(results) - counts["parse_failed"],
        "evaluated": counts["agree"] + counts["disagree"],
        "agree_1e-4": counts["agree"],
        "disagree": counts["disagree"],
        "unsupported": counts["unsupported"],
        "errors": counts["error"],
        "failed_by_reason": dict(reasons.most_common()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return summary, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--filter")
    parser.add_argument("--verbose", action="store_true", help="also list every case that did not agree")
    args = parser.parse_args()
    summary, results = run(args.limit, args.filter)
    if args.verbose:
        summary["not_agreeing"] = {r.name: f"{r.status}: {r.reason}" for r in results
                                   if r.status not in ("agree", "parse_failed")}
    json.dump(summary, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
