"""A TensorRT network with what keeps it alive (``ParsedNetwork``), and optimization
profiles checked against its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from trtcas.errors import TrtcasError
from trtcas.rules.messages import last_error
from trtcas.rules.trt.backend import Backend

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
            if not (isinstance(rng, (Mapping, ShapeRange)) or (isinstance(rng, (list, tuple)) and len(rng) == 3)):
                raise TrtcasError(f"optimization profile input {name!r}: give {{ min = [...], opt = [...], max = [...] }}, "
                                  f"not {rng!r}")
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
                              f"{parsed.source}: {last_error(parsed.logger.errors()) or 'no reason logged'}")
