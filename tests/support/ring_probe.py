"""Run by tests/test_codecs.py in a process of its own: how much of a later action's freed
buffers stays resident after a plane ring was used (``ring``) or after a freed 24 MB
malloc block (``malloc``, what malloc-based plane buffers did). Prints MB kept."""

import gc
import sys

import numpy as np

from trtcas.cas.codecs.planes import PlaneRing


def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024

if sys.argv[1] == "ring":
    ring = PlaneRing(3)
    for index in range(3):
        ring.take(index, 8 << 20)[:] = 1
    del ring
else:  # what the arena did when it came from malloc: a freed 24 MB block
    block = np.ones(24 << 20, np.uint8)
    del block
gc.collect()
base = rss_mb()
keep, bufs = [], []
for _ in range(40):  # decoded tensors of a later action, with small long-lived objects between them
    bufs.append(np.ones(16 << 20, np.uint8))
    keep.append(np.ones(64 << 10, np.uint8))
del bufs
gc.collect()
print(rss_mb() - base)
