"""A network's weights laid out in one scratch file and mapped, so their memory can be given back.

TensorRT does not copy a constant's weights when the network is written: it keeps the
pointer until the build ends. During the build it copies what it needs into memory of its
own, so weights decoded into the process's memory would stay resident beside TensorRT's
copies for the whole build: one model's worth of memory more at the peak. Mapped from a file
instead, the pages TensorRT has already read can be given back while it builds
(:func:`released_while_building`: every tenth of a second, as the builder calls nothing of
ours while it copies). That is always safe: a page TensorRT reads again faults back in from
the file (from the page cache, usually), with the same bytes.

Every tensor is written whole (decoded where the store encodes it) at an offset aligned to
:data:`ALIGN`, and read back as a read-only array of the file mapping.
"""

from __future__ import annotations

import mmap
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from trtcas.cas.manifest import TensorEntry, TensorManifest
from trtcas.rules.formats.safetensors import numpy_dtype

# Tensors start on page boundaries: every dtype's alignment, and no page holds two tensors.
ALIGN = mmap.PAGESIZE
# How often pages are given back during a build: TensorRT reads ~3 GB/s of weights here, so
# at most ~0.3 GB of them are resident at a time; a call costs ~0.5 ms (0.3 GB resident).
RELEASE_EVERY_S = 0.1


@dataclass(frozen=True, eq=False)
class MappedWeights:
    """``arrays``: name -> read-only array, a view of ``mapping`` (None when no tensor has a byte)."""

    arrays: Mapping[str, np.ndarray]
    mapping: mmap.mmap | None

    def release_resident(self) -> None:
        """Give back the pages read so far (they stay in the page cache, not in this process)."""
        if self.mapping is not None and not self.mapping.closed:
            self.mapping.madvise(mmap.MADV_DONTNEED)


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def map_tensors(blobs: Any, manifest: TensorManifest, directory: Path) -> MappedWeights:
    """Write the tensors of ``manifest`` (read and verified from the store, one at a time)
    into a new nameless file in ``directory``, and map them back: the file lives as long as
    the arrays do. ``blobs`` offers ``get_view`` (a blob's content
    without a copy) or ``get_bytes``."""
    read = getattr(blobs, "get_view", None) or blobs.get_bytes
    directory.mkdir(parents=True, exist_ok=True)
    offsets: dict[str, int] = {}
    with tempfile.TemporaryFile(dir=directory, prefix="weights-") as out:
        for entry in manifest.entries:
            if entry.digest.size:
                offsets[entry.name] = _aligned(out.tell())
                out.seek(offsets[entry.name])
                out.write(read(entry.digest))
        out.flush()
        mapping = mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ) if offsets else None
    arrays = {e.name: _view(mapping, e, offsets[e.name]) if e.name in offsets else np.empty(e.shape, numpy_dtype(e.dtype))
              for e in manifest.entries}
    return MappedWeights(arrays, mapping)


def _view(mapping: mmap.mmap, entry: TensorEntry, offset: int) -> np.ndarray:
    count = int(np.prod(entry.shape, dtype=np.int64))
    return np.frombuffer(mapping, numpy_dtype(entry.dtype), count, offset).reshape(entry.shape)


@contextmanager
def released_while_building(release: Callable[[], None], every: float = RELEASE_EVERY_S) -> Iterator[None]:
    """Call ``release`` every ``every`` seconds on a thread of its own while the block runs
    (the builder holds no lock of ours: it releases the GIL), and once more when it ends."""
    done = threading.Event()

    def keep_releasing() -> None:
        while not done.wait(every):
            release()

    thread = threading.Thread(target=keep_releasing, name="trtcas-release-weights", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        release()
