import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from trtcas.cas.blobstore import BlobNotFound, BlobStore, ContentChanged, CorruptBlob
from trtcas.cas.digest import hash_bytes
from trtcas.cas.gc import verify_store
from trtcas.cas.statcache import StatCache


def random_bytes(n, seed=0):
    return np.random.default_rng(seed).bytes(n)


@pytest.mark.parametrize("data", [b"", b"hi", random_bytes(3 << 20)], ids=["empty", "small", "3MiB"])
def test_round_trip_bytes_file_stream(store, tmp_path, data):
    src = tmp_path / "src"
    src.write_bytes(data)
    for digest in (store.blobs.put_bytes(data), store.blobs.put_file(src), store.blobs.put_stream(io.BytesIO(data))):
        assert digest == hash_bytes(data)
        assert store.blobs.get_bytes(digest) == data
        out = tmp_path / "out"
        store.blobs.materialize(digest, out)
        assert out.read_bytes() == data
        assert not os.access(out, os.W_OK) or os.geteuid() == 0
        assert oct(out.stat().st_mode & 0o777) == oct(0o444)


def test_compressible_blobs_are_zstd_and_random_ones_raw(store):
    text = b"layer conv3x3 stride 1 pad 1\n" * 20000
    noise = random_bytes(1 << 20)
    t, n = store.blobs.put_bytes(text), store.blobs.put_bytes(noise)
    assert store.blobs.locate(t).compressed and store.blobs.locate(t).stored_size < len(text) / 10
    assert not store.blobs.locate(n).compressed and store.blobs.locate(n).path.name == n.hex
    # barely compressible (like fp16 weights, ~9% saving) stays raw: saving under 10%
    half = bytes(b if i % 12 else 0 for i, b in enumerate(random_bytes(1 << 16, 1)))
    assert not store.blobs.locate(store.blobs.put_bytes(half)).compressed


def test_raw_blob_materializes_by_link_and_replaces_atomically(store, tmp_path):
    digest = store.blobs.put_bytes(random_bytes(1 << 20))
    out = tmp_path / "engine.plan"
    out.write_bytes(b"old")
    method = store.blobs.materialize(digest, out)
    assert method in ("reflink", "hardlink")
    # materializing again over a hardlink never writes through it into the store
    other = store.blobs.put_bytes(b"something else entirely")
    store.blobs.materialize(other, out)
    assert store.blobs.verify(digest)
    assert store.blobs.materialize(digest, tmp_path / "copy", mode="copy") == "copy"


def test_corrupt_blob_is_quarantined_and_never_served(store):
    data = random_bytes(100_000)
    digest = store.blobs.put_bytes(data)
    path = store.blobs.locate(digest).path
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(500)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CorruptBlob):
        store.blobs.get_bytes(digest)
    assert not store.blobs.has(digest)
    assert len(list(store.blobs.quarantine_root.iterdir())) == 1
    with pytest.raises(BlobNotFound):
        store.blobs.open(digest)


def test_corruption_is_caught_even_after_stat_cache_vouched(tmp_path):
    blobs = BlobStore(tmp_path, statcache=StatCache(tmp_path / "s.sqlite", granularity_ns=0))
    data = random_bytes(50_000)
    digest = blobs.put_bytes(data)
    assert blobs.get_bytes(digest) == data  # the stat cache now knows this blob file
    path = blobs.locate(digest).path
    st = path.stat()
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"EVIL")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only ctime moved
    with pytest.raises(CorruptBlob):
        blobs.get_bytes(digest)


def test_compressed_blob_corruption_detected(store):
    digest = store.blobs.put_bytes(b"abc" * 100_000)
    path = store.blobs.locate(digest).path
    assert path.name.endswith(".zst")
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBlob):
        store.blobs.get_bytes(digest)


def test_zstd_blob_without_a_header_is_reported_by_verify_not_a_crash(store):
    digest = store.blobs.put_bytes(b"abc" * 100_000)
    path = store.blobs.locate(digest).path
    os.chmod(path, 0o644)
    path.write_bytes(b"")  # truncated to nothing: no zstd frame header to read a size from
    assert not store.blobs.has(digest)
    report = verify_store(store)  # also what `cache stats` and `cache gc` list
    assert not report.ok and [d.split("/")[0] for d, _ in report.bad_blobs] == [f"{digest.algo}:{digest.hex}"]
    assert verify_store(store, repair=True).repaired and verify_store(store).ok


def test_store_json_that_is_not_an_object_is_one_clear_error(tmp_path):
    from trtcas.cas.content_store import ContentStore
    from trtcas.errors import TrtcasError

    (tmp_path / "store.json").write_text("[]")
    with pytest.raises(TrtcasError, match="unreadable store.json .*; fix or remove it"):
        ContentStore(tmp_path)


def test_truncated_raw_blob_is_a_miss(store):
    digest = store.blobs.put_bytes(random_bytes(10_000))
    path = store.blobs.locate(digest).path
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.truncate(5000)
    assert not store.blobs.has(digest)


def test_file_changing_during_put_is_refused(store, tmp_path, monkeypatch):
    src = tmp_path / "f"
    src.write_bytes(b"a" * 1000)
    monkeypatch.setattr(store.blobs.statcache, "digest_of", lambda *a, **k: hash_bytes(b"b" * 1000))
    with pytest.raises(ContentChanged):
        store.blobs.put_file(src)
    assert list(store.blobs.iter_blobs()) == []


SLOW_WRITER = textwrap.dedent("""
    import sys, time, io
    from trtcas.cas.content_store import ContentStore
    store = ContentStore(sys.argv[1])
    class Slow(io.RawIOBase):
        def readable(self): return True
        def readinto(self, b):
            time.sleep(0.01)
            sys.stdout.write("w"); sys.stdout.flush()
            b[:] = b"\\x07" * len(b)
            return len(b)
    store.blobs.put_stream(io.BufferedReader(Slow(), 1 << 20))
""")


def test_writer_killed_mid_put_leaves_no_visible_blob(store):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(store.root)], stdout=subprocess.PIPE)
    proc.stdout.read(20)  # it is writing now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(store.blobs.iter_blobs()) == []
    leftovers = list(store.blobs.iter_temp_files())
    assert leftovers, "the killed writer should have left a hidden temp file"
    old = time.time() - 7200
    for p in leftovers:
        os.utime(p, (old, old))
    report = verify_store(store, repair=True)
    assert report.stale_temp_files == len(leftovers) and not list(store.blobs.iter_temp_files())


CONCURRENT_PUTTER = textwrap.dedent("""
    import sys, numpy as np
    from trtcas.cas.content_store import ContentStore
    from trtcas.cas.actioncache import ActionResult
    from trtcas.cas.digest import hash_bytes
    store = ContentStore(sys.argv[1])
    me = int(sys.argv[2])
    for i in range(me, me + 6):  # neighbours overlap
        data = np.random.default_rng(i).bytes(200_000 + i) + (b"z" * 100_000 if i % 2 else b"")
        d = store.blobs.put_bytes(data)
        store.actions.put(hash_bytes(b"key%d" % i), ActionResult(outputs={"out": d}))
""")


def test_eight_processes_putting_overlapping_content(store):
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_PUTTER, str(store.root), str(i)]) for i in range(8)]
    assert [p.wait() for p in procs] == [0] * 8
    blobs = list(store.blobs.iter_blobs())
    assert len(blobs) == 13
    report = verify_store(store)
    assert report.ok and report.blobs_checked == 13
    assert all(store.actions.get(hash_bytes(b"key%d" % i)) for i in range(13))


BIG_ROUND_TRIP = textwrap.dedent("""
    import os, sys, threading, time
    from trtcas.cas.content_store import ContentStore
    peak = [0]
    def watch():
        while True:
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            time.sleep(0.005)
    threading.Thread(target=watch, daemon=True).start()
    store = ContentStore(sys.argv[1])
    d = store.blobs.put_file(sys.argv[2])
    store.blobs.materialize(d, sys.argv[3])
    time.sleep(0.02)
    print(d.size, peak[0])
""")


def test_round_trip_of_a_file_over_1gb_in_bounded_memory(store, tmp_path):
    src, out = tmp_path / "big.bin", tmp_path / "big.out"
    size = (1 << 30) + 4097
    with open(src, "wb") as f:  # sparse, with some real bytes at both ends
        f.write(b"head" * 1000)
        f.seek(size - 4)
        f.write(b"tail")
    result = subprocess.run([sys.executable, "-c", BIG_ROUND_TRIP, str(store.root), str(src), str(out)],
                            capture_output=True, text=True, check=True)
    stored, peak = map(int, result.stdout.split())
    assert stored == size == out.stat().st_size
    assert peak < 300 << 20, f"anonymous memory peaked at {peak >> 20} MiB for a 1 GiB blob"
    with open(out, "rb") as f:
        assert f.read(8) == b"headhead"
        f.seek(size - 4)
        assert f.read() == b"tail"


def test_compressed_blob_is_served_after_the_stat_cache_vouched_for_it(tmp_path):
    """Regression: the stat cache once returned the *file* size as the content size of a
    .zst blob, so every compressed blob looked corrupt once the cache had recorded it."""
    blobs = BlobStore(tmp_path, statcache=StatCache(tmp_path / "s.sqlite", granularity_ns=0))
    data = b"compressible text " * 5000
    digest = blobs.put_bytes(data)
    assert blobs.locate(digest).compressed
    for _ in range(3):  # first read records it; later reads trust the record
        assert blobs.get_bytes(digest) == data
    assert blobs.statcache.lookup(blobs.locate(digest).path, "blake3", kind="blake3+zstd") == digest


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "in a batch"])
def test_a_consumed_file_is_moved_into_the_store_not_copied(store, tmp_path, batched):
    """An action's scratch output (a streamed engine plan) is renamed into place."""
    data = random_bytes(3 << 20, seed=7)  # incompressible: stored raw, so it can be moved
    scratch = tmp_path / "scratch-plan"
    scratch.write_bytes(data)
    inode = scratch.stat().st_ino
    if batched:
        with store.blobs.batch():
            digest = store.blobs.put_file(scratch, consume=True)
    else:
        digest = store.blobs.put_file(scratch, consume=True)
    assert digest == hash_bytes(data) and not scratch.exists()
    blob = store.blobs.locate(digest)
    assert blob.path.stat().st_ino == inode and blob.path.stat().st_mode & 0o222 == 0
    assert store.blobs.get_bytes(digest) == data and store.blobs.verify(digest)


def test_a_consumed_file_that_compresses_is_stored_compressed_and_left_to_its_owner(store, tmp_path):
    data = b"plan " * (1 << 20)
    scratch = tmp_path / "scratch-text"
    scratch.write_bytes(data)
    digest = store.blobs.put_file(scratch, consume=True)
    assert store.blobs.locate(digest).compressed and scratch.read_bytes() == data
    assert store.blobs.get_bytes(digest) == data
