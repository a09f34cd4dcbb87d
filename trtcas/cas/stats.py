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
    codec_blobs: int = 0  # tensors stored as codec frames (byte planes or deltas)
    delta_blobs: int = 0  # of those, XOR deltas against a parent tensor
    delta_logical_bytes: int = 0
    delta_disk_bytes: int = 0

    @property
    def delta_saved_bytes(self) -> int:
        """What storing fine-tuned tensors as deltas saved (their content minus their files)."""
        return self.delta_logical_bytes - self.delta_disk_bytes

    @property
    def compression_saved_bytes(self) -> int:
        return self.logical_bytes - self.disk_bytes

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None

    def to_dict(self) -> dict:
        return asdict(self) | {"compression_saved_bytes": self.compression_saved_bytes, "hit_rate": self.hit_rate,
                               "delta_saved_bytes": self.delta_saved_bytes}


def store_stats(store: ContentStore) -> StoreStats:
    raw = zstd = disk = logical = frames = deltas = delta_logical = delta_disk = 0
    for blob in store.blobs.iter_blobs():
        zstd += blob.compressed
        frames += blob.frame
        raw += not (blob.compressed or blob.frame)
        disk += blob.stored_size
        logical += blob.digest.size
        if blob.frame and store.blobs.parent_of(blob) is not None:
            deltas += 1
            delta_logical += blob.digest.size
            delta_disk += blob.stored_size
    actions = action_bytes = 0
    for entry in store.actions.iter_entries():
        actions += 1
        action_bytes += entry.stored_size
    quarantine = store.blobs.quarantine_root
    counts = store.counters.read()
    return StoreStats(
        cache_dir=str(store.root),
        algo=store.algo,
        blobs=raw + zstd + frames,
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
        codec_blobs=frames,
        delta_blobs=deltas,
        delta_logical_bytes=delta_logical,
        delta_disk_bytes=delta_disk,
    )
