"""The store writes a tensor's frame block by block as it is encoded: large tensors round-trip,
what does not pay is stored raw with nothing left behind (an incompressible one after a
single block), and a worker holds a few blocks, not the tensor's planes."""

from __future__ import annotations

import threading
import time

import ml_dtypes
import numpy as np

from trtcas.cas.blobstore import TCX_SUFFIX
from trtcas.cas.codecs.planes import BLOCK_BYTES
from trtcas.cas.content_store import ContentStore
from trtcas.cas.direct_io import DirectFile


def bf16_weights(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n, dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)


def stored_files(store: ContentStore) -> list[str]:
    return sorted(p.name for p in store.blobs.blob_root.rglob("*") if p.is_file())


def test_a_large_tensor_streams_into_a_frame_and_round_trips(tmp_path):
    store = ContentStore(tmp_path / "cache")
    array = bf16_weights(5 * BLOCK_BYTES // 2 + 12345)  # five blocks and a partial one
    digest = store.blobs.put_tensor(memoryview(array.view(np.uint8)), "BF16")
    files = stored_files(store)
    assert files == [digest.hex + TCX_SUFFIX]
    assert (store.blobs.blob_root.rglob(files[0]).__next__()).stat().st_size < 0.8 * array.nbytes
    assert bytes(store.blobs.content_view(digest)) == array.tobytes()
    assert store.blobs.verify(digest)


def test_what_does_not_pay_is_stored_raw_and_an_incompressible_tensor_is_given_up_after_one_block(tmp_path, monkeypatch):
    written: dict[str, int] = {}
    real = DirectFile.pwrite

    def counting(self, data, offset):
        written[self.path] = written.get(self.path, 0) + memoryview(data).nbytes
        return real(self, data, offset)

    monkeypatch.setattr(DirectFile, "pwrite", counting)
    store = ContentStore(tmp_path / "cache")
    noise = np.random.default_rng(1).integers(0, 256, 6 * BLOCK_BYTES, dtype=np.uint8)
    digest = store.blobs.put_tensor(memoryview(noise), "BF16")
    assert stored_files(store) == [digest.hex]  # raw; no frame, no temp file
    assert bytes(store.blobs.content_view(digest)) == noise.tobytes()
    frame_bytes = sum(n for path, n in written.items() if TCX_SUFFIX in path)
    assert 0 < frame_bytes <= BLOCK_BYTES + 4096  # one block tried, then raw


def rss_anon_mb() -> int:
    """Resident memory that is not file pages (the mapped tensor's pages are those):
    private anonymous, plus shared anonymous, which is what ``mmap.mmap(-1, n)`` gives."""
    kb = 0
    for line in open("/proc/self/status"):
        if line.startswith(("RssAnon", "RssShmem")):
            kb += int(line.split()[1])
    return kb // 1024


def test_storing_a_large_tensor_holds_a_few_blocks_not_its_planes(tmp_path):
    """A 192 MB mapped tensor: the store's own memory stays far below the tensor (a buffer
    for the whole tensor's planes, per worker, was what it held before)."""
    source = tmp_path / "weights.bin"
    n = (192 << 20) // 2
    with open(source, "wb") as stream:
        for start in range(0, n, 1 << 22):
            stream.write(bf16_weights(min(1 << 22, n - start), seed=start).tobytes())
    tensor = np.memmap(source, dtype=ml_dtypes.bfloat16, mode="r")
    store = ContentStore(tmp_path / "cache")
    base, peak, done = rss_anon_mb(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_anon_mb())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with store.blobs.batch():
            (digest,) = list(store.blobs.put_tensors([(memoryview(tensor.view(np.uint8)), "BF16", None)]))
    finally:
        done.set()
        sampler.join()
    assert peak[0] - base < 96, f"the store held {peak[0] - base} MB storing a 192 MB tensor"
    assert stored_files(store) == [digest.hex + TCX_SUFFIX]
    assert store.blobs.verify(digest)


def test_one_encoding_thread_streams_the_same_frames(tmp_path, monkeypatch):
    """On a one-core machine blocks are encoded inline; a frame given up early closes that
    stream as it closes the pooled one."""
    from trtcas.cas.codecs import planes

    monkeypatch.setattr(planes.os, "cpu_count", lambda: 1)
    store = ContentStore(tmp_path / "cache")
    array = bf16_weights(3 * BLOCK_BYTES // 2)
    digest = store.blobs.put_tensor(memoryview(array.view(np.uint8)), "BF16")
    assert stored_files(store) == [digest.hex + TCX_SUFFIX]
    assert bytes(store.blobs.content_view(digest)) == array.tobytes()
    noise = np.random.default_rng(2).integers(0, 256, 3 * BLOCK_BYTES, dtype=np.uint8)
    assert stored_files(store) != [] and store.blobs.put_tensor(memoryview(noise), "BF16").hex in stored_files(store)
