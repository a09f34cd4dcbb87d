"""A network's weights laid out in one scratch file and mapped, so their memory can be given back.

TensorRT does not copy a constant's weights when the network is written: it keeps the
pointer until the build ends. During the build it copies what it needs into memory of its
own, so weights decoded into the process's memory would stay resident beside TensorRT's
copies for the whole build: one model's worth of memory more at the peak. Mapped from a file
instead, the pages TensorRT has already read can be given back while it builds
(:func:`released_while_building`: each time the process has grown by 64 MB, as the builder
calls nothing of ours while it copies). That is always safe: a page TensorRT reads again
faults back in from the file (from the page cache, usually), with the same bytes.

Every tensor is written whole (decoded where the store encodes it) at an offset aligned to
:data:`ALIGN`, and read back as a read-only array of the file mapping. Tensors a network
writer will stack into one constant (a gated MLP's two projections) can be written back to
back, so :func:`stacked_rows` hands TensorRT the stack as a view, not a copy.
"""

from __future__ import annotations

import mmap
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from trtcas.cas.manifest import TensorEntry, TensorManifest
from trtcas.rules.formats.safetensors import numpy_dtype

# Tensors start on page boundaries: every dtype's alignment, and no page holds two tensors.
ALIGN = mmap.PAGESIZE
# During a build the pages TensorRT has read are given back once the process has grown by
# RELEASE_WHEN_GROWN, checked every CHECK_EVERY_S: TensorRT reads the weights in bursts of
# ~13 GB/s here (0.8 GB of a 1.1 GB model in 60 ms), so a fixed 0.1 s timer let most of a
# model be resident at the peak. A check costs ~20 us; a release ~0.5 ms per 0.3 GB resident.
CHECK_EVERY_S = 0.005
RELEASE_WHEN_GROWN = 64 << 20
RELEASE_BLIND_EVERY_S = 0.1


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


def map_tensors(blobs: Any, manifest: TensorManifest, directory: Path,
                back_to_back: Iterable[Sequence[str]] = ()) -> MappedWeights:
    """Write the tensors of ``manifest`` (read and verified from the store, one at a time)
    into a new nameless file in ``directory``, and map them back: the file lives as long as
    the arrays do. ``blobs`` offers ``get_view`` (a blob's content
    without a copy) or ``get_bytes``. Each group of names in ``back_to_back`` is written
    in its order with no gap between its tensors (the first aligned), where the manifest
    holds them all."""
    read = getattr(blobs, "get_view", None) or blobs.get_bytes
    directory.mkdir(parents=True, exist_ok=True)
    offsets: dict[str, int] = {}
    with tempfile.TemporaryFile(dir=directory, prefix="weights-") as out:
        for group in _write_order(manifest, back_to_back):
            out.seek(_aligned(out.tell()))
            for entry in group:
                offsets[entry.name] = out.tell()
                out.write(read(entry.digest))
        out.flush()
        mapping = mmap.mmap(out.fileno(), 0, access=mmap.ACCESS_READ) if offsets else None
    arrays = {e.name: _view(mapping, e, offsets[e.name]) if e.name in offsets else np.empty(e.shape, numpy_dtype(e.dtype))
              for e in manifest.entries}
    return MappedWeights(arrays, mapping)


def _write_order(manifest: TensorManifest, back_to_back: Iterable[Sequence[str]]) -> list[list[TensorEntry]]:
    """The tensors with bytes, as runs written without gaps: each ``back_to_back`` group
    whose members all have bytes (and are in no earlier group), at the place of its
    member the manifest lists first; every other tensor alone."""
    by_name = {e.name: e for e in manifest.entries if e.digest.size}
    group_of: dict[str, list[TensorEntry]] = {}
    for names in back_to_back:
        if len(set(names)) == len(names) and all(n in by_name and n not in group_of for n in names):
            run = [by_name[n] for n in names]
            group_of.update((n, run) for n in names)
    order, placed = [], set()
    for entry in by_name.values():
        run = group_of.get(entry.name, [entry])
        if entry.name not in placed:
            order.append(run)
            placed.update(e.name for e in run)
    return order


def stacked_rows(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``arrays`` (equal shapes and dtypes) stacked on a new first axis: a read-only view
    when they lie back to back in one buffer (as :func:`map_tensors` writes a
    ``back_to_back`` group), else a copy. A view spans memory its first array's buffer
    owns, and keeps that buffer alive."""
    first = arrays[0]
    if any(a.shape != first.shape or a.dtype != first.dtype for a in arrays):
        raise ValueError("stacked arrays must have equal shapes and dtypes")
    if _back_to_back(arrays):
        return np.lib.stride_tricks.as_strided(first, (len(arrays), *first.shape),
                                               (first.nbytes, *first.strides), writeable=False)
    return np.stack(arrays)


def _back_to_back(arrays: Sequence[np.ndarray]) -> bool:
    root = _root_buffer(arrays[0])
    start = arrays[0].__array_interface__["data"][0]
    for index, array in enumerate(arrays):
        if not array.flags.c_contiguous or _root_buffer(array) is not root:
            return False
        if array.__array_interface__["data"][0] != start + index * arrays[0].nbytes:
            return False
    return True


def _root_buffer(array: np.ndarray) -> Any:
    """The object owning ``array``'s memory: a mapping or other buffer, or the numpy array
    that allocated it."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    if array.base is None:
        return array
    return array.base.obj if isinstance(array.base, memoryview) else array.base


def _view(mapping: mmap.mmap, entry: TensorEntry, offset: int) -> np.ndarray:
    count = int(np.prod(entry.shape, dtype=np.int64))
    return np.frombuffer(mapping, numpy_dtype(entry.dtype), count, offset).reshape(entry.shape)


@contextmanager
def released_while_building(release: Callable[[], None], every: float = CHECK_EVERY_S,
                            grown: int = RELEASE_WHEN_GROWN) -> Iterator[None]:
    """While the block runs, call ``release`` whenever the process's resident memory has
    grown by ``grown`` bytes since the last call (checked every ``every`` seconds, on a
    thread of its own: the builder holds no lock of ours, it releases the GIL); once more
    when it ends. A check is cheap (``/proc/self/statm``); a release walks the whole
    mapping, so it waits until TensorRT has read enough to be worth it. Without
    ``/proc`` it releases every :data:`RELEASE_BLIND_EVERY_S`."""
    done = threading.Event()

    def keep_releasing() -> None:
        floor = _resident_bytes()
        interval = every if floor is not None else RELEASE_BLIND_EVERY_S
        while not done.wait(interval):
            now = _resident_bytes()
            if now is None or floor is None or now - floor >= grown:
                release()
                floor = _resident_bytes()

    thread = threading.Thread(target=keep_releasing, name="trtcas-release-weights", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        release()


def _resident_bytes() -> int | None:
    """This process's resident memory, or None where ``/proc/self/statm`` cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return None
