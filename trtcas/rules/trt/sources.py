"""Where a ``trt.network`` action gets its network: one loader per kind of source.

A source kind (``params.source``) names an entry of ``NETWORK_SOURCES`` (entry point group
``trtcas.network_sources``; built in: ``onnx`` from ``rules.onnx_source``, ``trtllm`` from
``rules.llm``). The TensorRT rules call the loader and never know what kinds exist, so a new
kind of model source is a new entry, not a new branch here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from trtcas.registry import Registry


@dataclass(frozen=True, eq=False)
class LoadedNetwork:
    """A network ready to canonicalize or build.

    ``parsed``: the ParsedNetwork (it keeps the TensorRT objects alive); ``onnx_model``: the
    source ONNX model when there is one (refit names come from it); ``profiles``: the
    optimization profiles by input name, ``[{input: (min, opt, max)}]``; ``weight_digests``:
    digests of weights already known by name (from a converter's tensor manifest), so they
    need not be read back through TensorRT (nor hashed twice); ``weight_arrays``: the arrays of
    constants by name, for those whose dtype TensorRT's Python API cannot hand out (bf16);
    ``release_weight_pages``: gives back the memory of weights the builder has read so far,
    where the loader can do that safely (see ``rules.trt.mapped_weights``); else it does nothing.
    """

    parsed: Any
    onnx_model: Any = None
    profiles: list[dict] = field(default_factory=list)
    weight_digests: Mapping[str, Any] = field(default_factory=dict)
    weight_arrays: Mapping[str, Any] = field(default_factory=dict)
    release_weight_pages: Callable[[], None] = field(default=lambda: None)


# (run context, toolchain) -> LoadedNetwork; a loader that can hold its weights so an engine
# build gives their memory back also takes ``for_engine_build=True``, and one that writes
# networks more than one way takes the way as keywords (see load_network).
NetworkLoader = Callable[..., LoadedNetwork]
NETWORK_SOURCES: Registry[NetworkLoader] = Registry("network source", entry_point_group="trtcas.network_sources")


def profiles_by_name(profiles: list[Mapping[str, Any]]) -> list[dict[str, tuple]]:
    """Profile tables (as params hold them) -> ``[{input: (min, opt, max)}]``."""
    from trtcas.rules.trt.network import Profile

    return [{name: (r.min, r.opt, r.max) for name, r in Profile(p).shapes} for p in profiles]


def load_network(ctx: Any, toolchain: Any, for_engine_build: bool = False, **writing: Any) -> LoadedNetwork:
    """The action's network. ``for_engine_build``: it is for the builder, so a loader that
    can should hold the weights where their memory can be given back while TensorRT copies
    them (a scratch file, mapped: ``rules.trt.mapped_weights``); writing that file costs the
    weights' size in disk writes, which canonicalizing or evaluating does not need to pay.
    ``writing``: how to write the network (``stack_parallel_linears``), for a loader that
    takes it: evaluating a target writes its networks as its engines were written."""
    loader = NETWORK_SOURCES.get(ctx.params.get("source", "onnx"))
    options = {"for_engine_build": True} if for_engine_build else {}
    options |= writing
    accepted = inspect.signature(loader).parameters
    return loader(ctx, toolchain, **{name: value for name, value in options.items() if name in accepted})
