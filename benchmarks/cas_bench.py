"""Storage-layer speeds, with same-run baselines. Prints JSON; not a test.

    python benchmarks/cas_bench.py [--size-mb 1024] [--repeat 3] [--dir DIR]

Every figure is a median of ``--repeat`` runs on a file already in the page cache, and is
paired with a baseline measured in the same run (hashlib.sha256, a plain read, a plain
copy), because these machines are noisy and only ratios travel.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import hash_file
from trtcas.cas.statcache import StatCache
from trtcas.rules.formats.safetensors import hash_tensors as hash_safetensors

from _harness import mbps, median_seconds, print_json  # noqa: E402

CHUNK = 1 << 20




def plain_read(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(CHUNK):
            pass


def sha256_file(path: Path) -> None:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    h.hexdigest()


def write_random(path: Path, size: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * CHUNK)
            f.write(rng.bytes(n))
            left -= n


def write_compressible(path: Path, size: int) -> None:
    line = b"layer %06d CONVOLUTION kernel 3x3 stride 1 pad 1 dtype fp16\n"
    block = b"".join(line % i for i in range(20000))
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n




def bench_hashing(work: Path, size: int, repeat: int) -> dict:
    path = work / "random.bin"
    write_random(path, size)
    plain_read(path)  # into the page cache
    ours = median_seconds(lambda: hash_file(path), repeat)
    sha = median_seconds(lambda: sha256_file(path), repeat)
    read = median_seconds(lambda: plain_read(path), repeat)
    stat = StatCache(work / "stat.sqlite", granularity_ns=0)
    stat.digest_of(path, "blake3")
    rehash = median_seconds(lambda: stat.digest_of(path, "blake3"), max(repeat, 5))
    return {
        "file_mb": size / 1e6,
        "blake3_mb_s": mbps(size, ours),
        "sha256_hashlib_mb_s": mbps(size, sha),
        "plain_read_mb_s": mbps(size, read),
        "ratio_blake3_vs_sha256": round(sha / ours, 2),
        "ratio_blake3_vs_read": round(read / ours, 2),
        "statcache_rehash_ms": round(rehash * 1e3, 3),
        "statcache_rehash_fraction_of_cold_hash": round(rehash / ours, 6),
    }


def bench_store(work: Path, size: int, repeat: int) -> dict:
    out: dict = {}
    for kind, writer in (("raw", write_random), ("zstd", write_compressible)):
        src = work / f"{kind}.src"
        writer(src, size)
        plain_read(src)
        put_times, get_times = [], []
        for i in range(repeat):
            store = ContentStore(work / f"store-{kind}-{i}")
            start = time.perf_counter()
            digest = store.blobs.put_file(src)
            put_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.blobs.materialize(digest, work / f"{kind}.out{i}", mode="copy")
            get_times.append(time.perf_counter() - start)
        blob = store.blobs.locate(digest)
        copy = median_seconds(lambda: shutil.copyfile(src, work / f"{kind}.copy"), repeat)
        out[kind] = {
            "stored_compressed": blob.compressed,
            "stored_bytes": blob.stored_size,
            "put_mb_s": mbps(size, statistics.median(put_times)),
            "get_mb_s": mbps(size, statistics.median(get_times)),
            "plain_copy_mb_s": mbps(size, copy),
            "ratio_put_vs_copy": round(copy / statistics.median(put_times), 2),
        }
        if kind == "raw":
            link = median_seconds(lambda: store.blobs.materialize(digest, work / "linked", mode="hardlink"), max(repeat, 5))
            out["materialize"] = {
                "hardlink_ms": round(link * 1e3, 3),
                "copy_ms": round(statistics.median(get_times) * 1e3, 1),
                "ratio_copy_vs_hardlink": round(statistics.median(get_times) / link, 1),
                "note": "hardlink time includes verifying the blob through the stat cache",
            }
        for i in range(repeat):
            shutil.rmtree(work / f"store-{kind}-{i}")
    return out


def bench_safetensors(work: Path, size: int, repeat: int) -> dict:
    rng = np.random.default_rng(1)
    n_tensors = 200
    per = size // n_tensors // 2
    tensors = {f"layers.{i}.weight": rng.standard_normal(per, dtype=np.float32).astype(np.float16) for i in range(n_tensors)}
    path = work / "model.safetensors"
    save_file(tensors, path)
    plain_read(path)
    manifest = median_seconds(lambda: hash_safetensors(path), repeat)
    whole = median_seconds(lambda: hash_file(path), repeat)
    file_size = path.stat().st_size
    return {
        "file_mb": round(file_size / 1e6, 1),
        "tensors": n_tensors,
        "manifest_s": round(manifest, 4),
        "manifest_mb_s": mbps(file_size, manifest),
        "whole_file_hash_s": round(whole, 4),
        "ratio_manifest_vs_whole_file": round(manifest / whole, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="hashing file size")
    parser.add_argument("--store-mb", type=int, default=256, help="put/get blob size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="scratch dir on the filesystem to measure")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trtcas-bench-", dir=args.dir))
    try:
        result = {
            "benchmark": "cas",
            "repeat": args.repeat,
            "statistic": "median",
            "hashing": bench_hashing(work, args.size_mb << 20, args.repeat),
            "store": bench_store(work, args.store_mb << 20, args.repeat),
            "safetensors": bench_safetensors(work, args.store_mb << 20, args.repeat),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_json(result)


if __name__ == "__main__":
    main()
