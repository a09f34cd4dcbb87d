"""Content digests: what a blob *is*, independent of where it lives.

A digest carries its algorithm and size alongside the hash (as Bazel's REAPI ``Digest``
does), so a store can check a length before reading and a reader can tell a truncated blob
from a different one. The text form ``blake3:<hex>/<size>`` is what users see and paste.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

import blake3

from trtcas.errors import TrtcasError

DEFAULT_ALGO = "blake3"
ALGOS = ("blake3", "sha256")
CHUNK = 1 << 20
# Above this size blake3's multithreaded mmap path beats single-threaded streaming.
PARALLEL_HASH_THRESHOLD = 8 << 20

_HEX_LEN = {"blake3": 64, "sha256": 64}
_TEXT_RE = re.compile(r"^(?P<algo>[a-z0-9]+):(?P<hex>[0-9a-f]+)/(?P<size>\d+)$")


class BadDigest(TrtcasError):
    """A digest string that cannot be parsed, or names an unknown algorithm."""


@dataclass(frozen=True, order=True)
class Digest:
    """A content address: algorithm, lowercase hex hash, and byte size."""

    algo: str
    hex: str
    size: int

    def __str__(self) -> str:
        return f"{self.algo}:{self.hex}/{self.size}"

    @property
    def short(self) -> str:
        """A 12-hex-digit form for logs and explanations."""
        return f"{self.algo}:{self.hex[:12]}"

    @classmethod
    def parse(cls, text: str) -> "Digest":
        match = _TEXT_RE.match(text.strip())
        if not match:
            raise BadDigest(f"not a digest: {text!r} (expected ALGO:HEX/SIZE, e.g. blake3:ab12.../1024)")
        algo, hexd, size = match["algo"], match["hex"], int(match["size"])
        check_algo(algo)
        if len(hexd) != _HEX_LEN[algo]:
            raise BadDigest(f"not a digest: {text!r} ({algo} hashes have {_HEX_LEN[algo]} hex digits)")
        return cls(algo, hexd, size)


def check_algo(algo: str) -> str:
    if algo not in ALGOS:
        raise BadDigest(f"unknown hash algorithm {algo!r}; use one of {', '.join(ALGOS)}")
    return algo


def new_hasher(algo: str = DEFAULT_ALGO, parallel: bool = False):
    """A hashlib-style object (``update``/``hexdigest``) for ``algo``."""
    check_algo(algo)
    if algo == "blake3":
        return blake3.blake3(max_threads=blake3.blake3.AUTO if parallel else 1)
    return hashlib.sha256()


def hash_bytes(data: bytes | memoryview, algo: str = DEFAULT_ALGO) -> Digest:
    hasher = new_hasher(algo, parallel=len(data) >= PARALLEL_HASH_THRESHOLD)
    hasher.update(data)
    return Digest(algo, hasher.hexdigest(), len(data))


def hash_stream(stream: BinaryIO, algo: str = DEFAULT_ALGO) -> Digest:
    """Hash a readable stream in bounded memory."""
    hasher = new_hasher(algo)
    size = 0
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        hasher.update(chunk)
        size += len(chunk)
    return Digest(algo, hasher.hexdigest(), size)


def hash_file(path: str | os.PathLike, algo: str = DEFAULT_ALGO) -> Digest:
    """Hash a file; large blake3 files go through mmap on all cores (memory stays bounded:
    pages are the page cache's, not ours)."""
    path = Path(path)
    size = path.stat().st_size
    if algo == "blake3" and size >= PARALLEL_HASH_THRESHOLD:
        hasher = new_hasher(algo, parallel=True)
        hasher.update_mmap(path)
        return Digest(algo, hasher.hexdigest(), size)
    with open(path, "rb") as stream:
        return hash_stream(stream, algo)


class BadSafetensors(TrtcasError):
    """A ``.safetensors`` file whose header or extent is not what the format says."""


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


@dataclass(frozen=True)
class SafetensorsLayout:
    """Where each tensor's bytes sit inside a ``.safetensors`` file."""

    data_start: int
    tensors: dict  # name -> (dtype, shape, begin, end), offsets absolute in the file
    metadata: dict


def read_safetensors_layout(path: str | os.PathLike) -> SafetensorsLayout:
    """Parse the safetensors header (u64 little-endian length + JSON) and check extents,
    so a truncated download is reported by name instead of hashing garbage."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as stream:
            head = stream.read(8)
            if len(head) < 8:
                raise BadSafetensors(f"{path}: truncated safetensors file (no header); re-download or re-save it")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > file_size - 8 or header_len > 100 << 20:
                raise BadSafetensors(f"{path}: safetensors header length {header_len} exceeds the file; the file is truncated or not safetensors")
            header = json.loads(stream.read(header_len))
    except (OSError, ValueError) as exc:
        if isinstance(exc, BadSafetensors):
            raise
        raise BadSafetensors(f"{path}: cannot read safetensors header ({exc})") from exc
    data_start = 8 + header_len
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadSafetensors(f"{path}: malformed header entry for tensor {name!r}") from exc
        if not 0 <= begin <= end or data_start + end > file_size:
            raise BadSafetensors(
                f"{path}: tensor {name!r} extends past the end of the file ({data_start + end} > {file_size} bytes); "
                "the file is truncated, re-download or re-save it"
            )
        tensors[name] = (dtype, shape, data_start + begin, data_start + end)
    return SafetensorsLayout(data_start, tensors, metadata)


def hash_safetensors(path: str | os.PathLike, algo: str = DEFAULT_ALGO) -> TensorManifest:
    """Per-tensor digests of a ``.safetensors`` file, reading tensor bytes through mmap."""
    layout = read_safetensors_layout(path)
    entries = []
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        view = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            for name, (dtype, shape, begin, end) in layout.tensors.items():
                with memoryview(view)[begin:end] as span:
                    entries.append(TensorEntry(name, dtype, shape, hash_bytes(span, algo)))
        finally:
            if size:
                view.close()
    return TensorManifest.of(entries)
