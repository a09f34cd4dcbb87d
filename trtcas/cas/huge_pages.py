"""Buffers of private memory that the kernel backs with huge pages where it can.

Why: the store's and the checkpoint writer's ``O_DIRECT`` writes (``direct_io``) go to the
disk straight from such buffers (plane ring slots, staging buffers). The block layer builds
a request from the buffer's physically contiguous pieces, at most ``max_segments`` of them
(254 on the virtio disk here): from 4 KiB pages a request carries ~0.5-1 MiB, from 2 MiB
pages it carries 4 MiB (the device's most). Measured writing 2 GB with two threads: 4101
requests at ~1.5 GB/s from 4 KiB pages, 517 requests at ~2.4 GB/s from huge pages, the same
request size the kernel's own writeback reaches.

``mmap.mmap(-1, n)`` alone is *shared* anonymous memory, which is shmem: it gets huge pages
only if ``shmem_enabled`` says so (``never`` by default), whatever ``madvise`` asks. These
buffers are private (``MAP_PRIVATE``), asked for huge pages (``MADV_HUGEPAGE``, which the
default ``madvise`` setting grants) and aligned to 2 MiB so every page of them can be one.
A kernel without transparent huge pages gives 4 KiB pages: the same bytes, slower writes.
"""

from __future__ import annotations

import mmap

import numpy as np

HUGE_PAGE = 2 << 20


def private_buffer(nbytes: int) -> memoryview:
    """``nbytes`` of zeroed private memory, 2 MiB-aligned, huge pages requested; writable.

    The mapping lives as long as the returned view (or anything made from it)."""
    mapped = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mapped.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass  # no transparent huge pages here: 4 KiB pages
    view = memoryview(mapped)
    skip = -_address(view) % HUGE_PAGE
    return view[skip : skip + nbytes]


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)
