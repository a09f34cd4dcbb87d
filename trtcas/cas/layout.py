"""Every path under a cache directory, in one place.

Modules never join strings onto the cache root themselves: they ask the layout. That keeps
the on-disk format one readable page (and one place to change), and lets ``gc``, ``verify``
and ``stats`` walk exactly what the writers write. dvc-objects' ``oid_to_path`` is the model.

    <root>/store.json                   algorithm and layout version
    <root>/config.json                  settings of this cache (cas.settings: max-size, ...)
    <root>/leases/<host>-<pid>-<id>.json  builds running now (gc keeps what they use)
    <root>/cas/<algo>/<hh>/<hex>[.zst]  blobs
    <root>/ac/<hh>/<key hex>            action cache entries
    <root>/pins/<slug>-<hash>.json      what each target's last build used (pins.pin_file_name)
    <root>/history/<target>/{last,previous}.json
    <root>/logs/<target>/*.json         execution logs and traces of recent builds
    <root>/locks/<hh>/<key hex>.lock    per-action-key build locks
    <root>/tmp/                         scratch dirs of running actions, temp blobs
    <root>/quarantine/                  blobs that failed verification
    <root>/statcache.sqlite, stats.sqlite
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LAYOUT_VERSION = 1


@dataclass(frozen=True)
class CacheLayout:
    """The paths of one cache directory (pure: creates nothing)."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "CacheLayout":
        return cls(Path(root))

    @property
    def store_file(self) -> Path:
        return self.root / "store.json"

    @property
    def settings_file(self) -> Path:
        return self.root / "config.json"

    @property
    def leases_root(self) -> Path:
        return self.root / "leases"

    def blob_root(self, algo: str) -> Path:
        return self.root / "cas" / algo

    def blob(self, algo: str, hex_digest: str) -> Path:
        return self.blob_root(algo) / hex_digest[:2] / hex_digest

    @property
    def action_root(self) -> Path:
        return self.root / "ac"

    def action_entry(self, hex_key: str) -> Path:
        return self.action_root / hex_key[:2] / hex_key

    @property
    def pins_root(self) -> Path:
        return self.root / "pins"

    def history_dir(self, target_slug: str) -> Path:
        return self.root / "history" / target_slug

    def logs_dir(self, target_slug: str) -> Path:
        return self.root / "logs" / target_slug

    def lock(self, hex_key: str) -> Path:
        return self.root / "locks" / hex_key[:2] / f"{hex_key}.lock"

    @property
    def tmp_root(self) -> Path:
        return self.root / "tmp"

    @property
    def quarantine_root(self) -> Path:
        return self.root / "quarantine"

    @property
    def statcache_db(self) -> Path:
        return self.root / "statcache.sqlite"

    @property
    def counters_db(self) -> Path:
        return self.root / "stats.sqlite"
