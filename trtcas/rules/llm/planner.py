"""LLM targets: a Hugging Face checkpoint (or a TensorRT-LLM one) -> per-rank engines.

    [model]
    hf = "tiny-llama"            # or: checkpoint = "trtllm-ckpt" (config.json + rank{N}.safetensors)
    dtype = "float16"            # float16 | bfloat16 | float32 (hf only)
    quantization = "none"        # none | W8A16 (hf only)
    max_batch_size = 2
    max_seq_len = 16
    [parallel]
    tp = 2
    [engine] ...                 # as for ONNX targets

For tp = N the graph has, per rank r: ``convert[rank r]`` (HF -> TensorRT-LLM tensors of that
rank, stored per tensor), ``network[rank r]`` (the decoder written with TensorRT's native
layers, canonicalized), ``engine[rank r]`` and, when refittable, ``refit[rank r]``. The
rank lives only in the weights, so when the structural digests of two ranks are equal and
the engine does not embed weights, their engine keys are equal and the build runs once
(the others are ``shared``), followed by one refit per rank. Where weights must be
embedded (any CPU-only build), the keys differ by the weights and every rank builds.
The converted checkpoint is materialized at ``<output dir>/checkpoint/`` as TensorRT-LLM
reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from trtcas.errors import TrtcasError
from trtcas.graph.action import Action, InputRef
from trtcas.graph.dag import PlannedTarget, Planner
from trtcas.graph.rule import Rule
from trtcas.rules.llm.source_files import linked_source_dir, source_inputs
from trtcas.rules.trt.engine_actions import (
    ENGINE_SCHEMA,
    check_distinct_plans,
    engine_actions,
    engine_settings,
    engine_variants,
)

MODEL_KEYS = {"hf", "checkpoint", "dtype", "quantization", "max_batch_size", "max_seq_len", "vocab_parallel"}
PARALLEL_KEYS = {"tp", "pp"}


# ---- rules ----------------------------------------------------------------------------------
def run_convert(ctx) -> dict[str, Any]:
    with linked_source_dir(ctx, "hf") as hf_dir:
        return _convert(ctx, hf_dir)


def _convert(ctx, hf_dir: Path) -> dict[str, Any]:
    from trtcas.rules.formats.tensors import (
        placed_file_writer,
        previous_manifest,
        store_tensors,
        written_while_passing,
    )
    from trtcas.rules.llm.convert import open_rank, trtllm_config
    from trtcas.rules.llm.hf import read_hf_config
    from trtcas.rules.llm.spec import ConvertSpec

    params = ctx.params
    spec = ConvertSpec(tp=params["tp"], pp=params["pp"], dtype=params["dtype"],
                       quantization=params["quantization"], vocab_parallel=params["vocab_parallel"])
    slots, tensors = open_rank(hf_dir, spec, params["rank"])
    previous = previous_manifest(ctx, "weights")
    placed = ctx.prepare_output("weights") if hasattr(ctx, "prepare_output") else None
    if placed is None:
        manifest = store_tensors(ctx, tensors, previous)
    else:  # this build places the checkpoint: write its file now, while each tensor is in memory
        with placed_file_writer(placed, slots) as writer:
            manifest = store_tensors(ctx, written_while_passing(writer, tensors), previous)
            writer.finish()
    ctx.log(f"rank {params['rank']}: {len(manifest.entries)} tensors, {manifest.total_bytes} bytes")
    config = trtllm_config(read_hf_config(hf_dir), spec)
    return {"weights": manifest.to_bytes(), "config": json.dumps(config, indent=2, sort_keys=True).encode() + b"\n"}


def run_import_checkpoint(ctx) -> dict[str, Any]:
    """A TensorRT-LLM checkpoint rank already on disk -> the same outputs as convert."""
    from trtcas.rules.formats.tensors import previous_manifest, store_tensors
    from trtcas.rules.llm.checkpoint import read_rank_weights, read_trtllm_checkpoint

    with linked_source_dir(ctx, "checkpoint") as directory:
        checkpoint = read_trtllm_checkpoint(directory, only_rank=ctx.params["rank"])
        manifest = store_tensors(ctx, read_rank_weights(checkpoint, ctx.params["rank"]).items(), previous_manifest(ctx, "weights"))
    return {"weights": manifest.to_bytes(), "config": json.dumps(checkpoint.config, indent=2, sort_keys=True).encode() + b"\n"}


CONVERT_RULE = Rule("llm.convert", 1, run_convert, fingerprint_fields=("pkg:numpy", "pkg:ml_dtypes"),
                    outputs=("config", "weights"), maps_sources=True,
                    output_formats={"weights": "safetensors"},
                    doc="HF checkpoint -> one TensorRT-LLM rank, stored per tensor")
IMPORT_RULE = Rule("llm.import_checkpoint", 1, run_import_checkpoint, outputs=("config", "weights"),
                   output_formats={"weights": "safetensors"},
                   doc="TensorRT-LLM checkpoint rank -> per-tensor manifest")


# ---- planning -------------------------------------------------------------------------------
def _model_settings(config: Mapping[str, Any], base: Path) -> dict[str, Any]:
    model = dict(config.get("model", {}))
    unknown = set(model) - MODEL_KEYS
    if unknown:
        raise TrtcasError(f"[model]: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(MODEL_KEYS))}")
    if ("hf" in model) == ("checkpoint" in model):
        raise TrtcasError("[model]: give exactly one of hf = \"<HF checkpoint dir>\" or checkpoint = \"<TensorRT-LLM checkpoint dir>\"")
    parallel = dict(config.get("parallel", {}))
    unknown = set(parallel) - PARALLEL_KEYS
    if unknown:
        raise TrtcasError(f"[parallel]: unknown setting(s) {', '.join(sorted(unknown))}; known: tp, pp")
    settings = {
        "tp": parallel.get("tp", 1), "pp": parallel.get("pp", 1),
        "dtype": model.get("dtype", "float16"),
        "quantization": None if model.get("quantization", "none") in (None, "none") else model["quantization"],
        "vocab_parallel": bool(model.get("vocab_parallel", False)),
        "max_batch_size": model.get("max_batch_size", 1), "max_seq_len": model.get("max_seq_len", 128),
    }
    for name in ("tp", "pp", "max_batch_size", "max_seq_len"):
        value = settings[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TrtcasError(f"{name} = {value!r}: must be a positive integer")
    if settings["pp"] != 1:
        raise TrtcasError("pp > 1 is not supported yet: engines are built per tensor-parallel rank of one stage; set [parallel] pp = 1")
    source = model.get("hf") or model.get("checkpoint")
    if not (base / source).is_dir():
        raise TrtcasError(f"[model] {'hf' if 'hf' in model else 'checkpoint'} = {source!r}: no such directory next to the target file")
    if "hf" in model:
        from trtcas.rules.llm.convert import plan_rank
        from trtcas.rules.llm.hf import checkpoint_files, read_hf_config
        from trtcas.rules.llm.spec import ConvertSpec

        spec = ConvertSpec(tp=settings["tp"], pp=1, dtype=settings["dtype"], quantization=settings["quantization"],
                           vocab_parallel=settings["vocab_parallel"])
        hf_config = read_hf_config(base / source)
        plan_rank(hf_config, spec, 0)  # checks tp against heads/vocab, reads no tensors
        settings["files"] = checkpoint_files(base / source)
        settings["max_positions"] = hf_config.get("max_position_embeddings")
    else:
        _check_checkpoint_mapping(base / source, parallel, settings)
    settings["source"], settings["kind"] = source, "hf" if "hf" in model else "checkpoint"
    return settings


def _check_checkpoint_mapping(directory: Path, parallel: Mapping[str, Any], settings: dict[str, Any]) -> None:
    """A TensorRT-LLM checkpoint was converted for one tp/pp: ``[parallel]`` must agree with
    its ``mapping`` (or be left out, and take it), never silently build a subset of ranks."""
    from trtcas.rules.llm.checkpoint import read_trtllm_checkpoint

    checkpoint = read_trtllm_checkpoint(directory)
    for name, theirs in (("tp", checkpoint.tp_size), ("pp", checkpoint.pp_size)):
        if name in parallel and parallel[name] != theirs:
            raise TrtcasError(f"[parallel] {name} = {parallel[name]} but the checkpoint {directory.name}/config.json was "
                              f"converted for {name}_size={theirs}; set {name} = {theirs} or re-convert for {name} = {parallel[name]}")
        settings[name] = theirs
    settings["max_positions"] = checkpoint.config.get("max_position_embeddings")
    if settings["pp"] != 1:
        raise TrtcasError(f"the checkpoint {directory.name} has pp_size={settings['pp']}; pp > 1 is not supported yet: "
                          "re-convert it with pp = 1")


def _beyond_positions_note(model: Mapping[str, Any]) -> tuple[str, ...]:
    """A ``max_seq_len`` past the model's ``max_position_embeddings`` builds (TensorRT-LLM
    allows it too) but asks for positions the model was not trained on: say so, once."""
    limit = model.get("max_positions")
    if not isinstance(limit, int) or isinstance(limit, bool) or model["max_seq_len"] <= limit:
        return ()
    return (f"max_seq_len = {model['max_seq_len']} is beyond the model's max_position_embeddings ({limit}): "
            "positions past it are extrapolated, which the model was not trained for",)


def _write_checkpoint(config: Mapping[str, Any]) -> bool:
    """``[output] checkpoint``: whether the converted checkpoint is placed in the output dir
    (``checkpoint/``) or only kept in the cache (then only engines and build.json are)."""
    output = config.get("output", {})
    value = output.get("checkpoint", True) if isinstance(output, dict) else True
    if not isinstance(value, bool):
        raise TrtcasError(f"[output] checkpoint = {value!r}: must be true or false")
    return value


def _weights_actions(settings: dict[str, Any], rank: int) -> Action:
    if settings["kind"] == "hf":
        params = {k: settings[k] for k in ("tp", "pp", "dtype", "quantization", "vocab_parallel")} | {"rank": rank}
        placed = {"weights": f"checkpoint/rank{rank}.safetensors", "config": "checkpoint/config.json"}
        return Action(f"convert[rank{rank}]", "llm.convert", params | {"files": settings["files"]},
                      source_inputs("hf", settings["source"], settings["files"]), placed if settings["checkpoint"] else {})
    files = ["config.json", f"rank{rank}.safetensors"]  # a rank's import reads its own file only
    return Action(f"checkpoint[rank{rank}]", "llm.import_checkpoint", {"rank": rank, "files": files},
                  source_inputs("checkpoint", settings["source"], files))


def plan_llm(config: Mapping[str, Any], base: Path) -> PlannedTarget:
    model = _model_settings(config, base) | {"checkpoint": _write_checkpoint(config)}
    settings = engine_settings(config)
    variants = engine_variants(config)
    shapes = {"max_batch_size": model["max_batch_size"], "max_seq_len": model["max_seq_len"]}
    # an engine embedding its weights is built with each gated MLP's projections stacked (a
    # lighter build: rules.trt.layers.parallel_linears); a refittable one keeps them by name
    engine_params = {label: {**v.engine_params(), "source": "trtllm", **shapes,
                             "stack_parallel_linears": not v.refittable} for label, v in variants}
    actions = []
    for rank in range(model["tp"]):
        weights = _weights_actions(model, rank)
        source = {"source_weights": InputRef(action=weights.id, output="weights"),
                  "source_config": InputRef(action=weights.id, output="config")}
        network = Action(f"network[rank{rank}]", "trt.network",
                         {**settings.common_params, "source": "trtllm", "rank": rank, **shapes}, source)
        actions += [weights, network]
        for label, variant in variants:
            actions += engine_actions(variant, rank, network, source, {**engine_params[label], "rank": rank}, label=label)
    notes = () if settings.refittable else (settings.why,)
    notes += _beyond_positions_note(model)
    if not settings.refittable and model["tp"] > 1:
        notes += (f"each of the {model['tp']} ranks builds its own engine because weights are embedded; "
                  "with a refit-capable backend, ranks with equal structure share one build",)
    check_distinct_plans(actions)
    return PlannedTarget(tuple(actions), notes, notes_for_rules=("trt.engine",))


PLANNER = Planner(
    "llm", lambda c: isinstance(c.get("model"), dict) and ("hf" in c["model"] or "checkpoint" in c["model"]), plan_llm,
    schema={**ENGINE_SCHEMA, "model": frozenset(MODEL_KEYS), "parallel": frozenset(PARALLEL_KEYS),
            "output": ENGINE_SCHEMA["output"] | {"checkpoint"}},
    selectors=("model.hf", "model.checkpoint"),
)
