"""Tensors in the store through the weight codecs: byte planes, XOR deltas against a parent,
and what gc and corruption do to them (cas/blobstore.py, cas/needs.py, cas/gc.py)."""

import os

import ml_dtypes
import numpy as np
import pytest

from trtcas.cas.blobstore import MAX_CHAIN_DEPTH, BlobNotFound
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import hash_bytes
from trtcas.cas.gc import execute_gc, plan_gc
from trtcas.cas.manifest import TensorEntry, TensorManifest
from trtcas.cas.stats import store_stats

ELEMENTS = 256 << 10  # 512 KiB of bf16: large enough for the codecs to engage


def weights(seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal(ELEMENTS, dtype=np.float32) * 0.02
    return values.astype(ml_dtypes.bfloat16)


def finetuned(parent: np.ndarray, seed: int, noise: float = 1e-3) -> np.ndarray:
    rng = np.random.default_rng([seed, 1])
    values = parent.astype(np.float32) * (1 + noise * rng.standard_normal(parent.size, dtype=np.float32))
    return values.astype(ml_dtypes.bfloat16)


def as_bytes(array: np.ndarray) -> memoryview:
    return memoryview(array.view(np.uint8))


@pytest.fixture
def store(tmp_path):
    return ContentStore(tmp_path / "cache")


def overwrite_byte(path, offset: int) -> None:
    """Flip one byte of a (read-only) blob file in place, keeping its size."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_byteplanes_shrink_bf16_weights_and_round_trip(store, tmp_path):
    base = weights()
    digest = store.blobs.put_tensor(as_bytes(base), "BF16")
    blob = store.blobs.locate(digest)
    assert digest == hash_bytes(as_bytes(base), store.algo)  # keyed by content, not encoding
    assert blob.frame and blob.stored_size <= 0.85 * base.nbytes
    assert store.blobs.get_bytes(digest) == base.tobytes()


def test_delta_round_trips_bit_exactly_every_way(store, tmp_path):
    base, tuned = weights(), None
    parent = store.blobs.put_tensor(as_bytes(base), "BF16")
    tuned = finetuned(base, 1)
    child = store.blobs.put_tensor(as_bytes(tuned), "BF16", parent=parent)
    blob = store.blobs.locate(child)
    assert store.blobs.parent_of(blob) == (parent, 0)
    assert blob.stored_size < 0.25 * tuned.nbytes  # a delta, far smaller than byte planes
    expected = tuned.tobytes()
    assert store.blobs.get_bytes(child) == expected
    with store.blobs.open(child) as stream:
        assert stream.read() == expected
    assert bytes(store.blobs.content_view(child)) == expected
    assert store.blobs.materialize(child, tmp_path / "out.bin") == "decode"
    assert (tmp_path / "out.bin").read_bytes() == expected
    assert store.blobs.verify(child)
    stats = store_stats(store)
    assert stats.delta_blobs == 1 and stats.delta_saved_bytes > 0.75 * tuned.nbytes


def test_unrelated_parent_is_not_used(store):
    parent = store.blobs.put_tensor(as_bytes(weights(0)), "BF16")
    other = store.blobs.put_tensor(as_bytes(weights(5)), "BF16", parent=parent)
    assert store.blobs.parent_of(store.blobs.locate(other)) is None  # a delta would not pay


def test_delta_chains_stay_bounded(store):
    current = weights()
    digest = store.blobs.put_tensor(as_bytes(current), "BF16")
    versions = [(digest, current)]
    for step in range(MAX_CHAIN_DEPTH + 3):
        current = finetuned(current, step + 10)
        digest = store.blobs.put_tensor(as_bytes(current), "BF16", parent=digest)
        versions.append((digest, current))
    for digest, array in versions:
        upstream = store.blobs.parent_of(store.blobs.locate(digest))
        assert upstream is None or upstream[1] + 1 <= MAX_CHAIN_DEPTH
        assert store.blobs.get_bytes(digest) == array.tobytes()


def test_corrupt_delta_is_quarantined_and_never_served(store):
    base = weights()
    parent = store.blobs.put_tensor(as_bytes(base), "BF16")
    child = store.blobs.put_tensor(as_bytes(finetuned(base, 1)), "BF16", parent=parent)
    path = store.blobs.locate(child).path
    overwrite_byte(path, path.stat().st_size - 100)  # inside the planes
    with pytest.raises(BlobNotFound):
        store.blobs.get_bytes(child)
    assert not path.exists() and any(store.blobs.quarantine_root.iterdir())
    assert not store.blobs.has(child)
    assert store.blobs.get_bytes(parent) == base.tobytes()  # the parent is untouched


def test_corrupt_parent_is_quarantined_and_its_delta_becomes_a_miss(store):
    base = weights()
    parent = store.blobs.put_tensor(as_bytes(base), "BF16")
    tuned = finetuned(base, 1)
    child = store.blobs.put_tensor(as_bytes(tuned), "BF16", parent=parent)
    parent_path = store.blobs.locate(parent).path
    overwrite_byte(parent_path, parent_path.stat().st_size - 100)
    with pytest.raises(BlobNotFound):
        store.blobs.get_bytes(child)  # never decoded against bad bytes
    assert not parent_path.exists()
    assert not store.blobs.has(child)  # unreadable, so a build stores it again
    again = store.blobs.put_tensor(as_bytes(tuned), "BF16")
    assert again == child and store.blobs.get_bytes(child) == tuned.tobytes()


def manifest_of(store, name, digest, nbytes):
    manifest = TensorManifest.of([TensorEntry(name, "BF16", (nbytes // 2,), digest)])
    return store.blobs.put_bytes(manifest.to_bytes())


def test_gc_keeps_a_parent_only_while_a_kept_delta_needs_it(store):
    base = weights()
    parent = store.blobs.put_tensor(as_bytes(base), "BF16")
    store.pins.pin("model", [], [manifest_of(store, "w", parent, base.nbytes)])
    tuned = finetuned(base, 1)
    child = store.blobs.put_tensor(as_bytes(tuned), "BF16", parent=parent)
    store.pins.pin("model", [], [manifest_of(store, "w", child, tuned.nbytes)])  # the next build

    execute_gc(store, plan_gc(store, 0, min_age_s=0))  # the old pin is gone: only the delta needs the parent
    assert store.blobs.has(parent) and store.blobs.get_bytes(child) == tuned.tobytes()

    other = weights(7)
    fresh = store.blobs.put_tensor(as_bytes(other), "BF16")
    store.pins.pin("model", [], [manifest_of(store, "w", fresh, other.nbytes)])
    plan = plan_gc(store, 0, min_age_s=0)
    assert {parent, child} <= set(plan.evict_blobs) and fresh not in plan.evict_blobs
    execute_gc(store, plan)
    assert not store.blobs.locate(parent) and not store.blobs.locate(child)
    assert store.blobs.get_bytes(fresh) == other.tobytes()
