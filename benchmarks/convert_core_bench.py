"""The convert action's own work, without TensorRT: how it scales with cores. JSON.

    python benchmarks/convert_core_bench.py [--size-mb 2200] [--tp 1] [--checkpoint] [--repeat 3] [--dir DIR]

``trtcas build`` plans engines, so it needs TensorRT even for ``convert[...]`` alone; this
runs what a cold ``convert[rank*]`` action does in a process of its own, on machines
without it (a GPU host here has 16 cores and no TensorRT): hash the HF files through the
stat cache (the action's key), convert every rank on its own thread (as ``-j`` would) into
a fresh store with ``put_tensors`` inside one ``batch()`` (one ``syncfs``); with
``--checkpoint`` each rank's checkpoint file is also written as the tensors pass (what a
build that places the checkpoint does), else nothing is placed.
Baseline in the same run: ``cp -r`` + ``sync`` of the same files, each run paired with its
own. On two cores the convert is CPU-bound (hashing, byte-plane zstd); this shows what it
does where cores allow.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import machine, print_json, ratio  # noqa: E402
from _llama_gen import model_bytes, sizes_for, write_checkpoint  # noqa: E402


def convert_in_this_process(hf: Path, cache: Path, tp: int, checkpoint: Path | None) -> None:
    """One cold convert of every rank, as the action does it (the child process); with
    ``checkpoint``, each rank's file is written there as the convert passes its tensors,
    as when a build places the checkpoint."""
    from concurrent.futures import ThreadPoolExecutor

    from trtcas.cas.content_store import ContentStore
    from trtcas.cas.tree import source_digest
    from trtcas.rules.formats.tensors import placed_file_writer, store_tensors, written_while_passing
    from trtcas.rules.llm.convert import open_rank
    from trtcas.rules.llm.spec import ConvertSpec

    store = ContentStore(cache)
    source_digest(hf, store.statcache, store.algo)
    spec = ConvertSpec(tp=tp, pp=1, dtype="bfloat16")

    def rank(r: int) -> None:
        with store.blobs.batch():
            slots, tensors = open_rank(hf, spec, r)
            if checkpoint is None:
                store_tensors(store.blobs, tensors)
                return
            checkpoint.mkdir(parents=True, exist_ok=True)
            with placed_file_writer(checkpoint / f"rank{r}.safetensors", slots) as writer:
                store_tensors(store.blobs, written_while_passing(writer, tensors))
                writer.finish()

    with ThreadPoolExecutor(max_workers=tp) as pool:
        list(pool.map(rank, range(tp)))


def timed_process(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=2200)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--checkpoint", action="store_true", help="also write the checkpoint, as a placing build does")
    parser.add_argument("--child", nargs=2, metavar=("HF", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out = Path(args.child[1]).parent / "out" if args.checkpoint else None
        convert_in_this_process(Path(args.child[0]), Path(args.child[1]), args.tp, out)
        return
    work = Path(tempfile.mkdtemp(prefix="convert-core-", dir=args.dir))
    try:
        sizes = sizes_for(int(args.size_mb * 1e6))
        hf = write_checkpoint(work / "hf", sizes)
        subprocess.run(["sync"], check=True)
        cp_runs, convert_runs = [], []
        for _ in range(args.repeat):
            fresh(work / "copy"), fresh(work / "cache"), fresh(work / "out")
            subprocess.run(["sync"], check=True)
            cp_runs.append(timed_process(["sh", "-c", f"cp -r '{hf}' '{work / 'copy'}' && sync"]))
            fresh(work / "copy")
            subprocess.run(["sync"], check=True)
            convert_runs.append(timed_process([sys.executable, __file__, "--tp", str(args.tp),
                                               *(["--checkpoint"] if args.checkpoint else []),
                                               "--child", str(hf), str(work / "cache")]))
        store = sum(p.stat().st_size for p in (work / "cache" / "cas").rglob("*") if p.is_file())
        size = model_bytes(sizes)
        print_json({
            "model_bytes": size, "tp": args.tp, "checkpoint": args.checkpoint,
            "cp_r_sync_s": round(statistics.median(cp_runs), 3),
            "convert_s": round(statistics.median(convert_runs), 3),
            "convert_vs_cp_r_sync": ratio(statistics.median(convert_runs), statistics.median(cp_runs)),
            "convert_vs_cp_r_sync_paired": [round(c / p, 2) for c, p in zip(convert_runs, cp_runs)],
            "store_vs_model": ratio(store, size, 3),
            "machine": machine(),
        })
    finally:
        fresh(work)


if __name__ == "__main__":
    main()
