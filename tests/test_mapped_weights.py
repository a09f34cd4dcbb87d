"""Weights mapped from a scratch file (rules.trt.mapped_weights): the same values as the
store's tensors, and still those values after their pages were given back."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from trtcas.cas.content_store import ContentStore
from trtcas.rules.formats.tensors import store_tensors
from trtcas.rules.trt.mapped_weights import map_tensors


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "embedding": rng.standard_normal((64, 48)).astype(np.float16),
        "norm": rng.standard_normal(48).astype(ml_dtypes.bfloat16),
        "empty": np.zeros((0, 8), np.float32),
        "index": np.arange(7, dtype=np.int32).reshape(7, 1),
    }


def test_mapped_weights_are_the_stored_tensors_after_their_pages_are_given_back(tmp_path):
    store = ContentStore(tmp_path / "cache")
    tensors = _tensors()
    manifest = store_tensors(store.blobs, tensors.items())
    weights = map_tensors(store.blobs, manifest, tmp_path / "scratch")
    for _ in range(2):
        assert set(weights.arrays) == set(tensors)
        for name, array in tensors.items():
            mapped = weights.arrays[name]
            assert mapped.dtype == array.dtype and mapped.shape == array.shape
            assert mapped.tobytes() == array.tobytes()
            assert mapped.size == 0 or mapped.ctypes.data % 4096 == 0  # each tensor on its own pages
        weights.release_resident()
    assert list((tmp_path / "scratch").iterdir()) == []  # the file has no name: it goes with the mapping


def test_no_bytes_no_mapping(tmp_path):
    store = ContentStore(tmp_path / "cache")
    manifest = store_tensors(store.blobs, [("empty", np.zeros((0,), np.float16))])
    weights = map_tensors(store.blobs, manifest, tmp_path / "scratch")
    assert weights.mapping is None and weights.arrays["empty"].shape == (0,)
    weights.release_resident()
