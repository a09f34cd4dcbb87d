"""Weights mapped from a scratch file (rules.trt.mapped_weights): the same values as the
store's tensors, and still those values after their pages were given back."""

from __future__ import annotations

import time

import ml_dtypes
import numpy as np
import pytest

from trtcas.cas.content_store import ContentStore
from trtcas.rules.formats.tensors import store_tensors
from trtcas.rules.trt.mapped_weights import map_tensors, released_while_building, stacked_rows


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


def _pair_tensors(rows: int, cols: int, dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows * 31 + cols)
    return {"a.norm": rng.standard_normal(cols).astype(dtype),
            "a.fc.weight": rng.standard_normal((rows, cols)).astype(dtype),
            "a.proj.weight": rng.standard_normal((cols, rows)).astype(dtype),
            "a.gate.weight": rng.standard_normal((rows, cols)).astype(dtype)}


@pytest.mark.parametrize("rows, cols, dtype", [(24, 40, np.float16), (3, 5, ml_dtypes.bfloat16), (7, 9, np.float32)])
def test_a_back_to_back_group_is_stacked_as_a_view_of_the_mapping(tmp_path, rows, cols, dtype):
    """Named members are written with no gap (sizes that are no multiple of a page
    included), so stacking them is a view into the mapping; the values are the stack."""
    store = ContentStore(tmp_path / "cache")
    tensors = _pair_tensors(rows, cols, dtype)
    manifest = store_tensors(store.blobs, tensors.items())
    weights = map_tensors(store.blobs, manifest, tmp_path / "scratch",
                          back_to_back=[("a.fc.weight", "a.gate.weight"), ("missing", "a.norm")])
    fc, gate = weights.arrays["a.fc.weight"], weights.arrays["a.gate.weight"]
    assert gate.ctypes.data == fc.ctypes.data + fc.nbytes
    stacked = stacked_rows([fc, gate])
    assert np.shares_memory(stacked, fc) and np.shares_memory(stacked, gate) and not stacked.flags.writeable
    assert stacked.tobytes() == np.stack([tensors["a.fc.weight"], tensors["a.gate.weight"]]).tobytes()
    weights.release_resident()
    assert stacked.reshape(2 * rows, cols).tobytes() == np.concatenate([tensors["a.fc.weight"],
                                                                        tensors["a.gate.weight"]]).tobytes()
    for name, array in tensors.items():  # an incomplete group is written as single tensors
        assert weights.arrays[name].tobytes() == array.tobytes()


def test_arrays_not_back_to_back_are_stacked_as_a_copy(tmp_path):
    store = ContentStore(tmp_path / "cache")
    tensors = _pair_tensors(4, 6, np.float16)
    weights = map_tensors(store.blobs, store_tensors(store.blobs, tensors.items()), tmp_path / "scratch")
    fc, gate = weights.arrays["a.fc.weight"], weights.arrays["a.gate.weight"]
    stacked = stacked_rows([fc, gate])  # each on its own pages: not adjacent
    assert not np.shares_memory(stacked, fc) and stacked.tobytes() == np.stack([fc, gate]).tobytes()
    separate = [np.ones((2, 3), np.float16), np.zeros((2, 3), np.float16)]  # two numpy allocations
    assert not np.shares_memory(stacked_rows(separate), separate[0])
    whole = np.arange(12, dtype=np.float16)  # adjacent halves of one numpy buffer: a view too
    halves = [whole[:6].reshape(2, 3), whole[6:].reshape(2, 3)]
    assert np.shares_memory(stacked_rows(halves), whole)
    with pytest.raises(ValueError, match="equal shapes"):
        stacked_rows([np.ones((2, 3), np.float16), np.ones((3, 2), np.float16)])


def test_pages_are_given_back_as_the_process_grows_during_a_build():
    """The release runs while the block does, each time the process has grown by
    ``grown`` bytes (here: memory touched inside the block), and once more at its end."""
    calls = []
    with released_while_building(lambda: calls.append(1), every=0.001, grown=1 << 20):
        held = []
        for _ in range(8):
            held.append(np.ones(4 << 20, np.uint8))  # 4 MiB touched
            time.sleep(0.02)
        during = len(calls)
    assert during >= 4 and len(calls) == during + 1
    calls.clear()
    with released_while_building(lambda: calls.append(1), every=0.001, grown=1 << 40):
        time.sleep(0.05)
    assert calls == [1]  # nothing grew: only the release at the end
