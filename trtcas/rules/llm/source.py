"""The ``trtllm`` network source: one rank of a TensorRT-LLM checkpoint (its tensor manifest
and config.json, as the convert or import action stored them), written with TensorRT's layers
by the checkpoint's architecture. For an engine build the tensors are mapped from a scratch
file (``rules.trt.mapped_weights``) so the build can give their memory back, and an engine
that embeds its weights stacks parallel linears (the ``stack_parallel_linears`` engine
parameter, keyed); otherwise
(canonicalizing, evaluating) they are read from the store as they are, with no file written."""

from __future__ import annotations

import json
from typing import Any

from trtcas.cas.manifest import TensorManifest
from trtcas.rules.formats.tensors import load_tensors
from trtcas.rules.llm.architectures import architecture
from trtcas.rules.llm.decoder.network import gated_mlp_pairs
from trtcas.rules.trt.mapped_weights import MappedWeights, map_tensors
from trtcas.rules.trt.sources import LoadedNetwork, profiles_by_name


def load_checkpoint_network(ctx: Any, toolchain: Any, for_engine_build: bool = False,
                            stack_parallel_linears: bool | None = None) -> LoadedNetwork:
    """``stack_parallel_linears``: write each gated MLP's projections as one constant; by
    default as the engine action's ``stack_parallel_linears`` parameter says (an engine
    that embeds its weights), else not."""
    manifest = TensorManifest.from_bytes(ctx.input_bytes("source_weights"))
    config = json.loads(ctx.input_bytes("source_config"))
    arch = architecture(config.get("architecture"), "the TensorRT-LLM checkpoint config")
    # laid back to back for an engine build, so the stacked constant is a view
    # (rules.trt.layers.parallel_linears)
    stack = bool(ctx.params.get("stack_parallel_linears")) if stack_parallel_linears is None else stack_parallel_linears
    if for_engine_build:
        pairs = gated_mlp_pairs(e.name for e in manifest.entries) if stack else ()
        weights = map_tensors(ctx, manifest, ctx.scratch, back_to_back=pairs)
    else:
        weights = MappedWeights(load_tensors(ctx, manifest), None)
    network = arch.build_network(
        toolchain.backend, config, int(ctx.params["rank"]), weights.arrays,
        int(ctx.params["max_batch_size"]), int(ctx.params["max_seq_len"]), stack_parallel_linears=stack,
    )
    digests = {entry.name: entry.digest for entry in manifest.entries}
    return LoadedNetwork(network, None, profiles_by_name([p.canonical() for p in network.profiles]),
                         weight_digests=digests, weight_arrays=dict(network.constants),
                         release_weight_pages=weights.release_resident)
