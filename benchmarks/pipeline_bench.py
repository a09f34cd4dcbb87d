"""The ONNX -> network -> engine pipeline, real TensorRT-RTX builds on the CPU. Prints JSON.

    python benchmarks/pipeline_bench.py [--repeat 3] [--canon-repeat 10] [--dir DIR]

For each example model (``examples/make_models.py``: the conv block and the transformer
block, one target each), ``--repeat`` times in a fresh project and cache dir, this sequence
of builds, each from the state the previous one left:

- ``cold``: empty cache; every action runs.
- ``noop``: nothing changed; every action is a local hit.
- ``weight_only``: the same structure with other weight values (``weights_seed`` only). On
  the CPU the engine embeds its weights (it cannot be refittable here), so the weights
  manifest is keyed into the engine and the engine rebuilds.
- ``cosmetic``: the last model with every internal node and tensor renamed, doc strings,
  producer and graph name changed and the initializers reversed. The network action reruns
  (its input file changed) but the canonical structure and weights are the same, so the
  engine is a hit.
- ``structural``: one attribute changed (the conv block's Gemm ``alpha``, the transformer's
  first LayerNormalization ``epsilon``); both actions rebuild.
- ``noop_aged_first`` / ``noop_aged``: two more no-op builds after a 2.1 s pause. The
  no-ops above run while every file is younger than the stat cache's 2 s granularity, so
  they re-hash what they verify; the first aged build records digests in the stat cache and
  the second is the steady state a user sees when rebuilding minutes later. A build that
  raises is reported under ``surprises`` (and as ``error``), not fatal.

Reported per model and step: the ``trtcas.build()`` seconds (median), and per action its
status (checked identical across runs) and median seconds; the ratios noop/cold and
cosmetic/cold. ``canonicalize`` times ``trtcas.rules.canonical.canonicalize_network`` alone
on the transformer block's parsed network, next to the TensorRT ONNX parse of the same file
(the same-run baseline). One unmeasured build first loads TensorRT, so "cold" means a cold
cache, not a cold process; ``process_first_build_s`` is that first build.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import trtcas  # noqa: E402

import make_models  # noqa: E402
from _harness import print_json  # noqa: E402

TARGET = """
[target]
name = "{name}"
[model]
onnx = "model.onnx"
[engine]
targets = ["sm86"]
"""

MODELS: dict[str, Callable[..., onnx.ModelProto]] = {
    "conv_block": make_models.make_conv_block,
    "transformer_block": make_models.make_transformer_block,
}
STEPS = ("cold", "noop", "weight_only", "cosmetic", "structural", "noop_aged_first", "noop_aged")
AGE_S = 2.1  # the stat cache records a digest only for files older than 2 s
EXPECTED = {  # what each step should do on a CPU-only machine (embedded weights)
    "cold": {"network[rank0]": "built", "engine[rank0]": "built"},
    "noop": {"network[rank0]": "cached", "engine[rank0]": "cached"},
    "weight_only": {"network[rank0]": "built", "engine[rank0]": "built"},
    "cosmetic": {"network[rank0]": "built", "engine[rank0]": "cached"},
    "structural": {"network[rank0]": "built", "engine[rank0]": "built"},
    "noop_aged_first": {"network[rank0]": "cached", "engine[rank0]": "cached"},
    "noop_aged": {"network[rank0]": "cached", "engine[rank0]": "cached"},
}


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def renamed(model: onnx.ModelProto) -> onnx.ModelProto:
    """Cosmetic variant: new names for every node and internal tensor (graph inputs and
    outputs keep theirs: they are the engine's bindings), other doc strings, producer and
    graph name, initializers in reverse order."""
    m = copy_model(model)
    keep = {v.name for v in list(m.graph.input) + list(m.graph.output)}
    names: dict[str, str] = {}

    def new(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"tensor_{len(names):03d}_{abs(hash(name)) % 10**6}")

    for i, node in enumerate(m.graph.node):
        node.name = f"op{i}_{node.op_type.lower()}"
        node.doc_string = "cosmetic edit"
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
    for init in m.graph.initializer:
        init.name = new(init.name)
    for info in m.graph.value_info:
        info.name = new(info.name)
    initializers = list(m.graph.initializer)[::-1]
    del m.graph.initializer[:]
    m.graph.initializer.extend(initializers)
    m.producer_name, m.producer_version, m.doc_string, m.graph.name = "bench-exporter", "0.0", "renamed", "renamed_graph"
    return m


def with_attribute(model: onnx.ModelProto, op_type: str, attr: str, value: float) -> onnx.ModelProto:
    """The first ``op_type`` node with ``attr`` set to ``value`` (added if absent)."""
    m = copy_model(model)
    node = next(n for n in m.graph.node if n.op_type == op_type)
    kept = [a for a in node.attribute if a.name != attr]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(attr, value)])
    return m


STRUCTURAL = {
    "conv_block": ("Gemm", "alpha", 0.5),
    "transformer_block": ("LayerNormalization", "epsilon", 1e-3),
}


def step_models(name: str) -> dict[str, onnx.ModelProto]:
    make = MODELS[name]
    base, reweighted = make(seed=0), make(seed=0, weights_seed=7)
    cosmetic = renamed(reweighted)
    op, attr, value = STRUCTURAL[name]
    return {  # steps not listed (the no-ops) leave model.onnx as it is
        "cold": base, "weight_only": reweighted, "cosmetic": cosmetic,
        "structural": with_attribute(cosmetic, op, attr, value),
    }


class BuildError(Exception):
    pass


def build(root: Path, cache: Path) -> trtcas.api.BuildResult:
    try:
        result = trtcas.build(root / "trtcas.toml", cache_dir=cache)
    except Exception as exc:  # reported, not fatal: the benchmark is how such bugs surface
        raise BuildError(f"{type(exc).__name__}: {exc}") from exc
    if not result.ok:
        raise BuildError(f"build failed: {result.error}")
    return result


def bench_model(work: Path, name: str, repeat: int) -> dict[str, Any]:
    models = step_models(name)
    runs: dict[str, list[trtcas.api.BuildResult]] = {step: [] for step in STEPS}
    errors: dict[str, list[str]] = {}
    for run in range(repeat):
        root = work / f"{name}-{run}"
        root.mkdir(parents=True)
        (root / "trtcas.toml").write_text(TARGET.format(name=name))
        for step in STEPS:
            if step in models:
                onnx.save(models[step], str(root / "model.onnx"))
            if step == "noop_aged_first":
                time.sleep(AGE_S)
            try:
                runs[step].append(build(root, root / "cache"))
            except BuildError as exc:
                errors.setdefault(step, []).append(str(exc))
        shutil.rmtree(root)

    out: dict[str, Any] = {}
    surprises = []
    for step in STEPS:
        results = runs[step]
        if step in errors:
            surprises.append(f"{step}: {len(errors[step])} of {repeat} builds raised: {errors[step][0]}")
        if not results:
            out[step] = {"error": errors[step][0]}
            continue
        statuses = [{r.id: r.status for r in res.actions} for res in results]
        if any(s != statuses[0] for s in statuses):
            surprises.append(f"{step}: statuses differ between runs: {statuses}")
        if statuses[0] != EXPECTED[step]:
            surprises.append(f"{step}: expected {EXPECTED[step]}, got {statuses[0]}")
        out[step] = {
            "build_s": round(statistics.median(r.seconds for r in results), 4),
            "runs_s": [round(r.seconds, 4) for r in results],
            "actions": {
                a.id: {"status": a.status, "seconds": round(statistics.median(res.action(a.id).seconds for res in results), 4)}
                for a in results[0].actions
            },
        }
    cold = out["cold"]["build_s"]
    out["ratio_noop_vs_cold"] = round(out["noop"]["build_s"] / cold, 4)
    out["ratio_cosmetic_vs_cold"] = round(out["cosmetic"]["build_s"] / cold, 4)
    if "build_s" in out["noop_aged"]:
        out["ratio_noop_aged_vs_cold"] = round(out["noop_aged"]["build_s"] / cold, 4)
    last = runs["structural"][0]
    out["structure_digest_changed"] = {
        "weight_only": runs["weight_only"][0].action("network[rank0]").outputs["structure"]
        != runs["cold"][0].action("network[rank0]").outputs["structure"],
        "cosmetic": runs["cosmetic"][0].action("network[rank0]").outputs["structure"]
        != runs["weight_only"][0].action("network[rank0]").outputs["structure"],
        "structural": last.action("network[rank0]").outputs["structure"]
        != runs["cosmetic"][0].action("network[rank0]").outputs["structure"],
    }
    out["surprises"] = surprises
    return out


def bench_canonicalize(work: Path, repeat: int) -> dict[str, Any]:
    from trtcas.rules.canonical import canonicalize_network
    from trtcas.rules.onnx_source.parse import parse_onnx
    from trtcas.rules.trt.toolchain import load_toolchain

    backend = load_toolchain("auto").backend
    model = make_models.make_transformer_block(seed=0)
    path = work / "transformer_block.onnx"
    onnx.save(model, str(path))

    parse_times, canon_times, load_times = [], [], []
    canon = None
    for _ in range(repeat):
        start = time.perf_counter()
        parsed = parse_onnx(backend, path)
        parse_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        source = onnx.load(str(path))
        load_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        canon = canonicalize_network(backend.trt, parsed.network, [], onnx_model=source)
        canon_times.append(time.perf_counter() - start)
        del parsed
    canon_s, parse_s = statistics.median(canon_times), statistics.median(parse_times)
    return {
        "model": "transformer_block",
        "layers": len(canon.model.graph.node) if canon else None,
        "weights": len(canon.weights.entries) if canon else None,
        "onnx_bytes": path.stat().st_size,
        "repeat": repeat,
        "canonicalize_network_ms": round(canon_s * 1e3, 3),
        "baseline_trt_parse_onnx_ms": round(parse_s * 1e3, 3),
        "onnx_load_ms": round(statistics.median(load_times) * 1e3, 3),
        "ratio_canonicalize_vs_parse": round(canon_s / parse_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--canon-repeat", type=int, default=10)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--dir", default=None, help="scratch dir on the filesystem to measure")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trtcas-pipeline-bench-", dir=args.dir))
    try:
        warm = work / "warm"
        warm.mkdir()
        (warm / "trtcas.toml").write_text(TARGET.format(name="warm"))
        onnx.save(make_models.make_conv_block(seed=1), str(warm / "model.onnx"))
        first = build(warm, warm / "cache")
        result = {
            "benchmark": "pipeline",
            "repeat": args.repeat,
            "statistic": "median",
            "notes": list(first.notes),
            "process_first_build_s": round(first.seconds, 3),
            "models": {name: bench_model(work, name, args.repeat) for name in args.models.split(",") if name},
            "canonicalize": bench_canonicalize(work, args.canon_repeat),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_json(result)


if __name__ == "__main__":
    main()
