"""``huge_pages.private_buffer``: the memory direct writes come from. It must be *private*
anonymous memory (shared anonymous memory is shmem and never gets huge pages, which cut
the disk's requests to ~0.5 MiB) and aligned so huge pages can back all of it."""

import numpy as np
import pytest

from trtcas.cas.huge_pages import HUGE_PAGE, private_buffer


def _mapping_of(address: int) -> str:
    """The /proc/self/maps line of the mapping holding ``address``."""
    for line in open("/proc/self/maps"):
        span, perms = line.split()[:2]
        start, end = (int(x, 16) for x in span.split("-"))
        if start <= address < end:
            return perms
    raise AssertionError(f"{address:#x} is in no mapping")


@pytest.mark.parametrize("nbytes", [1, 4096, 3 << 20, 8 << 20])
def test_a_private_buffer_is_private_aligned_zeroed_and_writable(nbytes):
    buffer = private_buffer(nbytes)
    array = np.frombuffer(buffer, dtype=np.uint8)
    assert buffer.nbytes == nbytes and not buffer.readonly
    assert array.ctypes.data % HUGE_PAGE == 0
    assert not array.any()
    array[:] = 7
    assert bytes(buffer[-1:]) == b"\x07"
    assert _mapping_of(array.ctypes.data) == "rw-p"  # private, not shared (rw-s)
