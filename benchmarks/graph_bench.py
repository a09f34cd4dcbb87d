"""Graph-engine overhead, with same-run baselines. Prints JSON; not a test.

    python benchmarks/graph_bench.py [--actions 1000] [--repeat 3] [--shapes chain,fan]
                                     [--parallel-actions 100] [--sleep-ms 10] [--budget-ms 1]
                                     [--profile] [--dir DIR]

Two questions:

- ``noop``: what does an action cost when it is already cached? A synthetic target of
  ``--actions`` cheap actions (explicit ``[[action]]`` tables, a rule registered here that
  hashes its input into a 32-byte output) is built once cold, then rebuilt with nothing
  changed (every action ``cached``), ``--repeat`` times with jobs=1 and with jobs=2. Two
  shapes: ``chain`` (each action consumes the previous one's output: nothing can overlap)
  and ``fan`` (each action reads its own source file: one stat-cache lookup per action). Reported per shape: the whole ``trtcas.build()`` call,
  per cached action, where the time goes (load config / plan / execute / bookkeeping after
  the execute, by wrapping the functions ``trtcas.api.build`` calls), ``plan_graph`` timed
  on its own, and the baseline every cache must pay: ``os.stat`` + reading one small file
  (the action-cache entry itself) per action. When a cached action costs more than
  ``--budget-ms`` (or with ``--profile``), a cProfile of one no-op rebuild (main thread and
  the worker threads merged) gives the top functions. ``diagnosis_hit_counter`` times the
  one SQLite write every action-cache hit makes (``Counters.add``) against the same write
  with ``synchronous=NORMAL``; ``what_if_no_hit_counter_jobs2`` is the no-op rebuild with
  that write stubbed out in this process.
- ``parallel``: ``--parallel-actions`` independent actions whose rule sleeps ``--sleep-ms``,
  built cold with jobs=1 and jobs=2 (fresh cache each run); the ideal is the summed sleep
  divided by the job count.

Every figure is a median of ``--repeat`` runs; baselines are measured in the same run,
because these machines are noisy and only ratios travel. Outputs are kept incompressible
(stored raw), so the figures are the graph's overhead and not zstd's.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import hashlib
import io
import os
import pstats
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import trtcas
import trtcas.api
from trtcas.config import load_config
from trtcas.graph.rule import RULES, Rule
from trtcas.graph.runner import ActionRunner
from trtcas.graph.schedulers.threads import ThreadScheduler

from _harness import print_json  # noqa: E402

# ---- rules (registered in this process only) ------------------------------------------------


def _digest_of_input(ctx) -> dict[str, bytes]:
    # 32 incompressible bytes, so every output is stored raw (see the module docstring).
    return {"out": hashlib.sha256(ctx.input_bytes(ctx.params["from"]) + b"|%d" % ctx.params["i"]).digest()}


def _sleep(ctx) -> dict[str, bytes]:
    time.sleep(ctx.params["sleep_ms"] / 1e3)
    return {"out": b"slept %d" % ctx.params["i"]}


RULES.register("bench.digest", Rule("bench.digest", 1, _digest_of_input))
RULES.register("bench.sleep", Rule("bench.sleep", 1, _sleep))

# ---- targets --------------------------------------------------------------------------------


def write_chain(root: Path, n: int) -> Path:
    """a0 reads src.txt; a<i> consumes a<i-1>'s output. The last one is materialized."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "src.txt").write_text("seed")
    parts = ['[target]\nname = "chain"\n']
    for i in range(n):
        inputs = 'src = "src.txt"' if i == 0 else f'prev = "@a{i - 1}:out"'
        source = "src" if i == 0 else "prev"
        parts.append(f'[[action]]\nid = "a{i}"\nrule = "bench.digest"\ninputs = {{ {inputs} }}\n'
                     f'params = {{ i = {i}, from = "{source}" }}\n')
    parts.append('materialize = { out = "last.txt" }\n')
    (root / "trtcas.toml").write_text("".join(parts))
    return root / "trtcas.toml"


def write_fan(root: Path, n: int) -> Path:
    """a<i> reads its own source file src/<i>.txt; no action depends on another."""
    (root / "src").mkdir(parents=True, exist_ok=True)
    parts = ['[target]\nname = "fan"\n']
    for i in range(n):
        (root / "src" / f"{i}.txt").write_text(f"source {i}")
        parts.append(f'[[action]]\nid = "a{i}"\nrule = "bench.digest"\ninputs = {{ src = "src/{i}.txt" }}\n'
                     f'params = {{ i = {i}, from = "src" }}\n')
    (root / "trtcas.toml").write_text("".join(parts))
    return root / "trtcas.toml"


def write_sleepers(root: Path, n: int, sleep_ms: float) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    parts = ['[target]\nname = "sleepers"\n']
    for i in range(n):
        parts.append(f'[[action]]\nid = "s{i}"\nrule = "bench.sleep"\nparams = {{ i = {i}, sleep_ms = {sleep_ms} }}\n')
    (root / "trtcas.toml").write_text("".join(parts))
    return root / "trtcas.toml"


# ---- measuring ------------------------------------------------------------------------------


class PhaseTimer:
    """Wraps the functions ``trtcas.api.build`` calls, to say where one build's time went."""

    PHASES = {
        "load_config": (trtcas.api, "load_config"),
        "plan": (trtcas.api, "plan_target"),
        "open_store": (trtcas.api, "ContentStore"),
        "fingerprint": (trtcas.api, "collect_fingerprint"),
        "execute": (ThreadScheduler, "execute"),
        "materialize": (trtcas.api, "materialize_outputs"),
        "build_json": (trtcas.api, "write_build_json"),
        "history": (trtcas.api, "save_build"),
        "logs": (trtcas.api, "write_logs"),
    }

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> "PhaseTimer":
        for phase, (owner, name) in self.PHASES.items():
            original = getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._wrap(phase, original))
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)

    def _wrap(self, phase: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

        return timed


def build(target: Path, cache: Path, **kw) -> trtcas.api.BuildResult:
    result = trtcas.build(target, cache_dir=cache, **kw)
    if not result.ok:
        raise SystemExit(f"graph_bench: build of {target} failed: {result.error}")
    return result


def ms(seconds: float) -> float:
    return round(seconds * 1e3, 4)


def baseline_stat_read(cache: Path, keys: list[str]) -> float:
    """os.stat + read of one small file per action: the action-cache entries themselves."""
    paths = [cache / "ac" / k[:2] / k for k in keys]
    start = time.perf_counter()
    for path in paths:
        os.stat(path)
        with open(path, "rb") as f:
            f.read()
    return time.perf_counter() - start


def profile_build(target: Path, cache: Path, jobs: int, top: int = 5) -> dict[str, Any]:
    """cProfile one no-op build, the executor's worker threads included (one profiler per
    thread, merged), and return the top functions by cumulative and by own time."""
    profilers: dict[int, cProfile.Profile] = {}
    lock = threading.Lock()
    original = ActionRunner.run

    def profiled(self, action, dry_run=False, invoke=None):
        with lock:
            prof = profilers.setdefault(threading.get_ident(), cProfile.Profile())
        prof.enable()
        try:
            return original(self, action, dry_run, invoke)
        finally:
            prof.disable()

    main = cProfile.Profile()
    ActionRunner.run = profiled
    try:
        main.enable()
        result = build(target, cache, jobs=jobs)
        main.disable()
    finally:
        ActionRunner.run = original
    stats = pstats.Stats(main, stream=io.StringIO())
    for prof in profilers.values():
        stats.add(prof)

    def rows(sort_index: int, skip: Callable[[tuple], bool]) -> list[dict[str, Any]]:
        entries = []
        for func, (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            if skip(func):
                continue
            entries.append((func, nc, tt, ct))
        entries.sort(key=lambda e: e[sort_index], reverse=True)
        return [
            {"function": f"{Path(f[0]).name}:{f[1]}({f[2]})", "calls": nc, "tottime_s": round(tt, 4), "cumtime_s": round(ct, 4)}
            for f, nc, tt, ct in entries[:top]
        ]

    # Cumulative time of the wrappers (build, execute, wait, _timed, ...) is the whole
    # build; skip the frames that only dispatch so the list names where the work is.
    dispatch = {"build", "execute", "_timed", "profiled", "timed", "wait", "result", "_execute_one", "_obtain",
                "_wait_for_tstate_lock", "join", "__exit__", "shutdown"}
    wall = result.seconds
    return {
        "note": "one no-op rebuild under cProfile (slower than unprofiled); main thread + worker threads merged",
        "profiled_build_s": round(wall, 4),
        "top_cumulative": rows(3, lambda f: f[2] in dispatch or f[0] == "~"),
        "top_cumulative_with_dispatch_frames": rows(3, lambda f: False),
        "top_own_time": rows(2, lambda f: False),
    }


def noop_runs(target: Path, cache: Path, n: int, repeat: int, jobs: int) -> dict[str, Any]:
    totals, phases, inside = [], [], []
    for _ in range(repeat):
        with PhaseTimer() as timer:
            result = build(target, cache, jobs=jobs)
        assert result.counts() == {"cached": n}, result.counts()
        totals.append(result.seconds)
        phases.append(timer.seconds)
        inside.append(sum(r.seconds for r in result.actions))
    total = statistics.median(totals)
    phase_median = {p: statistics.median(ph.get(p, 0.0) for ph in phases) for p in PhaseTimer.PHASES}
    return {
        "build_s": round(total, 4),
        "per_action_ms": ms(total / n),
        "runs_s": [round(t, 4) for t in totals],
        "breakdown_ms": {p: ms(s) for p, s in phase_median.items()} | {"other": ms(total - sum(phase_median.values()))},
        "execute_per_action_ms": ms(phase_median["execute"] / n),
        "record_seconds_per_action_ms": ms(statistics.median(inside) / n),
    }


def bench_noop(work: Path, shape: str, n: int, repeat: int, budget_ms: float, force_profile: bool) -> dict[str, Any]:
    root = work / f"{shape}-{n}"
    target = (write_chain if shape == "chain" else write_fan)(root, n)
    cache = root / "cache"
    time.sleep(2.1)  # let sources age past the stat cache's 2 s granularity, as a real tree would be
    cold = build(target, cache)
    assert set(cold.counts()) == {"built"}, cold.counts()
    keys = [r.key.split(":", 1)[1].split("/", 1)[0] for r in cold.actions]
    build(target, cache)  # the first rebuild fills the stat cache and page cache; not measured

    by_jobs = {f"jobs{jobs}": noop_runs(target, cache, n, repeat, jobs) for jobs in (1, 2)}
    # What-if, same cache, same run: the hit counter (one autocommitted SQLite INSERT per
    # action-cache hit, see diagnosis_hit_counter) replaced by a no-op.
    from trtcas.cas.counters import Counters

    saved_add = Counters.add
    Counters.add = lambda self, name, amount=1: None
    try:
        without_counter = noop_runs(target, cache, n, repeat, 2)
    finally:
        Counters.add = saved_add

    config = load_config(target)
    plan_times = []
    for _ in range(repeat):
        start = time.perf_counter()
        trtcas.api.plan_graph(config)
        plan_times.append(time.perf_counter() - start)
    base = statistics.median(baseline_stat_read(cache, keys) for _ in range(max(repeat, 5)))
    worst = max(v["per_action_ms"] for v in by_jobs.values())
    out: dict[str, Any] = {
        "shape": shape,
        "actions": n,
        "cold_build_s": round(cold.seconds, 3),
        "cold_per_action_ms": ms(cold.seconds / n),
        "noop": by_jobs,
        "what_if_no_hit_counter_jobs2": {k: without_counter[k] for k in ("build_s", "per_action_ms", "execute_per_action_ms")},
        "plan_graph_alone_ms": ms(statistics.median(plan_times)),
        "baseline_stat_plus_read_per_action_ms": ms(base / n),
        "ratio_noop_vs_baseline": {k: round(v["build_s"] / base, 1) for k, v in by_jobs.items()},
        "under_budget": worst < budget_ms,
    }
    if force_profile or worst >= budget_ms:
        out["profile_jobs2"] = profile_build(target, cache, 2)
    return out


def bench_sqlite_commit(work: Path, n: int, repeat: int) -> dict[str, Any]:
    """What one hit counter increment costs: trtcas's Counters.add (one autocommitted
    INSERT per hit, WAL, SQLite's default synchronous=FULL) next to the same statement with
    synchronous=NORMAL, and next to counting in memory and adding once per build."""
    import sqlite3

    from trtcas.cas.counters import Counters

    def real() -> float:
        counters = Counters(work / f"counters-{time.perf_counter_ns()}.sqlite")
        counters.add("warm")
        start = time.perf_counter()
        for _ in range(n):
            counters.add("ac_hit")
        return time.perf_counter() - start

    def normal() -> float:
        conn = sqlite3.connect(work / f"normal-{time.perf_counter_ns()}.sqlite", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        sql = "INSERT INTO counter VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
        start = time.perf_counter()
        for _ in range(n):
            conn.execute(sql, ("ac_hit", 1))
        conn.close()
        return time.perf_counter() - start

    real_s = statistics.median(real() for _ in range(repeat))
    normal_s = statistics.median(normal() for _ in range(repeat))
    return {
        "increments": n,
        "counters_add_per_call_ms": ms(real_s / n),
        "same_insert_synchronous_normal_per_call_ms": ms(normal_s / n),
        "ratio": round(real_s / normal_s, 1),
    }


def bench_parallel(work: Path, n: int, sleep_ms: float, repeat: int) -> dict[str, Any]:
    target = write_sleepers(work / "sleepers", n, sleep_ms)
    out: dict[str, Any] = {"actions": n, "sleep_ms": sleep_ms, "summed_sleep_s": round(n * sleep_ms / 1e3, 3)}
    medians = {}
    for jobs in (1, 2):
        times = []
        for run in range(repeat):
            cache = work / f"sleepers-cache-j{jobs}-{run}"
            result = build(target, cache, jobs=jobs)
            assert result.counts() == {"built": n}, result.counts()
            times.append(result.seconds)
            shutil.rmtree(cache)
        medians[jobs] = statistics.median(times)
        ideal = n * sleep_ms / 1e3 / jobs
        out[f"jobs{jobs}"] = {
            "build_s": round(medians[jobs], 4),
            "runs_s": [round(t, 4) for t in times],
            "ideal_s": round(ideal, 3),
            "overhead_per_action_ms": ms((medians[jobs] - ideal) / n * jobs),
        }
    out["speedup_jobs2_vs_jobs1"] = round(medians[1] / medians[2], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1000, help="actions in the no-op graphs")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallel-actions", type=int, default=100)
    parser.add_argument("--sleep-ms", type=float, default=10.0)
    parser.add_argument("--budget-ms", type=float, default=1.0, help="profile when a cached action costs this much")
    parser.add_argument("--profile", action="store_true", help="always include a cProfile of a no-op rebuild")
    parser.add_argument("--shapes", default="chain,fan", help="comma-separated: chain, fan")
    parser.add_argument("--dir", default=None, help="scratch dir on the filesystem to measure")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trtcas-graph-bench-", dir=args.dir))
    try:
        noop = {shape: bench_noop(work, shape, args.actions, args.repeat, args.budget_ms, args.profile)
                for shape in args.shapes.split(",") if shape}
        result = {
            "benchmark": "graph",
            "repeat": args.repeat,
            "statistic": "median",
            "budget_per_cached_action_ms": args.budget_ms,
            "noop": noop,
            "diagnosis_hit_counter": bench_sqlite_commit(work, min(args.actions, 500), args.repeat),
            "parallel": bench_parallel(work, args.parallel_actions, args.sleep_ms, args.repeat),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_json(result)


if __name__ == "__main__":
    main()
