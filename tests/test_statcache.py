import multiprocessing
import os

from trtcas.cas.digest import hash_bytes, hash_file
from trtcas.cas.statcache import NullStatCache, StatCache


def counting_hasher(calls):
    def compute(path, algo):
        calls.append(path)
        return hash_file(path, algo)
    return compute


def test_unchanged_old_file_is_not_reread(tmp_path):
    cache = StatCache(tmp_path / "s.sqlite", granularity_ns=0)
    f = tmp_path / "w"
    f.write_bytes(b"weights" * 100)
    calls = []
    first = cache.digest_of(f, "blake3", counting_hasher(calls))
    second = cache.digest_of(f, "blake3", counting_hasher(calls))
    assert first == second == hash_bytes(b"weights" * 100)
    assert len(calls) == 1


def test_file_newer_than_clock_granularity_is_never_recorded(tmp_path):
    cache = StatCache(tmp_path / "s.sqlite")  # default 2 s granularity
    f = tmp_path / "w"
    f.write_bytes(b"a" * 64)
    calls = []
    cache.digest_of(f, "blake3", counting_hasher(calls))
    cache.digest_of(f, "blake3", counting_hasher(calls))
    assert len(calls) == 2
    assert cache.lookup(f, "blake3") is None


def test_same_size_rewrite_within_the_same_second_is_noticed(tmp_path):
    """The coarse-clock case: a rewrite keeps size and mtime; only ctime betrays it.
    (granularity 0 so the entry is recorded at once; the age rule is tested above.)"""
    cache = StatCache(tmp_path / "s.sqlite", granularity_ns=0)
    f = tmp_path / "w"
    f.write_bytes(b"A" * 4096)
    st = f.stat()
    assert cache.digest_of(f, "blake3") == hash_bytes(b"A" * 4096)
    assert cache.lookup(f, "blake3") is not None
    with open(f, "r+b") as out:  # same inode, same size
        out.write(b"B" * 4096)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # as if the clock had not ticked
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    assert cache.lookup(f, "blake3") is None
    assert cache.digest_of(f, "blake3") == hash_bytes(b"B" * 4096)


def test_replaced_file_is_noticed(tmp_path):
    cache = StatCache(tmp_path / "s.sqlite", granularity_ns=0)
    f = tmp_path / "w"
    f.write_bytes(b"one")
    cache.digest_of(f, "blake3")
    tmp = tmp_path / "w.new"
    tmp.write_bytes(b"two")
    os.replace(tmp, f)
    assert cache.digest_of(f, "blake3") == hash_bytes(b"two")


def test_kinds_and_algos_are_separate(tmp_path):
    cache = StatCache(tmp_path / "s.sqlite", granularity_ns=0)
    f = tmp_path / "w"
    f.write_bytes(b"x")
    b3, sha = cache.digest_of(f, "blake3"), cache.digest_of(f, "sha256")
    assert b3.algo == "blake3" and sha.algo == "sha256" and b3.hex != sha.hex
    assert cache.lookup(f, "sha256") == sha


def test_corrupt_database_degrades_to_hashing(tmp_path):
    db = tmp_path / "s.sqlite"
    db.write_bytes(b"this is not sqlite" * 100)
    f = tmp_path / "w"
    f.write_bytes(b"x")
    assert StatCache(db, granularity_ns=0).digest_of(f, "blake3") == hash_bytes(b"x")
    assert NullStatCache().digest_of(f, "blake3") == hash_bytes(b"x")


def _hash_many(args):
    db, paths = args
    cache = StatCache(db, granularity_ns=0)
    return [str(cache.digest_of(p, "blake3")) for p in paths for _ in range(3)]


def test_many_processes_share_one_database(tmp_path):
    paths = []
    for i in range(20):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(1000))
        paths.append(p)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_hash_many, [(tmp_path / "s.sqlite", paths)] * 4)
    expected = [str(hash_file(p)) for p in paths for _ in range(3)]
    assert all(r == expected for r in results)


def test_threads_asking_for_one_file_at_once_hash_it_once(tmp_path):
    """Every rank's convert is keyed on every shard: two actions starting together used to
    hash a multi-GB shard twice. The second asker waits for the first's answer; a failure
    reaches both; a later asker (the file now too young to record) hashes again."""
    import threading

    path = tmp_path / "shard.safetensors"
    path.write_bytes(os.urandom(1 << 20))
    cache = StatCache(tmp_path / "s.sqlite")
    calls, entered, release = [], threading.Event(), threading.Event()

    def slow_hash(p, algo):
        calls.append(p)
        entered.set()
        release.wait(5)
        return hash_file(p, algo)

    results = []
    first = threading.Thread(target=lambda: results.append(cache.digest_of(path, "blake3", slow_hash)))
    first.start()
    assert entered.wait(5)
    second = threading.Thread(target=lambda: results.append(cache.digest_of(path, "blake3", slow_hash)))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # waiting for the first, not hashing
    release.set()
    first.join()
    second.join()
    assert len(calls) == 1
    assert results == [hash_file(path, "blake3")] * 2

    def broken(p, algo):
        entered.set()
        release.wait(5)
        raise OSError(5, "Input/output error", str(p))

    entered.clear()
    release.clear()
    errors = []

    def ask():
        try:
            cache.digest_of(path, "blake3", broken)
        except OSError as exc:
            errors.append(exc.errno)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    threads[0].start()
    assert entered.wait(5)
    threads[1].start()
    release.set()
    for thread in threads:
        thread.join()
    assert errors == [5, 5]
    assert cache.digest_of(path, "blake3", slow_hash) == hash_file(path, "blake3")
    assert len(calls) == 2
