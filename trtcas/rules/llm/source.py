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
                            stack_parallel_linears: bool = False) -> LoadedNetwork:
    """``stack_parallel_linears``: write each gated MLP's projections as one constant (as
    an engine that embeds its weights is built: the engine action's parameter)."""
    manifest = TensorManifest.from_bytes(ctx.input_bytes("source_weights"))
    config = json.loads(ctx.input_bytes("source_config"))
    arch = architecture(config.get("architecture"), "the TensorRT-LLM checkpoint config")
    if for_engine_build:  # stacked pairs laid back to back: the stack is a view (rules.trt.layers)
        pairs = gated_mlp_pairs(e.name for e in manifest.entries) if stack_parallel_linears else ()
        weights = map_tensors(ctx, manifest, ctx.scratch, back_to_back=pairs)
    else:
        weights = MappedWeights(load_tensors(ctx, manifest), None)
    network = arch.build_network(
        toolchain.backend, config, int(ctx.params["rank"]), weights.arrays,
        int(ctx.params["max_batch_size"]), int(ctx.params["max_seq_len"]), stack_parallel_linears=stack_parallel_linears,
    )
    digests = {entry.name: entry.digest for entry in manifest.entries}
    return LoadedNetwork(network, None, profiles_by_name([p.canonical() for p in network.profiles]),
                         weight_digests=digests, weight_arrays=dict(network.constants),
                         release_weight_pages=weights.release_resident)
