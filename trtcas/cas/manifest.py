"""Weights stored per tensor: a manifest of name -> (dtype, shape, digest).

Stored per tensor, a fine-tune that touched three tensors stores three tensors; the
manifest itself is a small canonical JSON blob whose digest stands for the whole set. The
dtype is an opaque name here (a safetensors code such as ``F16`` or a numpy name): what it
means is the rules' business (``rules.formats.safetensors``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from trtcas.cas.digest import DEFAULT_ALGO, Digest, hash_bytes


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a weights manifest: where its bytes are in the CAS and what they mean."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    digest: Digest

    def to_wire(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "digest": str(self.digest)}

    @classmethod
    def from_wire(cls, wire: dict) -> "TensorEntry":
        return cls(wire["name"], wire["dtype"], tuple(wire["shape"]), Digest.parse(wire["digest"]))


@dataclass(frozen=True)
class TensorManifest:
    """Name -> (digest, dtype, shape) for a set of tensors, sorted by name.

    Stored per tensor, a fine-tune that touched three tensors stores three tensors; the
    manifest itself is a small canonical JSON blob whose digest stands for the whole set.
    """

    entries: tuple[TensorEntry, ...]

    @classmethod
    def of(cls, entries: Iterable[TensorEntry]) -> "TensorManifest":
        return cls(tuple(sorted(entries, key=lambda e: e.name)))

    def __getitem__(self, name: str) -> TensorEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    @property
    def total_bytes(self) -> int:
        return sum(e.digest.size for e in self.entries)

    def to_bytes(self) -> bytes:
        wire = {"tensors": [e.to_wire() for e in self.entries]}
        return json.dumps(wire, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TensorManifest":
        wire = json.loads(data)
        return cls.of(TensorEntry.from_wire(e) for e in wire["tensors"])

    def digest(self, algo: str = DEFAULT_ALGO) -> Digest:
        return hash_bytes(self.to_bytes(), algo)
