"""Keeping a cache directory healthy: size-capped LRU eviction and verify/repair.

Both follow huggingface_hub's cache manager: first a frozen *plan* (what would be removed,
how many bytes), then its execution, so ``--dry-run`` and the real thing cannot disagree.

Recency: an action entry's mtime is refreshed on every hit; a blob is as recent as the
most recent action entry that names it (or its own mtime if none does). Blobs named inside
a tensor manifest belong to the entries naming the manifest. Eviction walks entries oldest
first; evicting an action entry also frees the blobs only it named. Action entries are
deleted before their blobs (as Bazel's disk cache does), so a concurrent reader never finds
an entry whose blobs are gone -- and if it did, that is a miss, not an error.

What is never removed:
- everything a pin names (the last build of each target), unless the pin is older than the
  cache's ``pin-max-age``: expired pins are dropped by the gc that finds them;
- everything used since ``protect_since``: the older of ``now - gc-min-age`` and the start
  of the oldest running build (``cas.leases``), plus every blob a running build noted as
  re-used. Chosen over pinning each blob as a build touches it because a build's uses are
  already visible as recency (hits refresh entry mtimes, new blobs are new files); the lease
  only has to say since when, and to name the blobs a build found already stored. The
  minimum age covers users of the cache that hold no lease (``cache get``, remote workers)
  and the moments between a lookup and its refresh;
- anything whose mtime moved between planning and deleting (it was used meanwhile).
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Mapping

import zstandard

from trtcas.cas.actioncache import entry_problem
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.cas.leases import live_leases
from trtcas.cas.manifest import TensorManifest
from trtcas.cas.needs import closure, needs_map
from trtcas.cas.settings import parse_size  # noqa: F401  (re-exported: gc sizes are typed here)

STALE_TEMP_SECONDS = 3600
# File times come from the kernel's coarse clock, a tick or so behind time.time(): an entry a
# build touched just after its lease began can carry an mtime slightly before the lease.
CLOCK_SLACK_S = 2.0
_MANIFEST_PREFIX = b'{"tensors":['
_MAX_MANIFEST_BYTES = 64 << 20


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
    expired_pins: tuple[str, ...] = ()
    protected_recent: int = 0
    mtimes: Mapping[str, float] = field(default_factory=dict, repr=False)
    owners: Mapping[str, str] = field(default_factory=dict, repr=False)  # blob -> the entry freeing it

    @property
    def bytes_freed(self) -> int:
        return self.size_before - self.size_after


@dataclass(frozen=True)
class _ActionInfo:
    key_hex: str
    mtime: float
    size: int
    blobs: tuple[Digest, ...]


def _manifest_children(store: ContentStore, digest: Digest, seen: dict[Digest, tuple[Digest, ...]]) -> tuple[Digest, ...]:
    """The tensor blobs a manifest blob names (none for any other blob); memoized in ``seen``."""
    if digest in seen:
        return seen[digest]
    children: tuple[Digest, ...] = ()
    if digest.size <= _MAX_MANIFEST_BYTES and _looks_like_manifest(store, digest):
        try:
            children = tuple(e.digest for e in TensorManifest.from_bytes(store.blobs.get_bytes(digest)).entries)
        except Exception:  # corrupt (now quarantined) or not a manifest after all: no children
            children = ()
    seen[digest] = children
    return children


def _looks_like_manifest(store: ContentStore, digest: Digest) -> bool:
    """A peek at a blob's first bytes, unverified (only a match is read and verified)."""
    blob = store.blobs.locate(digest)
    if blob is None:
        return False
    try:
        with open(blob.path, "rb") as raw:
            if not blob.compressed:
                return raw.read(len(_MANIFEST_PREFIX)) == _MANIFEST_PREFIX
            with zstandard.ZstdDecompressor().stream_reader(raw) as stream:
                return stream.read(len(_MANIFEST_PREFIX)) == _MANIFEST_PREFIX
    except (OSError, zstandard.ZstdError):
        return False


def _with_children(store: ContentStore, digests, seen) -> tuple[Digest, ...]:
    out = dict.fromkeys(digests)
    for digest in list(out):
        out.update(dict.fromkeys(_manifest_children(store, digest, seen)))
    return tuple(out)


def _load_actions(store: ContentStore, seen: dict) -> list[_ActionInfo]:
    infos = []
    for entry in store.actions.iter_entries():
        result = store.actions.read(entry.key_hex)
        blobs = _with_children(store, result.referenced(), seen) if result else ()
        infos.append(_ActionInfo(entry.key_hex, entry.mtime, entry.stored_size, blobs))
    return infos


def protect_since(store: ContentStore, now: float | None = None, min_age_s: float | None = None) -> tuple[float, frozenset[str]]:
    """The time after which anything used is kept, and the blobs running builds re-used.
    ``min_age_s`` overrides the cache's ``gc-min-age``."""
    now = time.time() if now is None else now
    leases = live_leases(store.layout.leases_root)
    min_age = store.settings.gc_min_age_s if min_age_s is None else min_age_s
    since = min([now - min_age] + [lease.started - CLOCK_SLACK_S for lease in leases])
    return since, frozenset().union(*(lease.blobs for lease in leases))


def plan_gc(store: ContentStore, max_size: int, min_age_s: float | None = None) -> GcPlan:
    """Plan LRU eviction down to ``max_size`` bytes on disk, never touching what is pinned,
    recent or in use by a running build (see the module docstring); ``min_age_s`` overrides
    the cache's ``gc-min-age``."""
    now = time.time()
    seen: dict[Digest, tuple[Digest, ...]] = {}
    actions = _load_actions(store, seen)
    blobs = {b.digest: b for b in store.blobs.iter_blobs()}
    since, leased = protect_since(store, now, min_age_s)
    pinned_keys: set[str] = set()
    pinned_blobs: set[Digest] = {d for d in blobs if str(d) in leased}
    expired: list[str] = []
    max_age = store.settings.pin_max_age_s
    for pin in store.pins.all():
        if max_age is not None and now - pin.pinned_at > max_age:
            expired.append(pin.target)
            continue
        pinned_keys |= pin.action_keys
        pinned_blobs |= set(_with_children(store, pin.blobs, seen))
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
    kept_actions = {a.key_hex for a in actions if a.key_hex in pinned_keys or a.mtime >= since}
    for info in actions:  # a kept entry keeps its blobs, whatever their own age
        if info.key_hex in kept_actions:
            pinned_blobs.update(info.blobs)
    pinned_blobs |= closure(needs, pinned_blobs)
    recent = sum(1 for a in actions if a.mtime >= since) + sum(1 for d in blobs if recency[d] >= since)
    for needed in needs.values():  # a blob another blob needs is referred to by it
        for digest in needed:
            referrers[digest] += 1

    size = sum(b.stored_size for b in blobs.values()) + sum(a.size for a in actions)
    size_before = size
    candidates: list[tuple[float, str, object]] = [
        (a.mtime, "action", a) for a in actions if a.key_hex not in kept_actions
    ] + [
        (recency[d], "blob", d) for d in blobs if referrers[d] == 0 and d not in pinned_blobs and recency[d] < since
    ]
    candidates.sort(key=lambda c: (c[0], c[1]))

    evict_actions: list[str] = []
    evict_blobs: list[Digest] = []
    mtimes: dict[str, float] = {}
    owners: dict[str, str] = {}

    def free_blob(digest: Digest) -> int:
        evict_blobs.append(digest)
        mtimes[str(digest)] = blobs[digest].mtime
        freed = blobs[digest].stored_size
        for needed in needs.get(digest, ()):  # what only this blob needed goes with it
            referrers[needed] -= 1
            if (referrers[needed] == 0 and needed in blobs and needed not in pinned_blobs
                    and needed not in evict_blobs and recency[needed] < since):
                freed += free_blob(needed)
        return freed

    for _, kind, item in candidates:
        if size <= max_size:
            break
        if kind == "action":
            evict_actions.append(item.key_hex)
            mtimes[item.key_hex] = item.mtime
            size -= item.size
            for digest in item.blobs:
                referrers[digest] -= 1
                if referrers[digest] == 0 and digest in blobs and digest not in pinned_blobs:
                    owners[str(digest)] = item.key_hex
                    size -= free_blob(digest)
        elif item not in evict_blobs:
            size -= free_blob(item)
    return GcPlan(
        max_size, size_before, size, tuple(evict_actions), tuple(evict_blobs),
        len(pinned_keys), len(pinned_blobs & blobs.keys()), tuple(expired), recent, mtimes, owners,
    )


def execute_gc(store: ContentStore, plan: GcPlan) -> int:
    """Carry out a plan, action entries first; returns bytes freed. Anything used since it
    was planned (its mtime moved, or a build started and noted it) is left alone."""
    for target in plan.expired_pins:
        store.pins.unpin(target)
    freed, kept = 0, set()
    for key in plan.evict_actions:
        if _unchanged(store.actions.entry_path(key), plan.mtimes.get(key)):
            freed += store.actions.delete(key)
        else:
            kept.add(key)
    _, leased = protect_since(store, min_age_s=0)
    for digest in plan.evict_blobs:
        text = str(digest)
        if plan.owners.get(text) in kept or text in leased:
            continue
        stored = store.blobs.locate(digest)
        if stored is not None and _unchanged(stored.path, plan.mtimes.get(text)):
            freed += store.blobs.delete(digest)
    return freed


def _unchanged(path, mtime: float | None) -> bool:
    try:
        return mtime is None or path.stat().st_mtime <= mtime
    except OSError:
        return False


def run_auto_gc(store: ContentStore) -> GcPlan | None:
    """After a build: gc down to the cache's ``max-size`` when it is set and exceeded."""
    settings = store.settings
    cap = settings.max_size
    if cap is None:
        return None
    on_disk = sum(b.stored_size for b in store.blobs.iter_blobs()) + sum(e.stored_size for e in store.actions.iter_entries())
    if on_disk <= cap and settings.pin_max_age_s is None:
        return None  # a stat per file; planning (which reads every entry) only when needed
    plan = plan_gc(store, cap)
    if plan.size_before <= cap and not plan.expired_pins:
        return None
    execute_gc(store, plan)
    return plan


@dataclass(frozen=True)
class VerifyReport:
    """What ``verify`` found (and, with repair, removed)."""

    blobs_checked: int
    bad_blobs: tuple[tuple[str, str], ...]  # (digest text, reason)
    dangling_actions: tuple[str, ...]  # action keys naming blobs that are not stored, or unsafe names
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
        if entry_problem(result) or any(str(d) in bad_set or not store.blobs.has(d) for d in result.referenced()):
            dangling.append(entry.key_hex)
            if repair:
                store.actions.delete(entry.key_hex)
    cutoff = time.time() - STALE_TEMP_SECONDS
    leftovers = [*store.blobs.iter_temp_files(), *store.layout.tmp_root.glob("prepared-*")]  # + killed builds' prepared outputs
    stale = [p for p in leftovers if p.stat().st_mtime < cutoff]
    if repair:
        for path in stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return VerifyReport(checked, tuple(bad), tuple(dangling), len(stale), repair)
