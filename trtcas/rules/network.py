"""ONNX file -> TensorRT network, and optimization profiles checked against that network.

Parsing goes through ``OnnxParser.parse_from_file`` (not ``parse(bytes)``) so that models
with ONNX external data, whose tensors live in files next to the model, load; it is also
the only way past protobuf's 2 GB limit. Every failure a user can cause (wrong path,
corrupt file, an operator the flavour cannot build, a profile that does not fit the
inputs) becomes a one-line :class:`TrtcasError` naming the file, the node and what to do.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from trtcas.errors import TrtcasError
from trtcas.rules.backend import Backend, tidy_message

Shape = tuple[int, ...]


@dataclass(frozen=True)
class NetworkInput:
    """One network input as TensorRT sees it; ``-1`` in ``shape`` marks a dynamic dim."""

    name: str
    shape: Shape
    dtype: str

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.shape)


@dataclass(frozen=True, eq=False)
class ParsedNetwork:
    """A parsed network and the objects that must outlive it.

    TensorRT's network refers to memory owned by the parser (weights) and the builder;
    the logger must outlive all three. Holding them together keeps them alive as long as
    the network is used. Not a value: two parses are never "equal".
    """

    backend: Backend
    source: str
    # Released in this order when the object goes: parser, then network, then builder,
    # the reverse of creation; the logger last, since all three log to it.
    parser: Any
    network: Any
    builder: Any
    logger: Any

    @property
    def inputs(self) -> tuple[NetworkInput, ...]:
        net = self.network
        return tuple(
            NetworkInput(t.name, tuple(int(d) for d in t.shape), str(t.dtype).rsplit(".", 1)[-1].lower())
            for t in (net.get_input(i) for i in range(net.num_inputs)))


def parse_onnx(backend: Backend, onnx_path: str | os.PathLike, log_severity: str = "info") -> ParsedNetwork:
    """Parse an ONNX file into a network for ``backend``; raise one clear line on failure."""
    path = Path(onnx_path)
    _check_readable(path)
    trt = backend.trt
    logger = backend.logger(log_severity)
    builder = trt.Builder(logger)
    if builder is None:
        raise TrtcasError(f"{backend.flavour} {backend.version} could not create a builder: "
                          f"{_last(logger.errors()) or 'no reason logged'}")
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        raise TrtcasError(_parser_failure(backend, path, parser))
    if network.num_outputs == 0:
        # The parser accepts bytes that decode to an empty protobuf (garbage, an empty file)
        raise TrtcasError(f"{path} is not a valid ONNX model ({_onnx_decode_problem(path)}); "
                          "re-export it or point the target at the right file")
    return ParsedNetwork(backend=backend, source=str(path), parser=parser, network=network,
                         builder=builder, logger=logger)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise TrtcasError(f"ONNX model not found: {path}; check the path in the target")
    if not path.is_file():
        raise TrtcasError(f"ONNX model path {path} is not a regular file; point the target at the .onnx file")
    try:
        with path.open("rb") as fh:
            first = fh.read(1)
    except OSError as exc:
        raise TrtcasError(f"cannot read ONNX model {path}: {exc.strerror or exc}; fix its permissions") from None
    if not first:
        raise TrtcasError(f"ONNX model {path} is empty (0 bytes); re-export it")


def _parser_failure(backend: Backend, path: Path, parser: Any) -> str:
    """The first parser error as one line: file, node (name and op), description, hint."""
    err = parser.get_error(0)
    where = ""
    if err.node() >= 0 or err.node_name():
        where = f" at node {err.node_name() or '#' + str(err.node())!r} (op {err.node_operator() or '?'})"
    desc = tidy_message(err.desc())
    more = f" (+{parser.num_errors - 1} more errors)" if parser.num_errors > 1 else ""
    if "Failed to import initializer" in desc:
        hint = "if the model keeps its weights in external data files, put them next to it"
    elif "Plugin not found" in desc or str(err.code()).endswith("UNSUPPORTED_NODE"):
        hint = (f"operator {err.node_operator() or '?'} is not supported by {backend.flavour} {backend.version}; "
                "replace it in the export or provide a plugin")
    else:
        hint = "fix the model (e.g. re-export it) and rebuild"
    return f"cannot parse ONNX model {path}{where}: {desc}{more}; {hint}"


def _onnx_decode_problem(path: Path) -> str:
    """Why the onnx package rejects the file; only called on the failure path."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 (any decode failure is the answer we want)
        return tidy_message(f"{type(exc).__name__}: {exc}")
    if not model.graph.output:
        return "it has no graph outputs"
    return "TensorRT found no outputs in it"


def _last(lines: Sequence[str]) -> str:
    return tidy_message(lines[-1].removeprefix("[E] ").removeprefix("[F] ")) if lines else ""


# -- optimization profiles -------------------------------------------------------------


@dataclass(frozen=True)
class ShapeRange:
    """The min/opt/max shapes one input takes under one optimization profile."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for attr in ("min", "opt", "max"):
            value = getattr(self, attr)
            if isinstance(value, (str, bytes)) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                          for d in value):
                raise TrtcasError(f"profile shape {attr}={value!r} must be a list of integers")
            object.__setattr__(self, attr, tuple(int(d) for d in value))
        if not len(self.min) == len(self.opt) == len(self.max):
            raise TrtcasError(f"profile shapes min={list(self.min)} opt={list(self.opt)} max={list(self.max)} "
                              "must have the same rank")
        if any(d < 0 for d in self.min) or not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise TrtcasError(f"profile shapes need 0 <= min <= opt <= max in every dimension; got "
                              f"min={list(self.min)} opt={list(self.opt)} max={list(self.max)}")

    def canonical(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class Profile:
    """One optimization profile: input name -> :class:`ShapeRange`.

    Accepts a mapping (``{"x": ([1, 8], [4, 8], [16, 8])}`` or ``{"x": {"min": ..., "opt":
    ..., "max": ...}}``) and stores it as a name-sorted tuple, so equal profiles are equal
    and hashable whatever order they were written in.
    """

    shapes: tuple[tuple[str, ShapeRange], ...]

    def __post_init__(self) -> None:
        items = self.shapes.items() if isinstance(self.shapes, Mapping) else self.shapes
        normal = []
        for name, rng in items:
            if isinstance(rng, Mapping):
                rng = ShapeRange(rng.get("min", ()), rng.get("opt", ()), rng.get("max", ()))
            elif not isinstance(rng, ShapeRange):
                rng = ShapeRange(*rng)
            normal.append((str(name), rng))
        names = [n for n, _ in normal]
        if len(set(names)) != len(names):
            raise TrtcasError(f"optimization profile names an input twice: {sorted(names)}")
        object.__setattr__(self, "shapes", tuple(sorted(normal)))

    def canonical(self) -> dict[str, dict[str, list[int]]]:
        return {name: rng.canonical() for name, rng in self.shapes}


def check_profiles(parsed: ParsedNetwork, profiles: Sequence[Profile]) -> None:
    """Check profiles against the network's inputs before TensorRT sees them, so the user
    reads which input and which profile is wrong rather than a builder error code."""
    inputs = {i.name: i for i in parsed.inputs}
    dynamic = [i.name for i in parsed.inputs if i.dynamic]
    if not profiles and dynamic:
        i = inputs[dynamic[0]]
        raise TrtcasError(f"input {i.name!r} of {parsed.source} has dynamic shape {list(i.shape)}; "
                          "add an optimization profile giving its min/opt/max shapes")
    for index, profile in enumerate(profiles):
        named = dict(profile.shapes)
        for name in named:
            if name not in inputs:
                raise TrtcasError(f"optimization profile {index} names input {name!r}, which {parsed.source} "
                                  f"does not have (its inputs: {', '.join(inputs) or 'none'})")
        for name in dynamic:
            if name not in named:
                raise TrtcasError(f"optimization profile {index} gives no shapes for dynamic input {name!r} "
                                  f"{list(inputs[name].shape)} of {parsed.source}; add min/opt/max for it")
        for name, rng in profile.shapes:
            _check_range_fits(parsed.source, index, inputs[name], rng)


def _check_range_fits(source: str, index: int, inp: NetworkInput, rng: ShapeRange) -> None:
    if len(rng.min) != len(inp.shape):
        raise TrtcasError(f"optimization profile {index}: input {inp.name!r} of {source} has rank "
                          f"{len(inp.shape)} {list(inp.shape)}, the profile gives rank {len(rng.min)}")
    for axis, dim in enumerate(inp.shape):
        if dim >= 0 and not (rng.min[axis] == rng.opt[axis] == rng.max[axis] == dim):
            raise TrtcasError(f"optimization profile {index}: input {inp.name!r} of {source} has fixed size "
                              f"{dim} on axis {axis} {list(inp.shape)}; the profile must use {dim} there")


def apply_profiles(parsed: ParsedNetwork, config: Any, profiles: Sequence[Profile]) -> None:
    """Check ``profiles`` against the network and add them to the builder ``config``.

    Static inputs named in a profile are accepted when the shapes equal the fixed shape.
    """
    check_profiles(parsed, profiles)
    for index, profile in enumerate(profiles):
        opt_profile = parsed.builder.create_optimization_profile()
        for name, rng in profile.shapes:
            opt_profile.set_shape(name, rng.min, rng.opt, rng.max)
        if config.add_optimization_profile(opt_profile) < 0:
            raise TrtcasError(f"{parsed.backend.flavour} rejected optimization profile {index} for "
                              f"{parsed.source}: {_last(parsed.logger.errors()) or 'no reason logged'}")
