"""Large allocations of this process served by their own mappings, so freed ones go back at once.

TensorRT's builder allocates and frees its copies of the weights (a model's worth, more than
once) with plain ``malloc``. glibc raises its mmap threshold after such frees (up to 32 MB),
so later buffers of a few MB come from the heap, whose freed middle it keeps: a build left
most of a model's worth resident after it ended, and freed copies were not reused for new
ones of another size, which raised the peak. A fixed threshold of :data:`MMAP_THRESHOLD`
makes every large block a mapping of its own, unmapped when freed. The network action sets
it too: what it decodes and TensorRT copies while parsing would otherwise stay in the heap
under the engine build's peak. This is a process-wide setting (``mallopt``); it changes
where memory comes from, never what is computed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's own default, kept fixed instead of rising


@functools.cache
def map_large_allocations() -> bool:
    """Set the fixed threshold once per process; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        return False
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
