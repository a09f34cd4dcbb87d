"""The build farm's overhead: 16 engine actions on a 2-node local Ray cluster vs threads (-j 2).

    python benchmarks/ray_bench.py [--repeat 3] [--engines 16]

Needs root: it re-runs itself in a network namespace of its own (``unshare -n``, loopback
only), where Ray binds 127.0.0.1, with a real nginx as the shared cache beside it. The
target is the conv block of ``examples/make_models.py`` with an ``[engine] matrix`` of
``--engines`` entries (sm86 / sm120 x optimization levels x workspace sizes, so every
engine has its own key): one network action and ``--engines`` independent engine actions.
Both Ray nodes offer both SMs, so Ray has the same two slots the thread pool has.

Reported, each a median of ``--repeat`` cold builds (fresh driver cache each time):
- ``threads_j2``: the local thread pool with ``-j 2`` (the baseline, same run);
- ``ray_remote``: ``--scheduler ray`` with the nginx remote (data through the cache);
- ``ray_object_store``: ``--scheduler ray`` without a remote (data through Ray's object store);
- ``overhead_per_action_s``: (ray - threads) / actions, and the per-action medians of
  ``queue_seconds`` and wall seconds from ``build --json``;
- ``cached_rebuild``: a rebuild with nothing changed through ``--scheduler ray`` against the
  threads one; ``ray_init_calls`` counts how often Ray was even joined (must be 0).
Each Ray build is a new Ray job, so its worker processes start (and import TensorRT) anew:
that start-up is part of the figure, as it is for a user's build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests"), str(REPO / "examples")]

from _harness import print_json, ratio  # noqa: E402

INNER = "TRTCAS_BENCH_IN_NETNS"


def matrix_target(engines: int) -> str:
    entries = []
    for i in range(engines):
        sm = ("sm86", "sm120")[i % 2]
        level = (i // 2) % 4
        workspace = 1 << (24 + i // 8)
        entries.append(f'{{ name = "e{i:02d}", targets = ["{sm}"], optimization_level = {level}, '
                       f"memory_pool_limits = {{ workspace = {workspace} }} }}")
    return f"""
[target]
name = "ray-bench"
[model]
onnx = "model.onnx"
[engine]
backend = "tensorrt_rtx"
matrix = [{", ".join(entries)}]
"""


def reexec_in_namespace(argv: list[str]) -> int:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        print("ray_bench: needs root and unshare for a network namespace (Ray must bind loopback only)", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="ray-bench-")
    env = {**os.environ, INNER: "1", "RAY_TMPDIR": tmp, "TRTCAS_TEST_NETNS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "examples"), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    inner = " ".join([sys.executable, str(Path(__file__).resolve()), *argv])
    try:
        return subprocess.call(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"], env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace) -> dict:
    import ray

    import trtcas

    import make_models
    from support.nginx_server import run_nginx
    from support.ray_fleet import fake_fleet

    init_calls = 0
    real_init = ray.init

    def counting_init(*a, **kw):
        nonlocal init_calls
        init_calls += 1
        return real_init(*a, **kw)

    ray.init = counting_init
    work = Path(tempfile.mkdtemp(prefix="ray-bench-work-"))
    project = work / "project"
    project.mkdir()
    (project / "model.onnx").write_bytes(make_models.make_conv_block(0).SerializeToString())
    (project / "trtcas.toml").write_text(matrix_target(args.engines))
    target = project / "trtcas.toml"
    counter = iter(range(10**6))

    def cold(**kw) -> trtcas.BuildResult:
        result = trtcas.build(target, cache_dir=work / f"cache-{next(counter)}", **kw)
        assert result.ok, result.error
        assert result.counts().get("built") == args.engines + 1, result.counts()
        return result

    def timed_builds(empty_first=None, **kw) -> tuple[float, list]:
        results = []
        for _ in range(args.repeat):
            if empty_first is not None:  # a cold remote too, or every run after the first is a hit
                shutil.rmtree(empty_first, ignore_errors=True)
                empty_first.mkdir()
            results.append(cold(**kw))
        return statistics.median(r.seconds for r in results), results

    def per_action(results, field: str) -> float:
        values = [getattr(r, field) for res in results for r in res.actions if r.rule == "trt.engine"]
        return round(statistics.median(values), 4)

    try:
        with run_nginx(work / "nginx") as nginx, \
                fake_fleet(work, {"a": ("sm86", "sm120"), "b": ("sm86", "sm120")}) as fleet:
            farm = {"scheduler": "ray", "scheduler_address": fleet.address}
            threads_s, threads_runs = timed_builds(jobs=2)
            remote_s, remote_runs = timed_builds(nginx.data_dir, jobs=args.engines, remote=nginx.url, **farm)
            store_s, store_runs = timed_builds(jobs=args.engines, **farm)
            nodes_used = sorted({r.node_id[:12] for res in remote_runs for r in res.actions})
            cached_dir = work / "cache-0"  # the first threads build's cache: everything in it
            before = init_calls
            ray_times, thread_times = [], []
            for _ in range(max(3, args.repeat)):  # interleaved, so both see the same background load
                ray_times.append(trtcas.build(target, cache_dir=cached_dir, **farm).seconds)
                thread_times.append(trtcas.build(target, cache_dir=cached_dir, jobs=2).seconds)
            cached_calls = init_calls - before
            cached_ray, cached_threads = statistics.median(ray_times), statistics.median(thread_times)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    actions = args.engines + 1
    return {
        "benchmark": "ray_bench",
        "engines": args.engines, "actions": actions, "repeat": args.repeat, "nodes": 2,
        "threads_j2": {"seconds": round(threads_s, 3), "engine_action_median_s": per_action(threads_runs, "seconds")},
        "ray_remote": {"seconds": round(remote_s, 3), "vs_threads": ratio(remote_s, threads_s),
                       "engine_action_median_s": per_action(remote_runs, "seconds"),
                       "queue_median_s": per_action(remote_runs, "queue_seconds"), "nodes_used": len(nodes_used)},
        "ray_object_store": {"seconds": round(store_s, 3), "vs_threads": ratio(store_s, threads_s),
                             "engine_action_median_s": per_action(store_runs, "seconds"),
                             "queue_median_s": per_action(store_runs, "queue_seconds")},
        "overhead_per_action_s": {"ray_remote": round((remote_s - threads_s) / actions, 4),
                                  "ray_object_store": round((store_s - threads_s) / actions, 4)},
        "cached_rebuild": {"ray_s": round(cached_ray, 4), "threads_s": round(cached_threads, 4),
                           "ray_vs_threads": ratio(cached_ray, cached_threads), "ray_init_calls": cached_calls},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", type=int, default=16)
    args = parser.parse_args()
    if os.environ.get(INNER) != "1":
        return reexec_in_namespace(sys.argv[1:])
    start = time.perf_counter()
    result = run(args)
    result["bench_seconds"] = round(time.perf_counter() - start, 1)
    print_json(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
