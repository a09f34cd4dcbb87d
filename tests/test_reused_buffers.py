"""``reused_buffers``: inside ``reusing()`` a buffer is handed out again only once every
view of the array that held it is gone, never while something may still read it."""

import gc

import numpy as np

from trtcas.cas import reused_buffers
from trtcas.cas.reused_buffers import MIN_BYTES, empty, reusing

SIZE = 2 * MIN_BYTES


def _address(array: np.ndarray) -> int:
    return array.ctypes.data


def test_a_buffer_comes_back_only_after_its_last_view_is_gone():
    with reusing():
        first = empty(SIZE)
        first[:] = 7
        view = memoryview(first[10:]).toreadonly()  # what a reader of a decoded tensor holds
        at = _address(first)
        del first
        gc.collect()
        second = empty(SIZE)
        assert _address(second) != at  # the view still reads the first buffer
        assert bytes(view[:3]) == b"\x07\x07\x07"
        del view
        gc.collect()
        third = empty(SIZE)
        assert _address(third) == at  # now it is reused


def test_outside_the_block_and_for_small_sizes_it_is_numpy_empty():
    outside = empty(SIZE)
    small_inside = None
    with reusing():
        small_inside = empty(MIN_BYTES - 1)
    for array in (outside, small_inside):
        assert array.dtype == np.uint8 and array.flags.owndata  # numpy's own allocation


def test_at_most_keep_bytes_wait_and_nothing_waits_after_the_block():
    with reusing(keep_bytes=SIZE):
        arrays = [empty(SIZE) for _ in range(3)]
        for array in arrays:
            array[:] = 9  # a reused buffer still holds this; a fresh one is zeroed
        del arrays, array
        gc.collect()
        pool = reused_buffers._active
        assert pool._kept == SIZE  # one kept, two let go
        again = [empty(SIZE) for _ in range(2)]
        assert sorted(int(a[0]) for a in again) == [0, 9]
    assert reused_buffers._active is None and pool._kept == 0 and not pool._free
