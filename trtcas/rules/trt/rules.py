"""The three TensorRT rules: network, engine, refit.

    trt.network  a network source            -> structure, canonical, weights manifest, io, refit names
    trt.engine   structure + io (+ weights)  -> plan, names          (builds from the source, unkeyed)
    trt.refit    plan + names + weights      -> refitted plan

Where the network comes from is the source named by ``params.source`` (``trt.sources``): an
ONNX file (``"onnx"``, input ``onnx``) or a TensorRT-LLM checkpoint rank (``"trtllm"``, inputs
``source_weights``, a manifest of the rank's tensors, and ``source_config``).

Why the split keys soundly:
- ``structure`` is the canonical ONNX without weight values; its digest is the structural
  digest, blind to renames, doc strings, node order and initializer order.
- ``io`` holds the names of the network's inputs and outputs: they are the engine's binding
  names, so renaming one must (and does) change the engine key; internal names do not.
- The engine embeds weights when the backend cannot build refittable engines here (any
  CPU-only build) or ``refit = "no"``; then the weights manifest is a keyed input. When it
  is refittable, only weights that shape the plan (non-float constants) are keyed and the
  rest flow to ``trt.refit``, which must replace every refittable weight.
- The engine's ``names`` output records the TensorRT weight names *it* was built with, so
  a cached engine from a network whose layers were since renamed is still refitted by the
  names it actually has.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from trtcas.cas.digest import Digest
from trtcas.cas.manifest import TensorManifest
from trtcas.errors import TrtcasError
from trtcas.graph.explain import Change
from trtcas.graph.placement import flavour_resource, sm_resource
from trtcas.graph.rule import Rule
from trtcas.rules.formats.tensors import load_tensors
from trtcas.rules.trt.monitor import monitoring
from trtcas.rules.trt.sharing import rank_sharing_lines
from trtcas.rules.trt.sources import load_network

FLOAT_DTYPES = {"float32", "float16", "bfloat16", "FLOAT", "HALF", "BF16", "F32", "F16", "float64", "FP8", "float8_e4m3fn"}


def _flavour_fields(params: Mapping[str, Any]) -> tuple[str, ...]:
    return (f"{params['flavour']}_version",)


def _engine_fields(params: Mapping[str, Any]) -> tuple[str, ...]:
    fields = [f"{params['flavour']}_version", "plugins"]
    if not params.get("aot"):  # compiled for the GPU in this machine: its identity matters
        fields += ["gpu_sm", "cuda_runtime_version", "cuda_driver_version"]
    return tuple(fields)


def _refit_fields(params: Mapping[str, Any]) -> tuple[str, ...]:
    return (f"{params['flavour']}_version", "gpu_sm", "cuda_runtime_version", "cuda_driver_version")


# ---- placement on a build farm (graph.placement) ----------------------------------------
def _flavour_needs(params: Mapping[str, Any], env: Mapping[str, Any]) -> tuple[str, ...]:
    """The flavour at the exact version the key names."""
    version = env.get(f"{params['flavour']}_version")
    return (flavour_resource(params["flavour"], str(version)),) if version else ()


def _engine_needs(params: Mapping[str, Any], env: Mapping[str, Any]) -> tuple[str, ...]:
    """The flavour, and every SM the plan is compiled for (the AOT targets, or the GPU the
    key names for a build on the GPU itself): one rule for every engine action."""
    targets = params.get("effective_config", {}).get("targets") or ()
    return _flavour_needs(params, env) + tuple(sm_resource(t) for t in targets)


def _refit_needs(params: Mapping[str, Any], env: Mapping[str, Any]) -> tuple[str, ...]:
    """Refitting deserializes the plan: it needs a GPU of the SM in the key."""
    sm = env.get("gpu_sm")
    return _flavour_needs(params, env) + ((sm_resource(str(sm)),) if sm else ())


def plan_shaping(manifest: TensorManifest) -> TensorManifest:
    """Weights whose values can shape the plan (integer/bool constants: shapes, indices)."""
    return TensorManifest.of(e for e in manifest.entries if e.dtype not in FLOAT_DTYPES)


# ---- trt.network -------------------------------------------------------------------------
def run_network(ctx) -> dict[str, Any]:
    from trtcas.rules.canonical import KnownWeights, canonicalize_network, serialize
    from trtcas.rules.trt.allocator import map_large_allocations
    from trtcas.rules.trt.toolchain import load_toolchain

    map_large_allocations()  # the weights it decodes and TensorRT's copies go back when freed, not
    # kept in the heap under the engine build that follows (~0.4 GB of a 2.2 GB model here)
    toolchain = load_toolchain(ctx.params["backend"])
    loaded = load_network(ctx, toolchain)
    parsed = loaded.parsed
    canon = canonicalize_network(toolchain.backend.trt, parsed.network, loaded.profiles,
                                 onnx_model=loaded.onnx_model, algo=ctx.algo,
                                 known=KnownWeights(loaded.weight_digests, loaded.weight_arrays))
    stored_already = set(loaded.weight_digests.values())
    for entry in canon.weights.entries:
        if entry.digest in stored_already:  # taken from the source's manifest: in the store already
            continue
        value = canon.weight_values.get(entry.name)  # None for empty weights (e.g. an unused scale power)
        stored = ctx.put_bytes(b"" if value is None else np.ascontiguousarray(value).tobytes())
        if stored != entry.digest:
            raise TrtcasError(f"weight {entry.name} hashed differently when stored ({stored} vs {entry.digest}); report this bug")
    net = parsed.network
    io = {
        "inputs": [net.get_input(i).name for i in range(net.num_inputs)],
        "outputs": [net.get_output(i).name for i in range(net.num_outputs)],
    }
    ctx.log(f"structural digest {canon.structural_digest}; {len(canon.weights.entries)} weights, {canon.weights.total_bytes} bytes")
    return {
        "structure": serialize(canon.structural_model()),
        "canonical": canon.to_bytes(),
        "weights": canon.weights.to_bytes(),
        "io": json.dumps(io, sort_keys=True).encode(),
        "refit_names": json.dumps(canon.refit_names, sort_keys=True).encode(),
        "layer_names": json.dumps(canon.layer_names, sort_keys=True).encode(),  # for explain only
    }


# ---- trt.engine --------------------------------------------------------------------------
def engine_spec(params: Mapping[str, Any]):
    from trtcas.rules.trt.engine import EngineSpec

    return EngineSpec(**params["spec"])


def run_engine(ctx) -> dict[str, Any]:
    from trtcas.rules.trt.allocator import map_large_allocations
    from trtcas.rules.trt.diagnose import build_with_diagnosis
    from trtcas.rules.trt.mapped_weights import released_while_building
    from trtcas.rules.trt.toolchain import load_toolchain

    map_large_allocations()  # the builder's freed copies of the weights go back at once
    toolchain = load_toolchain(ctx.params["backend"])
    loaded = load_network(ctx, toolchain, for_engine_build=True,  # written as keyed (rules.llm.planner)
                          stack_parallel_linears=bool(ctx.params.get("stack_parallel_linears")))
    parsed = loaded.parsed
    parsed.logger.forward = ctx.log  # the builder's own log, live and failed builds included (`trtcas log`)
    # progress bar, Ctrl-C stops the builder; the weights' pages go back as TensorRT copies them
    with monitoring(ctx), released_while_building(loaded.release_weight_pages):
        plan = build_with_diagnosis(  # plain build_plan, plus naming the layer to blame on failure
            toolchain.backend, parsed, engine_spec(ctx.params), ctx.params["refittable"], build=toolchain.build_plan,
            into=ctx.scratch / "plan",
        )
    if plan.effective_config != ctx.params["effective_config"]:
        raise TrtcasError("the builder config differs from the one planned into the key; report this bug")
    ctx.log(f"built in {plan.seconds:.3f}s, {len(plan.plan)} bytes")
    # a plan streamed to a file is stored from the file: never whole in this process's memory
    return {"plan": plan.path or plan.plan, "names": ctx.input_bytes("refit_names")}


def explain_engine(change) -> list[Any]:
    """Name what changed in the network: its bindings (inputs and outputs, by name) and,
    when the structure changed, which layers (by their ONNX node names) and attributes."""
    before, after = change.old_components.get("inputs", {}), change.new_components.get("inputs", {})
    lines: list[Any] = []
    if before.get("io") and after.get("io") and before["io"] != after["io"]:
        lines += _binding_changes(change.blobs, before["io"], after["io"])
    old, new = before.get("structure"), after.get("structure")
    if not old or not new or old == new:
        return lines
    import onnx

    from trtcas.rules.canonical import diff_canonical

    try:
        models = [onnx.load_from_string(change.blobs.get_bytes(Digest.parse(d))) for d in (old, new)]
    except Exception as exc:
        return lines + [f"(network diff unavailable: {exc})"]
    names = [_layer_names(change.blobs, build, digest) for build, digest in
             ((change.old_build, old), (change.new_build, new))]
    # said instead of the bare `structure` digests: what in the network changed
    return lines + [Change("network", detail=line, replaces="input structure") for line in diff_canonical(*models, *names)]


def _binding_changes(blobs, old: str, new: str) -> list[Any]:
    """The renamed, added or removed bindings, said instead of the bare ``input io`` digests."""
    try:
        before, after = (json.loads(blobs.get_bytes(Digest.parse(d))) for d in (old, new))
    except Exception:
        return []
    said = []
    for kind in ("inputs", "outputs"):
        a, b = before.get(kind, []), after.get(kind, [])
        for i in range(max(len(a), len(b))):
            was, now = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
            if was is not None and now is not None and was != now:
                said.append(f"{kind[:-1]} {i} renamed {was!r} -> {now!r}")
            elif was != now:
                said.append(f"{kind[:-1]} {i} {'added: ' + repr(now) if now is not None else 'removed: ' + repr(was)}")
    return [Change("bindings", before, after, "; ".join(said), replaces="input io")] if said else []


def _layer_names(blobs, build: Mapping[str, Mapping[str, Any]], structure: str) -> dict[str, str] | None:
    """Canonical layer id -> the layer's own name, from the network action of ``build`` that
    produced ``structure`` (None when unknown, e.g. an entry cached before names were kept)."""
    for record in build.values():
        outputs = record.get("outputs", {})
        if outputs.get("structure") == structure and outputs.get("layer_names"):
            try:
                return json.loads(blobs.get_bytes(Digest.parse(outputs["layer_names"])))
            except Exception:
                return None
    return None


# ---- trt.refit ---------------------------------------------------------------------------
def run_refit(ctx) -> dict[str, Any]:
    from trtcas.rules.trt.toolchain import load_toolchain

    toolchain = load_toolchain(ctx.params["backend"])
    names = json.loads(ctx.input_bytes("names"))
    manifest = TensorManifest.from_bytes(ctx.input_bytes("weights"))
    by_structure = load_tensors(ctx, manifest)
    unnamed = sorted(set(by_structure) - set(names))
    refittable = {names[role]: array for role, array in by_structure.items() if role in names}
    ctx.log(f"refitting {len(refittable)} weights ({len(unnamed)} without a TensorRT name are part of the plan)")
    return {"plan": toolchain.refit_plan(toolchain.backend, ctx.input_bytes("engine"), refittable)}


# ---- trt.plan_shaping_weights ------------------------------------------------------------
def run_select_shaping(ctx) -> dict[str, Any]:
    """The plan-shaping subset as its own output, so a refittable engine keys on it alone."""
    return {"weights": plan_shaping(TensorManifest.from_bytes(ctx.input_bytes("weights"))).to_bytes()}


NETWORK_RULE = Rule(
    "trt.network", 1, run_network, dynamic_fingerprint=_flavour_fields, placement=_flavour_needs,
    outputs=("canonical", "io", "layer_names", "refit_names", "structure", "weights"),
    doc="ONNX file or TensorRT-LLM rank -> canonical network (structural digest) and per-tensor weights",
)
ENGINE_RULE = Rule(
    "trt.engine", 1, run_engine, dynamic_fingerprint=_engine_fields, outputs=("names", "plan"),
    unkeyed_inputs=frozenset({"onnx", "refit_names", "source_weights", "source_config"}),
    # "rank" lives in the weights, so equal structure may share. "spec" is the [engine] table as
    # written: the key holds "effective_config" (read back from the builder) instead, so a
    # setting written out equal to the builder's default keys as if it were left out.
    cosmetic_params=frozenset({"rank", "spec"}),
    explain=explain_engine, explain_sharing=rank_sharing_lines, placement=_engine_needs,
    doc="canonical network + builder config -> engine plan",
)
REFIT_RULE = Rule(
    "trt.refit", 1, run_refit, dynamic_fingerprint=_refit_fields, outputs=("plan",), placement=_refit_needs,
    doc="engine plan + one rank's weights -> refitted plan",
)
SHAPING_RULE = Rule(
    "trt.plan_shaping_weights", 1, run_select_shaping, outputs=("weights",),
    doc="weights manifest -> the subset (integer/bool constants) that shapes an engine plan",
)
