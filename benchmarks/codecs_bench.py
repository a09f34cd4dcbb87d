"""Weight codecs against today's zstd-3 and against zipnn, with same-run baselines. Prints JSON.

    python benchmarks/codecs_bench.py [--size-mb 256] [--repeat 3] [--dir DIR] [--dtypes bf16,fp16]

Data: normally distributed values (std 0.02) cast to bf16 / fp16, like a checkpoint's
weights. Fine-tunes, two models of one:
  - "master": child = cast(master_fp32 * (1 + r N(0,1))), parent = cast(master_fp32), as
    when both checkpoints are cast from fp32 master weights (realistic);
  - "grid":   child = cast(parent * (1 + r N(0,1))), the parent's own values perturbed
    (what ENVIRONMENT.md's "60x at 1e-3" measured; fewer elements cross a rounding edge).
Every figure is the median of ``--repeat`` runs; every decode is checked bit-exact.
Baselines in the same run: hashlib.sha256 and blake3 of the bytes in memory, and
shutil.copyfile of a file of the same size (page cache hot). ``vs_sha256`` / ``vs_copy``
are a codec's MB/s divided by the baseline's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import blake3
import ml_dtypes
import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trtcas.cas.codecs import BYTEPLANE, XOR_DELTA, EncodeHint, Parent, choose_encoding, estimate  # noqa: E402
from trtcas.cas.codecs.planes import split_planes  # noqa: E402
from trtcas.cas.digest import hash_bytes  # noqa: E402

from _harness import mbps, print_json  # noqa: E402
from _harness import median_seconds as median  # noqa: E402

DTYPES = {"bf16": (ml_dtypes.bfloat16, "bfloat16", "BF16"), "fp16": (np.float16, "float16", "F16")}
KEEP = None  # min_saving: keep every frame, so a ratio is always measured


def measure(name: str, data: bytes, encode, decode, repeat: int, baselines: dict, private=None) -> dict:
    """Ratio, median encode/decode MB/s and bit-exactness of one codec. ``private(data)``
    makes an untimed copy for an encoder that writes into its input."""
    prepare = private or (lambda d: d)
    encoded = encode(prepare(data))
    times = []
    for _ in range(repeat):
        arg = prepare(data)
        start = time.perf_counter()
        encode(arg)
        times.append(time.perf_counter() - start)
        del arg
    enc_s = sorted(times)[len(times) // 2]
    exact = bytes(decode(encoded)) == data
    dec_s = median(lambda: decode(encoded), repeat)
    row = {
        "codec": name,
        "ratio": round(len(data) / len(encoded), 3),
        "encode_mbps": mbps(len(data), enc_s),
        "decode_mbps": mbps(len(data), dec_s),
        "bit_exact": exact,
    }
    for base in ("sha256", "copy"):
        row[f"encode_vs_{base}"] = round(row["encode_mbps"] / baselines[f"{base}_mbps"], 2)
        row[f"decode_vs_{base}"] = round(row["decode_mbps"] / baselines[f"{base}_mbps"], 2)
    print(f"  {name}: {row['ratio']}x enc {row['encode_mbps']} dec {row['decode_mbps']} MB/s", file=sys.stderr)
    return row


def zstd_codec(level: int, threads: int):
    comp = zstandard.ZstdCompressor(level=level, threads=threads)
    dec = zstandard.ZstdDecompressor()
    return comp.compress, dec.decompress


def level1_planes_codec(esize: int):
    """Byte planes with plain zstd level 1 (multithreaded): what the brief first proposed,
    kept to show what the tuned plane parameters buy."""
    comp = zstandard.ZstdCompressor(level=1, threads=-1)
    dec = zstandard.ZstdDecompressor()

    def encode(data: bytes) -> bytes:
        planes = split_planes(np.frombuffer(data, np.uint8), esize)
        return b"".join(len(c).to_bytes(8, "little") + c for c in (comp.compress(p) for p in planes))

    def decode(encoded: bytes) -> bytearray:
        planes, at = [], 0
        while at < len(encoded):
            n = int.from_bytes(encoded[at : at + 8], "little")
            planes.append(np.frombuffer(dec.decompress(encoded[at + 8 : at + 8 + n]), np.uint8))
            at += 8 + n
        out = bytearray(sum(p.nbytes for p in planes))
        np.frombuffer(out, np.uint8).reshape(-1, esize)[:] = np.stack(planes, axis=1)
        return out

    return encode, decode


def zipnn_row(dtype_name: str, data: bytes, repeat: int, baselines: dict) -> dict | None:
    """zipnn 0.5.4, if installed. It mutates its input in place (bf16: the sign bit is
    rotated, even inside an immutable ``bytes``), so every compress gets a private, untimed
    copy; a fresh ZipNN object per call, as its objects carry state."""
    try:
        import zipnn
    except ImportError:
        return None
    threads = os.cpu_count() or 1

    def encode(private: bytearray) -> bytes:
        return zipnn.ZipNN(input_format="byte", bytearray_dtype=dtype_name, threads=threads).compress(private)

    def decode(encoded: bytes) -> bytearray:
        return zipnn.ZipNN(input_format="byte", bytearray_dtype=dtype_name, threads=threads).decompress(encoded)

    return measure(f"zipnn 0.5.4 ({threads} threads)", data, encode, decode, repeat, baselines, private=bytearray)


def baselines_for(data: bytes, work: Path, repeat: int) -> dict:
    src, dst = work / "copy-src.bin", work / "copy-dst.bin"
    src.write_bytes(data)
    copy_s = median(lambda: shutil.copyfile(src, dst), repeat)
    src.unlink()
    dst.unlink()
    sha_s = median(lambda: hashlib.sha256(data).digest(), repeat)
    b3_s = median(lambda: blake3.blake3(data, max_threads=blake3.blake3.AUTO).digest(), repeat)
    return {"sha256_mbps": mbps(len(data), sha_s), "blake3_mbps": mbps(len(data), b3_s), "copy_mbps": mbps(len(data), copy_s)}


def bench_dtype(label: str, size: int, repeat: int, work: Path) -> dict:
    dtype, dtype_name, st_name = DTYPES[label]
    esize = np.dtype(dtype).itemsize
    rng = np.random.default_rng(0)
    master = rng.standard_normal(size // esize, dtype=np.float32) * 0.02
    data = master.astype(dtype).tobytes()
    print(f"{label}: {len(data) >> 20} MiB", file=sys.stderr)
    base = baselines_for(data, work, repeat)
    rows = [
        measure("zstd-3 (store today, 1 thread)", data, *zstd_codec(3, 0), repeat, base),
        measure("zstd-1 (all cores)", data, *zstd_codec(1, -1), repeat, base),
        measure("byteplane + zstd-1 (all cores)", data, *level1_planes_codec(esize), repeat, base),
        measure(
            "byteplane (trtcas, tuned zstd, all cores)",
            data,
            lambda d: BYTEPLANE.encode(d, EncodeHint(esize, min_saving=KEEP)).view(),
            lambda e: BYTEPLANE.decode(e, len(data)),
            repeat,
            base,
        ),
    ]
    zrow = zipnn_row(dtype_name, data, repeat, base)
    if zrow:
        rows.append(zrow)
    parent = Parent(hash_bytes(data), data)
    for model, noise in (("master", 1e-3), ("master", 1e-2), ("grid", 1e-3)):
        source = master if model == "master" else data_as_float(data, dtype)
        child = (source * (1 + noise * rng.standard_normal(source.size, dtype=np.float32))).astype(dtype).tobytes()
        changed = float(np.mean(np.frombuffer(child, np.uint16 if esize == 2 else np.uint8) != np.frombuffer(data, np.uint16 if esize == 2 else np.uint8)))
        row = measure(
            f"xor_delta {model} r={noise:g}",
            child,
            lambda d: XOR_DELTA.encode(d, EncodeHint(esize, parent, KEEP)).view(),
            lambda e: XOR_DELTA.decode(e, len(child), parent),
            repeat,
            base,
        )
        row["elements_changed"] = round(changed, 4)
        rows.append(row)
    last_child = child
    chooser = {
        "estimate_byteplane_s": round(median(lambda: estimate(data, esize), repeat), 4),
        "estimate_xor_delta_s": round(median(lambda: estimate(last_child, esize, parent), repeat), 4),
        "choose_encoding_s": round(median(lambda: choose_encoding(data, st_name, None), 1), 3),
        "choice_without_parent": choose_encoding(data, st_name, None)[0],
        "choice_with_parent_grid_1e-3": choose_encoding(last_child, st_name, parent)[0],
    }
    return {"dtype": label, "size_bytes": len(data), "baselines": base, "codecs": rows, "chooser": chooser}


def data_as_float(data: bytes, dtype) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the copy baseline's file goes")
    parser.add_argument("--dtypes", default="bf16,fp16")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = [bench_dtype(d, args.size_mb << 20, args.repeat, Path(tmp)) for d in args.dtypes.split(",")]
    print_json({"benchmark": "codecs", "size_mb": args.size_mb, "repeat": args.repeat, "results": results})


if __name__ == "__main__":
    main()
