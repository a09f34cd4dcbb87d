"""What is in a cache directory, for ``trtcas cache stats``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from trtcas.cas.content_store import ContentStore


@dataclass(frozen=True)
class StoreStats:
    cache_dir: str
    algo: str
    blobs: int
    raw_blobs: int
    zstd_blobs: int
    disk_bytes: int
    logical_bytes: int
    actions: int
    action_bytes: int
    quarantined: int
    pins: int
    hits: int
    misses: int

    @property
    def compression_saved_bytes(self) -> int:
        return self.logical_bytes - self.disk_bytes

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None

    def to_dict(self) -> dict:
        return asdict(self) | {"compression_saved_bytes": self.compression_saved_bytes, "hit_rate": self.hit_rate}


def store_stats(store: ContentStore) -> StoreStats:
    raw = zstd = disk = logical = 0
    for blob in store.blobs.iter_blobs():
        zstd += blob.compressed
        raw += not blob.compressed
        disk += blob.stored_size
        logical += blob.digest.size
    actions = action_bytes = 0
    for entry in store.actions.iter_entries():
        actions += 1
        action_bytes += entry.stored_size
    quarantine = store.blobs.quarantine_root
    counts = store.counters.read()
    return StoreStats(
        cache_dir=str(store.root),
        algo=store.algo,
        blobs=raw + zstd,
        raw_blobs=raw,
        zstd_blobs=zstd,
        disk_bytes=disk,
        logical_bytes=logical,
        actions=actions,
        action_bytes=action_bytes,
        quarantined=sum(1 for _ in quarantine.iterdir()) if quarantine.is_dir() else 0,
        pins=len(store.pins.all()),
        hits=counts.get("ac_hit", 0),
        misses=counts.get("ac_miss", 0),
    )
