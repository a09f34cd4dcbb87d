"""Fault soak: builds under SIGKILLs, a gc loop and a hostile remote; nothing lost, never wrong.

Prints one JSON object. One cache dir is shared by every build; a real nginx (Bazel HTTP
protocol) sits behind the test fault proxy (``tests/support/fault_proxy.py``), whose mode
changes at random before every build: pass, drop, delay, error500, corrupt, truncate, drip.
The cache's ``gc-min-age`` is 0 and its ``remote-deadline`` 2 s, so only leases protect
running builds and a dripping remote costs seconds.

1. ``--kills`` times: a ``trtcas build`` of a random project (conv variants and, unless
   ``--no-llm``, a tiny tp=2 Llama) is started with the remote and SIGKILLed after a random
   delay within ``--kill-window`` seconds (a build that finished first is judged like any
   other).
2. Every project is then built ``--builds`` times (no kill), still with the hostile remote.
3. All along, another process runs ``trtcas cache gc --max-size 0`` in a loop.

Figures (all expected 0): ``builds_failed`` (builds not killed that exited non-zero),
``blobs_corrupt`` (``verify`` of the cache: blobs whose bytes are not their digest, plus
action entries naming missing or bad blobs), ``outputs_wrong`` (an output file whose bytes
are not the digest ``build.json`` records, or a ``build.json`` digest other than the one the
cache's action entry holds for that key). ``outputs_differ_from_clean_build`` compares the
engines with a clean build in a fresh cache without remote (TensorRT-RTX plans of these
models are byte-identical across builds; a difference would be a wrong output too).

Run: ``.venv/bin/python benchmarks/fault_soak_bench.py [--kills 20] [--builds 2] [--seed 0] [--no-llm]``
(needs nginx: ``.ci/install-nginx.sh``).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402

MODES = ("pass", "pass", "drop", "delay", "error500", "corrupt", "truncate", "drip")


def trtcas_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "trtcas.cli", *map(str, args)]


def make_projects(base: Path, llm: bool) -> list[Path]:
    import onnx

    import make_models
    from support.targets import CONV_TARGET

    projects = []
    for seed in range(3):
        root = base / f"conv{seed}"
        root.mkdir(parents=True)
        (root / "trtcas.toml").write_text(CONV_TARGET.format(backend="auto").replace('"conv"', f'"conv{seed}"'))
        onnx.save(make_models.make_conv_block(seed=seed), str(root / "model.onnx"))
        projects.append(root)
    if llm:
        from make_tiny_llama import make_tiny_llama

        root = base / "llm"
        root.mkdir()
        (root / "trtcas.toml").write_text((ROOT / "examples" / "llm" / "trtcas.toml").read_text())
        make_tiny_llama(root / "hf", seed=0)
        projects.append(root)
    return projects


class GcLoop:
    """``trtcas cache gc --max-size 0`` over and over in its own processes."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.runs = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            done = subprocess.run(trtcas_cmd("cache", "gc", "--max-size", "0", "--cache-dir", self.cache),
                                  capture_output=True, text=True)
            self.runs += 1
            if done.returncode != 0:
                self.failures.append(done.stderr.strip()[-300:])

    def __enter__(self) -> "GcLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_build(project: Path, cache: Path, remote: str, kill_after: float | None) -> tuple[bool, int, str]:
    """(killed, exit status, stderr tail) of one CLI build, SIGKILLed after ``kill_after`` s."""
    proc = subprocess.Popen(trtcas_cmd("build", project / "trtcas.toml", "--cache-dir", cache, "--remote", remote),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = False
    try:
        proc.wait(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        if kill_after is None:
            raise
        proc.send_signal(signal.SIGKILL)
        killed = True
    stderr = proc.communicate()[1]
    return killed, proc.returncode, stderr.strip()[-400:]


def outputs_wrong(project: Path, cache: Path) -> list[str]:
    """Outputs whose bytes or recorded digests disagree with the cache (see the docstring)."""
    from trtcas.cas.content_store import ContentStore
    from trtcas.cas.digest import Digest
    from trtcas.cas.statcache import NullStatCache
    from trtcas.graph.outputs import OUTPUT_FORMATS
    from trtcas.graph.rule import RULES

    store = ContentStore(cache)
    record = json.loads((project / "out" / "build.json").read_text())
    formats = {digest: RULES.get(action["rule"]).output_formats.get(name, "file")
               for action in record["actions"].values() for name, digest in action["outputs"].items()}
    wrong = []
    for relative, digest in record["outputs"].items():
        path = project / "out" / relative
        fmt = OUTPUT_FORMATS.get(formats.get(digest, "file"))  # bytes re-hashed: no stat cache
        if path.is_symlink() or not fmt.up_to_date(store.blobs, NullStatCache(), Digest.parse(digest), path):
            wrong.append(f"{project.name}/{relative}: is not {digest}")
    for action_id, action in record["actions"].items():
        entry = store.actions.read(Digest.parse(action["key"]))
        if entry is not None and {n: str(d) for n, d in entry.outputs.items()} != action["outputs"]:
            wrong.append(f"{project.name}/{action_id}: build.json outputs differ from the cache's entry")
    return wrong


def engines(project: Path) -> dict[str, str]:
    record = json.loads((project / "out" / "build.json").read_text())
    return {k: v for k, v in record["outputs"].items() if k.startswith("engines/")}


def clean_engines(projects: list[Path], base: Path) -> dict[str, dict[str, str]]:
    """The engines of each project built in a fresh cache, no remote, no faults."""
    import shutil

    clean = {}
    for project in projects:
        copy = base / f"clean-{project.name}"
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns("out"))
        subprocess.run(trtcas_cmd("build", copy / "trtcas.toml", "--cache-dir", base / "clean-cache"), check=True,
                       capture_output=True)
        clean[project.name] = engines(copy)
    return clean


def soak(kills: int, builds: int, seed: int, llm: bool, kill_window: float) -> dict:
    from trtcas.cas.content_store import ContentStore
    from trtcas.cas.gc import verify_store

    from support.fault_proxy import FaultProxy
    from support.nginx_server import run_nginx

    rng = random.Random(seed)
    base = Path(tempfile.mkdtemp(prefix="trtcas-soak-"))
    cache = base / "cache"
    projects = make_projects(base / "projects", llm)
    for name, value in (("gc-min-age", "0"), ("remote-deadline", "2s")):
        subprocess.run(trtcas_cmd("cache", "config", name, value, "--cache-dir", cache), check=True, capture_output=True)
    failed: list[str] = []
    killed = finished_early = 0
    modes_used: dict[str, int] = {}
    start = time.perf_counter()
    with run_nginx(base / "nginx") as nginx, FaultProxy(nginx.port, delay_s=1.0, drip_s=0.2,
                                                        socket_timeout_s=10) as proxy, GcLoop(cache) as gc_loop:
        def one(project: Path, kill_after: float | None) -> None:
            nonlocal killed, finished_early
            mode = rng.choice(MODES)
            modes_used[mode] = modes_used.get(mode, 0) + 1
            proxy.set_mode(mode, rng.choice((None, "/ac/", "/cas/")))
            was_killed, status, stderr = run_build(project, cache, proxy.url, kill_after)
            killed += was_killed
            finished_early += kill_after is not None and not was_killed
            if not was_killed and status != 0:
                failed.append(f"{project.name} (remote {mode}): {stderr}")

        for _ in range(kills):
            one(rng.choice(projects), rng.uniform(0.2, kill_window))
        for _ in range(builds):
            for project in projects:
                one(project, None)
        soak_seconds = time.perf_counter() - start
        gc_runs, gc_failures = gc_loop.runs, list(gc_loop.failures)
    report = verify_store(ContentStore(cache))
    wrong = [w for p in projects for w in outputs_wrong(p, cache)]
    clean = clean_engines(projects, base)
    differ = [f"{p.name}/{k}" for p in projects for k, v in engines(p).items() if clean[p.name].get(k) != v]
    return {
        "builds_failed": len(failed),
        "blobs_corrupt": len(report.bad_blobs) + len(report.dangling_actions),
        "outputs_wrong": len(wrong),
        "outputs_differ_from_clean_build": len(differ),
        "kills": killed,
        "killed_builds_that_finished_first": finished_early,
        "builds_not_killed": builds * len(projects) + finished_early,
        "gc_runs": gc_runs,
        "gc_runs_failed": len(gc_failures),
        "remote_modes": dict(sorted(modes_used.items())),
        "stale_temp_files": report.stale_temp_files,
        "projects": [p.name for p in projects],
        "seconds": round(soak_seconds, 1),
        "details": {"failed": failed[:5], "wrong": wrong[:5], "differ": differ[:5], "gc": gc_failures[:3],
                    "bad_blobs": [list(b) for b in report.bad_blobs[:5]]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="builds SIGKILLed at a random moment")
    parser.add_argument("--builds", type=int, default=2, help="unkilled builds of every project afterwards")
    parser.add_argument("--kill-window", type=float, default=2.5, help="kill within this many seconds of the start")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-llm", action="store_true", help="conv projects only (faster)")
    args = parser.parse_args()
    _harness.print_json({"fault_soak": soak(args.kills, args.builds, args.seed, not args.no_llm, args.kill_window)})


if __name__ == "__main__":
    main()
