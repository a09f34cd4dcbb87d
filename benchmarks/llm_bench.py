"""LLM targets: convert throughput, rebuild costs and store growth after a fine-tune. Prints JSON.

    python benchmarks/llm_bench.py [--repeat 3] [--hidden 1024] [--intermediate 2816] [--layers 8]
                                   [--vocab 32000] [--dtype float16] [--rebuild-model mid|tiny]
                                   [--rebuild-repeat 3] [--dir DIR]

Three parts, each with a baseline measured in the same run (the machines are noisy; only
ratios travel):

- ``convert``: a random Llama-style HF checkpoint (``examples/make_tiny_llama.py`` with the
  sizes given; the defaults make ~300 MB of fp16) converted to a TensorRT-LLM checkpoint with
  tp=1 and tp=2, two ways: ``write_checkpoint`` (rank files on disk, fsynced) and into a fresh
  content store per tensor (``store_tensors(iter_rank_tensors(...))`` for every rank: what the
  ``convert[rank N]`` actions do). MB/s are of HF bytes read, median of ``--repeat``, files in
  the page cache; baselines are a plain read, ``hashlib.sha256`` and a plain copy (no fsync)
  of the HF safetensors files.
- ``rebuilds``: a small tp=2 target (``[engine] targets = ["sm86"]``) built cold, rebuilt with
  nothing changed (``noop``) and rebuilt after a fine-tune (the HF dir regenerated with
  ``finetune_layer=1``: only layer 1's tensors change), ``--rebuild-repeat`` times in fresh
  project and cache dirs, per-action statuses and median seconds. Two modes:
  ``real_cpu_backend`` (``backend = "auto"``, TensorRT-RTX on the CPU: weights are embedded so
  every engine rebuilds on a fine-tune) and ``refit_test_double`` (``backend =
  "refit-test-double"``, the stand-in from tests/support/refit_double.py: the real CPU builder makes
  the plan, the "refit" appends a marker; NOT a real refit, and its seconds say nothing about
  a GPU refit). One unmeasured build per mode first loads TensorRT, so "cold" means a cold
  cache, not a cold process. The no-op rebuild runs while the HF files are younger than the
  stat cache's 2 s granularity, so it re-hashes them. Actions run two at a time (jobs=2), so
  ``engine_build_s`` (the summed seconds of the engine actions that built) can exceed
  ``build_s``; which rank builds and which is ``shared`` is a race, shown as ``built|shared``.
- ``store_growth``: logical bytes of the cache dir before and after the fine-tune build (first
  run of each mode), next to the bytes of converted tensors that changed (distinct digests),
  the changed HF bytes, and a full copy of the converted checkpoint (both ranks); the new blobs
  are attributed to the action outputs (and tensors inside manifests) that reference them.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "examples"))
sys.path.insert(0, str(HERE / "tests"))

import trtcas  # noqa: E402
from trtcas.cas.content_store import ContentStore  # noqa: E402
from trtcas.cas.digest import Digest  # noqa: E402
from trtcas.cas.manifest import TensorManifest  # noqa: E402
from trtcas.cas.stats import store_stats  # noqa: E402
from trtcas.rules.formats.tensors import store_tensors  # noqa: E402
from trtcas.rules.llm.convert import iter_rank_tensors, write_checkpoint  # noqa: E402
from trtcas.rules.llm.spec import ConvertSpec  # noqa: E402

from _harness import mbps, median_seconds, print_json  # noqa: E402
from make_tiny_llama import TINY, make_tiny_llama, tensor_shapes  # noqa: E402

CHUNK = 1 << 20
MB = 1e6
TARGET = """
[target]
name = "bench-llama"
[model]
hf = "hf"
dtype = "{dtype}"
max_batch_size = 2
max_seq_len = 16
[parallel]
tp = 2
[engine]
backend = "{backend}"
targets = ["sm86"]
"""
REBUILD_MODELS = {
    "tiny": {},  # TINY: hidden 64, 2 layers, vocab 256
    "mid": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "vocab_size": 1024},
}
MODES = {
    "real_cpu_backend": "auto",
    "refit_test_double": "refit-test-double",
}
STEPS = ("cold", "noop", "finetune")
FINETUNE_LAYER = 1


# --------------------------------------------------------------------------- helpers




def hf_files(hf: Path) -> list[Path]:
    return sorted(hf.glob("*.safetensors"))


def plain_read(paths: list[Path]) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(CHUNK):
                pass


def sha256_files(paths: list[Path]) -> None:
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                h.update(chunk)
        h.hexdigest()


def dir_bytes(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


# --------------------------------------------------------------------------- 1. convert
def bench_convert(work: Path, sizes: dict, dtype: str, repeat: int) -> dict[str, Any]:
    hf = work / "hf-large"
    start = time.perf_counter()
    make_tiny_llama(hf, seed=0, dtype=dtype, **sizes)
    generate_s = time.perf_counter() - start
    files = hf_files(hf)
    hf_bytes = sum(p.stat().st_size for p in files)
    plain_read(files)  # into the page cache

    read_s = median_seconds(lambda: plain_read(files), repeat)
    sha_s = median_seconds(lambda: sha256_files(files), repeat)
    copy_dir = work / "hf-copy"
    copy_dir.mkdir()
    copy_s = median_seconds(lambda: [shutil.copyfile(p, copy_dir / p.name) for p in files], repeat)
    shutil.rmtree(copy_dir)

    out: dict[str, Any] = {
        "model": {**TINY, **sizes, "dtype": dtype},
        "hf_mb": round(hf_bytes / MB, 1),
        "generate_hf_s": round(generate_s, 2),
        "baselines": {
            "plain_read_s": round(read_s, 4), "plain_read_mb_s": mbps(hf_bytes, read_s),
            "sha256_hashlib_s": round(sha_s, 4), "sha256_hashlib_mb_s": mbps(hf_bytes, sha_s),
            "plain_copy_s": round(copy_s, 4), "plain_copy_mb_s": mbps(hf_bytes, copy_s),
        },
    }
    for tp in (1, 2):
        spec = ConvertSpec(tp=tp, dtype=dtype)
        dest = work / f"ckpt-tp{tp}"
        files_s = median_seconds(lambda: write_checkpoint(hf, spec, dest), repeat)
        written = dir_bytes(dest, "rank*.safetensors")
        shutil.rmtree(dest)

        stores: list[Path] = []
        manifests: list[TensorManifest] = []

        def into_store() -> None:
            store = ContentStore(work / f"store-tp{tp}-{len(stores)}")
            stores.append(store.root)
            manifests[:] = [store_tensors(store.blobs, iter_rank_tensors(hf, spec, r)) for r in range(tp)]

        store_s = median_seconds(into_store, repeat)
        stats = store_stats(ContentStore(stores[-1]))
        for root in stores:
            shutil.rmtree(root, ignore_errors=True)
        out[f"tp{tp}"] = {
            "write_checkpoint_s": round(files_s, 4),
            "write_checkpoint_mb_s": mbps(hf_bytes, files_s),
            "write_checkpoint_out_mb": round(written / MB, 1),
            "into_store_s": round(store_s, 4),
            "into_store_mb_s": mbps(hf_bytes, store_s),
            "into_store_tensor_mb_all_ranks": round(sum(m.total_bytes for m in manifests) / MB, 1),
            "into_store_logical_mb": round(stats.logical_bytes / MB, 1),
            "into_store_disk_mb": round(stats.disk_bytes / MB, 1),
            "ratio_write_checkpoint_vs_plain_read": round(files_s / read_s, 2),
            "ratio_write_checkpoint_vs_sha256": round(files_s / sha_s, 2),
            "ratio_write_checkpoint_vs_plain_copy": round(files_s / copy_s, 2),
            "ratio_into_store_vs_plain_read": round(store_s / read_s, 2),
            "ratio_into_store_vs_sha256": round(store_s / sha_s, 2),
        }
    out["notes"] = [
        "ratios are time / baseline time (higher = slower than the baseline)",
        "write_checkpoint fsyncs each rank file; the plain copy baseline does not",
        "tp=2 writes more than it reads: the embedding and norms are replicated per rank "
        "(the store keeps one blob for each replicated tensor)",
    ]
    shutil.rmtree(hf)
    return out


# --------------------------------------------------------------------------- 2./3. rebuilds
class BuildError(Exception):
    pass


def build(root: Path) -> trtcas.api.BuildResult:
    try:
        result = trtcas.build(root / "trtcas.toml", cache_dir=root / "cache")
    except Exception as exc:  # reported, not fatal
        raise BuildError(f"{type(exc).__name__}: {exc}") from exc
    if not result.ok:
        raise BuildError(f"build failed: {result.error}")
    return result


def status(result) -> dict[str, str]:
    return {a.id: a.status for a in result.actions}


def comparable(st: dict[str, str]) -> dict[str, Any]:
    """Statuses with the engines' as a sorted list: which rank builds and which shares the
    build is a race between the two ranks (jobs=2), not a difference between runs."""
    out: dict[str, Any] = {k: v for k, v in st.items() if not k.startswith("engine[")}
    out["engines"] = sorted(v for k, v in st.items() if k.startswith("engine["))
    return out


def manifest_at(store: ContentStore, digest: str) -> TensorManifest:
    return TensorManifest.from_bytes(store.blobs.get_bytes(Digest.parse(digest)))


def blob_sizes(store: ContentStore) -> dict[Digest, tuple[int, int]]:
    """digest -> (logical size, bytes on disk)."""
    return {b.digest: (b.digest.size, b.stored_size) for b in store.blobs.iter_blobs()}


def convert_digests(store: ContentStore, result) -> dict[Digest, int]:
    return {e.digest: e.digest.size for a in result.actions if a.rule == "llm.convert"
            for e in manifest_at(store, a.outputs["weights"]).entries}


def attribute_growth(store: ContentStore, new: dict[Digest, tuple[int, int]], result) -> dict[str, int]:
    """New blob bytes by what references them in ``result`` (first match wins)."""
    owner: dict[Digest, str] = {}
    for a in result.actions:  # tensors inside the convert manifests first
        if a.rule == "llm.convert":
            for e in manifest_at(store, a.outputs["weights"]).entries:
                owner.setdefault(e.digest, "convert: tensors")
    for a in result.actions:  # then the network's weights (as TensorRT sees them)
        if a.rule == "trt.network":
            for e in manifest_at(store, a.outputs["weights"]).entries:
                owner.setdefault(e.digest, "network: weight tensors")
    for a in result.actions:  # then action outputs themselves
        for name, d in a.outputs.items():
            owner.setdefault(Digest.parse(d), f"{a.rule}: {name}")
    grown: dict[str, int] = {}
    for digest, (size, _) in new.items():
        key = owner.get(digest, "other (e.g. stored build logs)")
        grown[key] = grown.get(key, 0) + size
    return dict(sorted(grown.items(), key=lambda kv: -kv[1]))


def store_growth(root: Path, before_blobs: dict[Digest, tuple[int, int]], before_actions: int, first, second, sizes: dict, dtype_size: int) -> dict[str, Any]:
    store = ContentStore(root / "cache")
    after = blob_sizes(store)
    new = {d: s for d, s in after.items() if d not in before_blobs}
    before_logical, after_logical = (sum(v[0] for v in blobs.values()) for blobs in (before_blobs, after))
    before_disk, after_disk = (sum(v[1] for v in blobs.values()) for blobs in (before_blobs, after))
    growth = after_logical - before_logical
    changed = convert_digests(store, second)
    old = convert_digests(store, first)
    changed_tensors = sum(s for d, s in changed.items() if d not in old)
    full_copy = sum(manifest_at(store, a.outputs["weights"]).total_bytes for a in second.actions if a.rule == "llm.convert")
    full_files = dir_bytes(root / "out" / "checkpoint", "rank*.safetensors")
    hf_layer = sum(
        dtype_size * math.prod(shape)
        for name, shape in tensor_shapes({**TINY, **sizes}, False) if name.startswith(f"model.layers.{FINETUNE_LAYER}.")
    )
    hf_total = dir_bytes(root / "hf", "*.safetensors")
    engine_plans = dir_bytes(root / "out" / "engines", "*.engine")
    by_owner = attribute_growth(store, new, second)
    stats = store_stats(store)
    return {
        "logical_bytes_before": before_logical,
        "logical_bytes_after": after_logical,
        "growth_bytes": growth,
        "disk_bytes_before": before_disk,
        "disk_bytes_after": after_disk,
        "disk_growth_bytes": after_disk - before_disk,
        "action_cache_entries_added": stats.actions - before_actions,
        "hf_bytes_total": hf_total,
        "hf_bytes_changed_layer": hf_layer,
        "changed_converted_tensor_bytes": changed_tensors,
        "full_copy_converted_checkpoint_bytes": full_copy,
        "full_copy_checkpoint_files_bytes": full_files,
        "materialized_engine_plans_bytes": engine_plans,
        "ratio_growth_vs_full_copy": round(growth / full_copy, 4),
        "ratio_changed_tensors_vs_full_copy": round(changed_tensors / full_copy, 4),
        "ratio_growth_vs_changed_tensors": round(growth / changed_tensors, 2) if changed_tensors else None,
        "growth_by_owner_bytes": by_owner,
        "note": "every fine-tune stores one new plan per rank with the weights inside (rebuilt engines on the "
                "CPU, refitted plans with the test double); the rest is the changed tensors plus small "
                "manifests and canonical models. disk < logical because plans compress with zstd, weights do not.",
        "growth_excluding_engine_plans_bytes": growth - sum(v for k, v in by_owner.items() if k.endswith(": plan")),
        "ratio_growth_excluding_plans_vs_full_copy": round(
            (growth - sum(v for k, v in by_owner.items() if k.endswith(": plan"))) / full_copy, 4),
    }


def expected_surprises(mode: str, step: str, st: dict[str, str]) -> list[str]:
    engines = [st.get(f"engine[rank{r}]") for r in (0, 1)]
    out = []
    if step == "noop" and not set(st.values()) <= {"cached", "shared"}:
        out.append(f"{mode} noop: not every action a hit: {st}")
    if step == "cold" and mode == "refit_test_double" and sorted(engines) != ["built", "shared"]:
        out.append(f"{mode} cold: expected one engine built and one shared, got {engines}")
    if step == "finetune":
        if mode == "real_cpu_backend" and engines != ["built", "built"]:
            out.append(f"{mode} finetune: expected both engines to rebuild (embedded weights), got {engines}")
        if mode == "refit_test_double":
            if "built" in engines:
                out.append(f"{mode} finetune: expected engine hits, got {engines}")
            if [st.get(f"refit[rank{r}]") for r in (0, 1)] != ["built", "built"]:
                out.append(f"{mode} finetune: expected both refits to run, got {st}")
    return out


def bench_rebuilds(work: Path, mode: str, backend: str, sizes: dict, dtype: str, repeat: int) -> dict[str, Any]:
    runs: dict[str, list] = {s: [] for s in STEPS}
    errors: list[str] = []
    growth: dict[str, Any] | None = None
    for run in range(repeat):
        root = work / f"{mode}-{run}"
        root.mkdir(parents=True)
        (root / "trtcas.toml").write_text(TARGET.format(dtype=dtype, backend=backend))
        make_tiny_llama(root / "hf", seed=0, dtype=dtype, **sizes)
        try:
            results = {}
            for step in STEPS:
                if step == "finetune":
                    store = ContentStore(root / "cache")
                    before_blobs, before_actions = blob_sizes(store), store_stats(store).actions
                    shutil.rmtree(root / "hf")
                    make_tiny_llama(root / "hf", seed=0, dtype=dtype, finetune_layer=FINETUNE_LAYER, **sizes)
                results[step] = build(root)
                runs[step].append(results[step])
            if growth is None:
                growth = store_growth(root, before_blobs, before_actions, results["cold"], results["finetune"],
                                      sizes, dtype_size=2)  # float16 and bfloat16
        except BuildError as exc:
            errors.append(f"run {run}: {exc}")
        shutil.rmtree(root)

    out: dict[str, Any] = {"backend": backend}
    if mode == "refit_test_double":
        out["label"] = ("TEST DOUBLE (tests/support/refit_double.py): engines are real CPU builds "
                        "without refit; the 'refit' appends a marker to the plan. Statuses are what a "
                        "refit-capable GPU backend would do; refit seconds are not a GPU refit's.")
    surprises = list(errors)
    for step in STEPS:
        results = runs[step]
        if not results:
            out[step] = {"error": "no successful run"}
            continue
        statuses = [status(r) for r in results]
        if any(comparable(s) != comparable(statuses[0]) for s in statuses):
            surprises.append(f"{mode} {step}: statuses differ between runs: {statuses}")
        surprises += expected_surprises(mode, step, statuses[0])
        out[step] = {
            "build_s": round(statistics.median(r.seconds for r in results), 4),
            "runs_s": [round(r.seconds, 4) for r in results],
            "actions": {
                a.id: {"status": a.status if len(seen := {s[a.id] for s in statuses}) == 1 else "|".join(sorted(seen)),
                       "seconds": round(statistics.median(res.action(a.id).seconds for res in results), 4)}
                for a in results[0].actions
            },
            # a "shared" engine waits for the one that builds; count only the builds
            "engine_build_s": round(statistics.median(
                sum(a.seconds for a in res.actions if a.rule == "trt.engine" and a.status == "built")
                for res in results), 4),
        }
    if all("build_s" in out[s] for s in STEPS):
        cold = out["cold"]["build_s"]
        out["ratio_finetune_vs_cold"] = round(out["finetune"]["build_s"] / cold, 4)
        out["ratio_noop_vs_cold"] = round(out["noop"]["build_s"] / cold, 4)
    out["store_growth_after_finetune"] = growth
    out["surprises"] = surprises
    return out


def warm_up(work: Path, backend: str) -> tuple[float, tuple[str, ...]]:
    """One unmeasured tiny build per backend: loads TensorRT (and the test double)."""
    root = work / f"warm-{backend}"
    root.mkdir()
    (root / "trtcas.toml").write_text(TARGET.format(dtype="float16", backend=backend))
    make_tiny_llama(root / "hf", seed=1)
    result = build(root)
    shutil.rmtree(root)
    return result.seconds, result.notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="convert repeats (median)")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    parser.add_argument("--rebuild-model", choices=sorted(REBUILD_MODELS), default="mid",
                        help="tiny: make_tiny_llama's TINY; mid: hidden 256, 4 layers, vocab 1024")
    parser.add_argument("--rebuild-repeat", type=int, default=3, help="fresh projects per rebuild mode (median)")
    parser.add_argument("--skip-convert", action="store_true")
    parser.add_argument("--dir", default=None, help="scratch dir on the filesystem to measure")
    args = parser.parse_args()

    from trtcas.rules.trt.toolchain import TOOLCHAINS  # noqa: PLC0415

    from support.refit_double import NAME, refit_test_double  # noqa: PLC0415

    TOOLCHAINS.register(NAME, refit_test_double)

    work = Path(tempfile.mkdtemp(prefix="trtcas-llm-bench-", dir=args.dir))
    # registered before any store exists, so it runs after every store's atexit counter flush,
    # which would otherwise re-create <cache>/stats.sqlite under the deleted work dir
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    start = time.perf_counter()
    try:
        large = {"hidden_size": args.hidden, "intermediate_size": args.intermediate,
                 "num_hidden_layers": args.layers, "vocab_size": args.vocab}
        result: dict[str, Any] = {"benchmark": "llm", "repeat": args.repeat, "statistic": "median"}
        if not args.skip_convert:
            result["convert"] = bench_convert(work, large, args.dtype, args.repeat)
        sizes = REBUILD_MODELS[args.rebuild_model]
        warm = {backend: warm_up(work, backend) for backend in MODES.values()}
        result["rebuilds"] = {
            "model": {**TINY, **sizes, "dtype": args.dtype, "name": args.rebuild_model, "tp": 2,
                      "finetune_layer": FINETUNE_LAYER},
            "rebuild_repeat": args.rebuild_repeat,
            "warmup_build_s": {b: round(s, 3) for b, (s, _) in warm.items()},  # unmeasured, tiny model
            "notes": {b: list(n) for b, (_, n) in warm.items()},
            **{mode: bench_rebuilds(work, mode, backend, sizes, args.dtype, args.rebuild_repeat)
               for mode, backend in MODES.items()},
        }
        result["total_s"] = round(time.perf_counter() - start, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_json(result)


if __name__ == "__main__":
    main()
