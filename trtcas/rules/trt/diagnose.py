"""When an engine build fails, name the layer to blame: from the build log, or by compiling
each layer kind of the network alone (``probe_layer_support``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from trtcas.errors import TrtcasError
from trtcas.graph.interrupt import BuildCancelled
from trtcas.rules.messages import name_list, require, tidy_message
from trtcas.rules.trt.backend import Backend
from trtcas.rules.trt.engine import EnginePlan, EngineSpec, build_plan, resolved_targets
from trtcas.rules.trt.layers import LayerWriter
from trtcas.rules.trt.network import ParsedNetwork

# --------------------------------------------------------------------------- building, and naming what failed


@dataclass(frozen=True)
class LayerSupport:
    """Whether one layer kind compiles alone on this backend for ``targets``, and how fast."""

    probe: str
    layer_types: tuple[str, ...]
    compiled: bool
    seconds: float
    error: str | None = None


def build_with_diagnosis(backend: Backend, network: ParsedNetwork, spec: EngineSpec, refittable: bool,
                         build: Callable[..., EnginePlan] = build_plan, into: Path | None = None) -> EnginePlan:
    """``engine.build_plan`` for a written network, whose failure names the layer to blame.

    A network's own profiles are used when the spec has none. When the build fails with
    errors in the log (not a refittable build on a GPU-less machine, which ``build_plan``
    already explains), the layer is found from the log (every layer here is named) or, if
    the log names none, by compiling each layer type of the network alone. ``into`` is
    ``build``'s (a file to stream the plan to), passed on only when given.
    """
    if not spec.profiles and getattr(network, "profiles", ()):
        spec = replace(spec, profiles=network.profiles)
    mark = len(network.logger.lines)
    try:
        return build(backend, network, spec, refittable, **({} if into is None else {"into": into}))
    except BuildCancelled:
        raise
    except TrtcasError as exc:
        errors = network.logger.errors(mark)
        if refittable or spec.strip_weights or not errors:
            raise
        raise TrtcasError(_layer_failure(backend, network, spec, errors) or str(exc)) from None


def _layer_failure(backend: Backend, network: ParsedNetwork, spec: EngineSpec, errors: list[str]) -> str | None:
    who = f"{backend.flavour} {backend.version}"
    targets = ", ".join(resolved_targets(spec, backend)) or "this GPU"
    net = network.network
    layers = [(net.get_layer(i).name, backend.trt.ILayer.type.fget(net.get_layer(i)).name)
              for i in range(net.num_layers)]
    text = " ".join(errors)
    failed = f"building {network.source} for {targets} with {who} failed"
    hint = f"that layer (or its configuration) does not compile with {who} here: change it or build on a GPU " \
           "the backend supports"
    named = [(n, t) for n, t in layers if n and n in text]
    if named:
        name, kind = max(named, key=lambda item: len(item[0]))  # "x.fc" must not match for "x.fc.weight"
        return f"{failed} at {kind} layer {name!r}: {_reason(_last_with(errors, (name,)))}; {hint}"
    present = {t for _, t in layers}
    for kinds, words, kind_hint in _LAYER_WORDS:
        if present & set(kinds) and any(word in text.lower() for word in words):
            names = [n for n, t in layers if t in kinds]
            return (f"{failed} at {'/'.join(k for k in kinds if k in present)} layers ({len(names)}: "
                    f"{name_list(names, 2)}): {_reason(_last_with(errors, words))}; {kind_hint or hint}")
    failing = [s for s in probe_layer_support(backend, spec.targets or None, layer_types=present) if not s.compiled]
    if not failing:
        return None
    culprit = failing[0]
    names = [n for n, t in layers if t in culprit.layer_types]
    return (f"building {network.source} for {targets} with {who} failed: {who} cannot compile "
            f"{'/'.join(culprit.layer_types)} layers ({culprit.probe}) here, not even alone "
            f"({tidy_message(culprit.error or '', 200)}); this network has {len(names)}: {name_list(names, 3)}; "
            "build on a GPU the backend supports")


def _last_with(errors: list[str], words: Sequence[str]) -> str:
    return next((e for e in reversed(errors) if any(w in e.lower() or w in e for w in words)), errors[-1])


def _reason(line: str) -> str:
    """The part of a builder error line a user can act on: without the ``[E]`` tag, the
    ``IBuilder::...: Error Code N:`` preamble, source locations (``[shape.cpp:175: ...]``,
    ``foo.cpp:59:``, ``In f at /_src/...``), and Myelin's restatement of the node before
    ``Error is:``."""
    text = " ".join(line[4:].split()) if line[:1] == "[" else " ".join(line.split())
    text = re.sub(r"^IBuilder::\w+: Error Code \d+: ", "", text)
    text = text.split("Error is:", 1)[-1]
    text = re.sub(r"\[[\w./]+\.(?:cpp|h):\d+:[^\]]*\]\s*", "", text)
    text = re.sub(r"\b[\w/]+\.(?:cpp|h):\d+:\s*", "", text)
    text = re.sub(r"\s*In \w+ at /\S+", "", text)
    return tidy_message(text.strip(" ()"), 300)


# How build logs name a layer kind when they name no layer (Myelin: "Attention operation was
# not supported ..."); only the LLM layers, whose names are not ordinary words of a log.
# The hint replaces the generic one where the cause is known.
_LAYER_WORDS: tuple[tuple[tuple[str, ...], tuple[str, ...], str | None], ...] = (
    (("ATTENTION_INPUT", "ATTENTION_OUTPUT"), ("attention",),
     "there is no fused attention kernel for this head size and dtype on these targets: mark the attention "
     "decomposable (build_decoder_network(decomposable_attention=True), the default)"),
    (("ROTARY_EMBEDDING",), ("rotaryembedding", "rotary embedding"), None),
    (("DIST_COLLECTIVE",), ("distcollective", "collective", "nccl"), None),
    (("KV_CACHE_UPDATE",), ("kvcacheupdate", "kv cache"), None),
    (("NORMALIZATION",), ("normalization",), None),
    (("MOE",), ("moe",), None),
)


# Tiny one-layer networks, one per layer kind the decoder uses (and the LLM layers next to
# it), for :func:`probe_layer_support`. Each returns (its output, the layer types it tests).
_B, _S, _H, _HEADS, _KV, _D = 2, 8, 64, 4, 2, 16


def _probe_input(w: LayerWriter, shape: Sequence[int], dtype: Any = None) -> Any:
    return w.net.add_input(f"x{w.net.num_inputs}", dtype or w.trt_dtype, tuple(shape))


def _probe_gather(w: LayerWriter) -> Any:
    ids = _probe_input(w, (_B, _S), w.trt.int32)
    return w.named(w.net.add_gather(w.constant("table", np.ones((32, _H), np.float16)), ids, 0), "gather")


def _probe_matmul(w: LayerWriter) -> Any:
    return w.linear(_probe_input(w, (_B, _S, _H)), "proj", {"proj.weight": np.ones((2 * _H, _H), np.float16)})


def _probe_dequantize(w: LayerWriter) -> Any:
    weights = {"q.weight": np.ones((_H, 2 * _H), np.int8), "q.per_channel_scale": np.ones(2 * _H, np.float16)}
    return w.linear(_probe_input(w, (_B, _S, _H)), "q", weights)


def _probe_activation(w: LayerWriter) -> Any:
    return w.named(w.net.add_activation(_probe_input(w, (_B, _S, _H)), w.trt.ActivationType.SIGMOID), "sigmoid")


def _probe_elementwise(w: LayerWriter) -> Any:
    return w.elementwise(_probe_input(w, (_B, _S, _H)), _probe_input(w, (_B, _S, _H)), "PROD", "prod")


def _probe_rms_norm(w: LayerWriter) -> Any:
    return w.rms_norm(_probe_input(w, (_B, _S, _H)), "n.weight", {"n.weight": np.ones(_H, np.float16)}, 1e-5)


def _probe_normalization(w: LayerWriter) -> Any:
    scale = w.constant("scale", np.ones((1, 1, _H), np.float16))
    bias = w.constant("bias", np.zeros((1, 1, _H), np.float16))
    return w.named(w.net.add_normalization_v2(_probe_input(w, (_B, _S, _H)), scale, bias, 1 << 2), "norm")


def _probe_rotary(w: LayerWriter) -> Any:
    x = _probe_input(w, (_B, _HEADS, _S, _D))
    cos = w.constant("cos", np.ones((_B, _S, _D // 2), np.float16))
    sin = w.constant("sin", np.zeros((_B, _S, _D // 2), np.float16))
    return w.named(w.net.add_rotary_embedding(x, cos, sin, False, 0), "rotary")


def _probe_attention(w: LayerWriter) -> Any:
    q, k, v = (_probe_input(w, (_B, n, _S, _D)) for n in (_HEADS, _KV, _KV))
    layer = w.net.add_attention_v2(q, k, v, w.trt.AttentionNormalizationOp.SOFTMAX, w.trt.CausalMaskKind.UPPER_LEFT)
    layer.name = "attention"
    return layer.get_output(0)


def _probe_all_reduce(w: LayerWriter) -> Any:
    return w.collective(_probe_input(w, (_B, _S, _H)), 2, "all_reduce")


def _probe_all_gather(w: LayerWriter) -> Any:
    return w.collective(_probe_input(w, (_B, _S, _H)), 2, "all_gather", gather=True)


def _probe_dynamic_slice(w: LayerWriter) -> Any:
    ids = _probe_input(w, (_B, _S), w.trt.int32)
    return w.slice(w.constant("t", np.ones((1, _S, _D), np.float16)), (0, 0, 0), w.shape_with(ids, (_D,), "size"),
                   "slice", wrap=True)


_PROBES: dict[str, tuple[Callable[[LayerWriter], Any], tuple[str, ...]]] = {
    "gather": (_probe_gather, ("GATHER",)),
    "matrix_multiply": (_probe_matmul, ("MATRIX_MULTIPLY", "SHUFFLE")),
    "dequantize": (_probe_dequantize, ("DEQUANTIZE",)),
    "activation": (_probe_activation, ("ACTIVATION",)),
    "elementwise": (_probe_elementwise, ("ELEMENTWISE",)),
    "rms_norm": (_probe_rms_norm, ("CAST", "REDUCE", "UNARY")),
    "normalization": (_probe_normalization, ("NORMALIZATION",)),
    "rotary_embedding": (_probe_rotary, ("ROTARY_EMBEDDING",)),
    "attention": (_probe_attention, ("ATTENTION_INPUT", "ATTENTION_OUTPUT")),
    "all_reduce": (_probe_all_reduce, ("DIST_COLLECTIVE",)),
    "all_gather": (_probe_all_gather, ("DIST_COLLECTIVE",)),
    "dynamic_slice": (_probe_dynamic_slice, ("SLICE", "SHAPE", "CONCATENATION")),
}
PROBES = tuple(_PROBES)


def probe_layer_support(backend: Backend, targets: Sequence[str] | None = None,
                        probes: Sequence[str] | None = None,
                        layer_types: set[str] | None = None) -> tuple[LayerSupport, ...]:
    """Compile each layer kind alone (float16, weights embedded, not refittable) for
    ``targets`` (default: the backend's) and report which compile.

    ``probes`` picks kinds by name (:data:`PROBES`); ``layer_types`` picks the kinds that
    test any of those ``LayerType`` names. Each probe takes tens of milliseconds.
    """
    unknown = [p for p in probes or () if p not in _PROBES]
    require(not unknown, f"unknown layer probe(s) {unknown}; use some of: {', '.join(PROBES)}")
    chosen = [p for p in (probes or PROBES) if layer_types is None or set(_PROBES[p][1]) & set(layer_types)]
    spec = EngineSpec(targets=tuple(targets or ()), refit="no")
    results = []
    for probe in chosen:
        make, types = _PROBES[probe]
        logger = backend.logger("error")
        builder = backend.trt.Builder(logger)
        network = builder.create_network(0)
        writer = LayerWriter(backend.trt, network, "float16")
        network.mark_output(make(writer))
        parsed = ParsedNetwork(backend=backend, source=f"a lone {probe} layer", parser=None, network=network,
                               builder=builder, logger=logger)
        start = time.perf_counter()
        try:
            build_plan(backend, parsed, spec, False)
            error = None
        except TrtcasError as exc:
            error = str(exc)
        results.append(LayerSupport(probe, types, error is None, time.perf_counter() - start, error))
    return tuple(results)
