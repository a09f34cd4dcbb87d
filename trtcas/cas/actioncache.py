"""The action cache: action key -> what running that action produced.

An entry (like REAPI's ``ActionResult``) names output digests, not bytes; the bytes live
in the blob store. An entry whose blobs are gone (evicted, quarantined) is a miss, never a
hit that fails later; "its blobs" include the tensors a manifest output names, since a
convert whose tensor was lost cannot be placed and must run again. Entries are msgpack,
written atomically, and a hit refreshes the entry's mtime, which is what LRU garbage
collection orders by.

An entry is also checked against what its action declares (``entry_problem``): output names
must be plain file-name-like words (an entry from a remote is untrusted input, and output
names end up in messages and paths), and when the rule declares its outputs the entry must
name exactly those. An entry that fails is a miss, never a hit that fails the next action.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterator, Mapping

import msgpack

from trtcas.cas.atomic import atomic_write_bytes
from trtcas.cas.blobstore import BlobNotFound, BlobStore
from trtcas.cas.counters import Counters
from trtcas.cas.digest import Digest
from trtcas.cas.needs import manifest_tensors

log = logging.getLogger(__name__)

WIRE_VERSION = 1
# An output name is a word of a file name: no separators, not hidden, not "." or "..".
_SAFE_OUTPUT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")


class OutputsNotStored(BlobNotFound, ValueError):
    """An entry to record names blobs that are gone (evicted or quarantined meanwhile):
    retryable, like any lost blob (graph.runner)."""


def entry_problem(result: "ActionResult", expected_outputs: Collection[str] = ()) -> str | None:
    """Why ``result`` cannot be the entry of an action declaring ``expected_outputs`` (empty:
    not declared, so only the names are checked), or None if it can."""
    unsafe = sorted(repr(n) for n in result.outputs if not isinstance(n, str) or not _SAFE_OUTPUT_NAME.fullmatch(n))
    if unsafe:
        return f"it names outputs that are not plain names ({', '.join(unsafe[:3])})"
    if expected_outputs:
        missing = sorted(set(expected_outputs) - set(result.outputs))
        extra = sorted(set(result.outputs) - set(expected_outputs))
        if missing or extra:
            said = [f"lacks {', '.join(missing)}"] * bool(missing) + [f"has unknown {', '.join(extra)}"] * bool(extra)
            return f"it {' and '.join(said)} (the action declares {', '.join(sorted(expected_outputs))})"
    return None


def _hostname() -> str:
    """This host's name (``socket.gethostname``'s answer, without importing ``socket``)."""
    return os.uname().nodename


@dataclass(frozen=True)
class ActionResult:
    """Outputs and facts of one successful action run."""

    outputs: Mapping[str, Digest]
    duration_s: float = 0.0
    exit_code: int = 0
    host: str = field(default_factory=_hostname)
    created_at: float = field(default_factory=time.time)
    fingerprint: Mapping[str, object] = field(default_factory=dict)
    log: Digest | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)

    def referenced(self) -> tuple[Digest, ...]:
        """Every blob this entry needs to be a valid hit."""
        refs = tuple(self.outputs.values())
        return refs + ((self.log,) if self.log else ())

    def to_bytes(self) -> bytes:
        wire = {
            "v": WIRE_VERSION,
            "outputs": {name: str(d) for name, d in sorted(self.outputs.items())},
            "duration_s": float(self.duration_s),
            "exit_code": self.exit_code,
            "host": self.host,
            "created_at": float(self.created_at),
            "fingerprint": dict(self.fingerprint),
            "log": str(self.log) if self.log else None,
            "metadata": dict(self.metadata),
        }
        return msgpack.packb(wire, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> "ActionResult":
        wire = msgpack.unpackb(data, raw=False)
        if not isinstance(wire, dict) or wire.get("v") != WIRE_VERSION:
            raise ValueError("unknown action-cache entry format")
        return cls(
            outputs={name: Digest.parse(text) for name, text in wire["outputs"].items()},
            duration_s=wire["duration_s"],
            exit_code=wire["exit_code"],
            host=wire["host"],
            created_at=wire["created_at"],
            fingerprint=wire["fingerprint"],
            log=Digest.parse(wire["log"]) if wire["log"] else None,
            metadata=wire["metadata"],
        )


@dataclass(frozen=True)
class ActionEntry:
    """An action-cache entry as it lies on disk (for gc, stats and verify)."""

    key_hex: str
    path: Path
    mtime: float
    stored_size: int


class ActionCache:
    """``<root>/ac/<hh>/<key hex>`` -> ActionResult, backed by a BlobStore for outputs."""

    def __init__(self, blobs: BlobStore, counters: Counters | None = None):
        self.blobs = blobs
        self.layout = blobs.layout
        self.root = blobs.layout.action_root
        self.counters = counters if counters is not None else Counters(blobs.layout.counters_db)

    def _path(self, key: Digest | str) -> Path:
        hexd = key.hex if isinstance(key, Digest) else key
        return self.layout.action_entry(hexd)

    def entry_path(self, key: Digest | str) -> Path:
        """Where the entry of ``key`` lies (gc re-checks its mtime before deleting it)."""
        return self._path(key)

    def read(self, key: Digest | str) -> ActionResult | None:
        """The stored entry, without checking its blobs; corrupt entries are removed."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return ActionResult.from_bytes(data)
        except Exception as exc:  # any decode failure means a corrupt entry: a miss
            log.warning("removing corrupt action-cache entry %s (%s)", path.name, exc)
            path.unlink(missing_ok=True)
            return None

    def get(self, key: Digest, count: bool = True, outputs: Collection[str] = ()) -> ActionResult | None:
        """A hit only if the entry exists, fits the action's declared ``outputs`` (see
        ``entry_problem``; an entry that does not is removed, with a warning) and every blob
        it names is present, with the tensors of its manifests. ``count=False`` for a second
        look at the same key (after waiting for a lock), so hit rates stay true."""
        result = self.read(key)
        problem = entry_problem(result, outputs) if result is not None else None
        if problem:
            log.warning("local action-cache entry %s is not valid for its action, treated as a miss and removed: %s",
                        key.short if isinstance(key, Digest) else key[:12], problem)
            self.delete(key)
            result = None
        if result is None or not self.complete(result):
            if count:
                self.counters.add("ac_miss")
            return None
        if count:
            self.counters.add("ac_hit")
        try:
            os.utime(self._path(key))
        except OSError:
            pass
        return result

    def complete(self, result: ActionResult) -> bool:
        """Whether every blob ``result`` names is stored, and every tensor its manifests name."""
        refs = result.referenced()
        return all(self.blobs.has(d) for d in refs) and all(self.blobs.has(t) for t in manifest_tensors(self.blobs, refs))

    def put(self, key: Digest, result: ActionResult) -> None:
        problem = entry_problem(result)
        if problem:
            raise ValueError(f"refusing to cache action {key.short}: {problem}")
        missing = [str(d) for d in result.referenced() if not self.blobs.has(d)]
        if missing:  # evicted or quarantined while the action ran: a retry stores them again
            raise OutputsNotStored(f"refusing to cache an action whose outputs are no longer stored: {', '.join(missing)}")
        atomic_write_bytes(self._path(key), result.to_bytes())

    def delete(self, key: Digest | str) -> int:
        path = self._path(key)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return 0

    def iter_entries(self) -> Iterator[ActionEntry]:
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard):
                if entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                yield ActionEntry(entry.name, Path(entry.path), st.st_mtime, st.st_size)
