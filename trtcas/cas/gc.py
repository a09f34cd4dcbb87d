"""Keeping a cache directory healthy: size-capped LRU eviction and verify/repair.

Both follow huggingface_hub's cache manager: first a frozen *plan* (what would be removed,
how many bytes), then its execution, so ``--dry-run`` and the real thing cannot disagree.

Recency: an action entry's mtime is refreshed on every hit; a blob is as recent as the
most recent action entry that names it (or its own mtime if none does). Eviction walks
entries oldest first; evicting an action entry also frees the blobs only it named.
Action entries are deleted before their blobs (as Bazel's disk cache does), so a
concurrent reader never finds an entry whose blobs are gone -- and if it did, that is a
miss, not an error. Everything named by a pin (the last build of each target) is kept.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass

from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.cas.needs import closure, needs_map
from trtcas.errors import TrtcasError

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
STALE_TEMP_SECONDS = 3600


def parse_size(text: str) -> int:
    """``"50G"``, ``"1.5GiB"``, ``"200M"``, ``"1024"`` -> bytes (binary units)."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise TrtcasError(f"bad size {text!r}: use a number with an optional K, M, G or T suffix, e.g. 50G")
    return int(float(match[1]) * _UNITS[match[2].upper()])


@dataclass(frozen=True)
class GcPlan:
    """What ``execute_gc`` will remove to bring the store under ``max_size``."""

    max_size: int
    size_before: int
    size_after: int
    evict_actions: tuple[str, ...]
    evict_blobs: tuple[Digest, ...]
    pinned_actions: int
    pinned_blobs: int

    @property
    def bytes_freed(self) -> int:
        return self.size_before - self.size_after


@dataclass(frozen=True)
class _ActionInfo:
    key_hex: str
    mtime: float
    size: int
    blobs: tuple[Digest, ...]


def _load_actions(store: ContentStore) -> list[_ActionInfo]:
    infos = []
    for entry in store.actions.iter_entries():
        result = store.actions.read(entry.key_hex)
        blobs = result.referenced() if result else ()
        infos.append(_ActionInfo(entry.key_hex, entry.mtime, entry.stored_size, blobs))
    return infos


def plan_gc(store: ContentStore, max_size: int) -> GcPlan:
    """Plan LRU eviction down to ``max_size`` bytes on disk, never touching pinned items."""
    actions = _load_actions(store)
    blobs = {b.digest: b for b in store.blobs.iter_blobs()}
    pinned_keys: set[str] = set()
    pinned_blobs: set[Digest] = set()
    for pin in store.pins.all():
        pinned_keys |= pin.action_keys
        pinned_blobs |= pin.blobs
    for info in actions:
        if info.key_hex in pinned_keys:
            pinned_blobs.update(info.blobs)
    needs = needs_map(store.blobs, blobs.values())  # a delta's parent, a manifest's tensors
    pinned_blobs |= closure(needs, pinned_blobs)

    referrers: dict[Digest, int] = defaultdict(int)
    recency: dict[Digest, float] = {d: b.mtime for d, b in blobs.items()}
    for info in actions:
        for digest in info.blobs:
            referrers[digest] += 1
            recency[digest] = max(recency.get(digest, 0.0), info.mtime)
    for needed in needs.values():
        for digest in needed:
            referrers[digest] += 1

    size = sum(b.stored_size for b in blobs.values()) + sum(a.size for a in actions)
    size_before = size
    candidates: list[tuple[float, str, object]] = [
        (a.mtime, "action", a) for a in actions if a.key_hex not in pinned_keys
    ] + [
        (recency[d], "blob", d) for d in blobs if referrers[d] == 0 and d not in pinned_blobs
    ]
    candidates.sort(key=lambda c: (c[0], c[1]))

    evict_actions: list[str] = []
    evict_blobs: list[Digest] = []

    def free_blob(digest: Digest) -> int:
        evict_blobs.append(digest)
        freed = blobs[digest].stored_size
        for needed in needs.get(digest, ()):  # what only this blob needed goes with it
            referrers[needed] -= 1
            if referrers[needed] == 0 and needed in blobs and needed not in pinned_blobs and needed not in evict_blobs:
                freed += free_blob(needed)
        return freed

    for _, kind, item in candidates:
        if size <= max_size:
            break
        if kind == "action":
            evict_actions.append(item.key_hex)
            size -= item.size
            for digest in item.blobs:
                referrers[digest] -= 1
                if referrers[digest] == 0 and digest in blobs and digest not in pinned_blobs:
                    size -= free_blob(digest)
        elif item not in evict_blobs:
            size -= free_blob(item)
    return GcPlan(
        max_size, size_before, size, tuple(evict_actions), tuple(evict_blobs),
        len(pinned_keys), len(pinned_blobs & blobs.keys()),
    )


def execute_gc(store: ContentStore, plan: GcPlan) -> int:
    """Carry out a plan, action entries first; returns bytes freed."""
    freed = sum(store.actions.delete(key) for key in plan.evict_actions)
    freed += sum(store.blobs.delete(digest) for digest in plan.evict_blobs)
    return freed


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found (and, with repair, removed)."""

    blobs_checked: int
    bad_blobs: tuple[tuple[str, str], ...]  # (digest text, reason)
    dangling_actions: tuple[str, ...]  # action keys naming blobs that are not stored
    stale_temp_files: int
    repaired: bool

    @property
    def ok(self) -> bool:
        return not self.bad_blobs and not self.dangling_actions


def verify_store(store: ContentStore, repair: bool = False, progress=None) -> VerifyReport:
    """Re-hash every blob from its bytes; with ``repair``, quarantine bad blobs, drop action
    entries that name missing blobs, and delete temp files of writers that died."""
    bad = []
    checked = 0
    for blob in store.blobs.iter_blobs():
        checked += 1
        problem = store.blobs.check(blob, trust_statcache=False)
        if problem:
            bad.append((str(blob.digest), problem))
            if repair:
                store.blobs.quarantine(blob.digest, blob.path, problem)
        if progress:
            progress(blob.stored_size)
    bad_set = {text for text, _ in bad}
    dangling = []
    for entry in store.actions.iter_entries():
        result = store.actions.read(entry.key_hex)
        if result is None:
            continue
        if any(str(d) in bad_set or not store.blobs.has(d) for d in result.referenced()):
            dangling.append(entry.key_hex)
            if repair:
                store.actions.delete(entry.key_hex)
    cutoff = time.time() - STALE_TEMP_SECONDS
    stale = [p for p in store.blobs.iter_temp_files() if p.stat().st_mtime < cutoff]
    if repair:
        for path in stale:
            path.unlink(missing_ok=True)
    return VerifyReport(checked, tuple(bad), tuple(dangling), len(stale), repair)
