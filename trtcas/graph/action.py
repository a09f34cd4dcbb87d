"""Actions and their keys: the one place where "is this the same build?" is decided.

An action key is the digest of a canonical msgpack map (REAPI states its canonical
serialization as a rule; so do we):

    {"rule": name, "rule_version": int, "params": {...}, "inputs": {name: digest text},
     "env": {fingerprint field: value}}

Canonical means: map keys sorted at every depth; integral floats written as ints (3.0 is
3) so a TOML ``3`` and a computed ``3.0`` agree; tuples and lists alike; sets sorted;
enums by name; no paths anywhere (inputs are digests of content, never file names). The
map itself is kept beside the key so ``explain`` can say which component changed.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import PurePath
from typing import Any, Mapping

import msgpack

from trtcas.cas.digest import Digest, hash_bytes
from trtcas.errors import TrtcasError

KEY_SCHEMA = 1


class NotCanonical(TrtcasError):
    """A value that cannot go into an action key."""


def canonical(value: Any, where: str = "params") -> Any:
    """Reduce a value to msgpack-able canonical form (see module docstring)."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return int(value) if value.is_integer() and abs(value) < 2**63 else value
    if isinstance(value, Digest):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, PurePath):
        raise NotCanonical(f"{where}: a path ({value}) cannot be part of an action key; declare it as an input")
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name), f"{where}.{f.name}") for f in fields(value)}
    if isinstance(value, Mapping):
        items = {str(k): canonical(v, f"{where}.{k}") for k, v in value.items()}
        return dict(sorted(items.items()))
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v, where) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return canonical(value.item(), where)
    raise NotCanonical(f"{where}: {type(value).__name__} values cannot be part of an action key")


def canonical_bytes(value: Any) -> bytes:
    return msgpack.packb(canonical(value), use_bin_type=True)


@dataclass(frozen=True)
class InputRef:
    """Where an action input comes from: a source path, or another action's output."""

    path: str | None = None  # a source file or directory, as the user wrote it
    action: str | None = None  # producer action id
    output: str | None = None  # producer output name

    @property
    def is_source(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        return self.path if self.is_source else f"@{self.action}:{self.output}"


@dataclass(frozen=True)
class Action:
    """One node of the build graph: a rule applied to named inputs with params."""

    id: str
    rule: str
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, InputRef] = field(default_factory=dict)
    materialize: Mapping[str, str] = field(default_factory=dict)  # output name -> path under output dir

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(sorted({ref.action for ref in self.inputs.values() if not ref.is_source}))


@dataclass(frozen=True)
class ActionKey:
    """An action key and the canonical components it was computed from."""

    digest: Digest
    components: Mapping[str, Any]

    @property
    def hex(self) -> str:
        return self.digest.hex

    def __str__(self) -> str:
        return str(self.digest)


def compute_key(
    rule: str,
    rule_version: int,
    params: Mapping[str, Any],
    inputs: Mapping[str, Digest],
    env: Mapping[str, Any],
    algo: str,
) -> ActionKey:
    components = canonical({
        "schema": KEY_SCHEMA,
        "rule": rule,
        "rule_version": rule_version,
        "params": params,
        "inputs": {name: str(d) for name, d in inputs.items()},
        "env": env,
    })
    return ActionKey(hash_bytes(msgpack.packb(components, use_bin_type=True), algo), components)
