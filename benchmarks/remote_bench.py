"""Remote-cache throughput on loopback against a real nginx, next to curl on the same file.

Prints one JSON object. Speeds are MB/s (10^6 bytes per second), the median of ``--runs``
runs, page cache warm. What each figure includes:

- ``trtcas.upload``: ``HttpRemote.put_blob`` streaming the stored blob (opened through the
  BlobStore, so with its verification) to ``PUT /cas/<hex>``.
- ``trtcas.download_verified``: ``HttpRemote.get_blob`` into ``BlobStore.put_verified_stream``,
  the path a remote hit takes: hash while writing a temp file, fsync, install.
- ``trtcas.download_raw``: the same GET into a plain file, no hashing, no fsync: the
  protocol code alone, comparable with curl.
- ``curl.upload`` / ``curl.download``: ``curl -T`` / ``curl -o`` of the same file and URL.

``build`` (seconds, not MB/s): two machines sharing the nginx cache. Machine A (its own
project dir and cache dir) builds the example conv block (``examples/make_models.py``) with
``remote=url``: everything is built and uploaded. Then ``--runs`` times a fresh machine B
(new project dir, new cache dir, same files) builds it with the remote (every action
``remote``: download and verify, no TensorRT build), and builds again (every action
``cached``: a local hit). Same-run baseline: the same fresh-machine build without a remote
(every action ``built``). Dirty pages are flushed (``os.sync``) before each machine's first
build, so the fsyncs every build does are not paying for earlier writes.

Run: ``.venv/bin/python benchmarks/remote_bench.py [--size-mb 256] [--runs 3] [--no-blob]``
(needs nginx: ``.ci/install-nginx.sh``); ``--no-blob`` skips the blob-throughput section.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "examples"))

import onnx  # noqa: E402

import trtcas  # noqa: E402
from trtcas.cas.content_store import ContentStore  # noqa: E402
from trtcas.cas.digest import CHUNK, Digest  # noqa: E402
from trtcas.cas.remote.http import HttpRemote  # noqa: E402

import make_models  # noqa: E402
from _harness import print_json, timed, write_random_file  # noqa: E402
from support.nginx_server import run_nginx  # noqa: E402


def _mb_s(size: int, seconds: list[float]) -> float:
    return round(size / statistics.median(seconds) / 1e6, 1)


def _forget_remote(server, digest: Digest) -> None:
    (server.data_dir / "cas" / digest.hex).unlink(missing_ok=True)


def _curl(*args: str) -> None:
    subprocess.run(["curl", "-sS", "-f", "-H", "Expect:", *args], check=True, stdout=subprocess.DEVNULL)


BUILD_TARGET = """
[target]
name = "conv"
[model]
onnx = "model.onnx"
[engine]
targets = ["sm86"]
"""


def _machine(root: Path) -> Path:
    """A project checkout with an empty cache dir, standing for one machine."""
    root.mkdir(parents=True)
    (root / "trtcas.toml").write_text(BUILD_TARGET)
    onnx.save(make_models.make_conv_block(seed=0), str(root / "model.onnx"))
    return root


def _build(root: Path, expect: str, remote: str | None = None):
    result = trtcas.build(root / "trtcas.toml", cache_dir=root / "cache", remote=remote)
    statuses = {r.id: r.status for r in result.actions}
    if not result.ok or set(statuses.values()) != {expect} or result.warnings:
        sys.exit(f"remote_bench: build in {root} expected all {expect!r}, got {statuses} "
                 f"(error {result.error}, warnings {list(result.warnings)})")
    return result


def _actions(results) -> dict:
    return {
        r.id: {"status": r.status, "seconds": round(statistics.median(res.action(r.id).seconds for res in results), 4)}
        for r in results[0].actions
    }


def bench_build(tmp: Path, url: str, runs: int) -> dict:
    os.sync()  # the blob section's writeback would otherwise land in these builds' fsyncs
    machine_a = _build(_machine(tmp / "machine-a"), "built", url)
    remote_hits, local_hits, no_remote = [], [], []
    for run in range(runs):
        b = _machine(tmp / f"machine-b-{run}")
        os.sync()
        remote_hits.append(_build(b, "remote", url))
        local_hits.append(_build(b, "cached", url))
        shutil.rmtree(b)
        lone = _machine(tmp / f"no-remote-{run}")
        os.sync()
        no_remote.append(_build(lone, "built"))
        shutil.rmtree(lone)
    fetched = sum(int(d.rsplit("/", 1)[1]) for r in remote_hits[0].actions for d in r.outputs.values())
    remote_s = statistics.median(r.seconds for r in remote_hits)
    local_s = statistics.median(r.seconds for r in local_hits)
    built_s = statistics.median(r.seconds for r in no_remote)
    return {
        "model": "conv_block",
        "unit": "s",
        "machine_a_build_and_upload_s": round(machine_a.seconds, 4),
        "machine_b_remote_hit_s": round(remote_s, 4),
        "machine_b_local_hit_s": round(local_s, 4),
        "baseline_fresh_build_no_remote_s": round(built_s, 4),
        "ratio_remote_hit_vs_local_hit": round(remote_s / local_s, 2),
        "ratio_remote_hit_vs_fresh_build": round(remote_s / built_s, 3),
        "output_bytes_fetched": fetched,
        "actions": {"remote_hit": _actions(remote_hits), "local_hit": _actions(local_hits), "no_remote": _actions(no_remote)},
        "seconds": {
            "remote_hit": [round(r.seconds, 4) for r in remote_hits],
            "local_hit": [round(r.seconds, 4) for r in local_hits],
            "no_remote": [round(r.seconds, 4) for r in no_remote],
        },
    }


def bench_blob(tmp: Path, server, size: int, runs: int) -> dict:
    source = write_random_file(tmp / "blob.bin", size)
    store = ContentStore(tmp / "store")
    digest = store.blobs.put_file(source)
    remote = HttpRemote(server.url, store.algo, timeout=60, env={})
    url = f"{server.url}/cas/{digest.hex}"

    times: dict[str, list[float]] = {k: [] for k in ("up", "down_verified", "down_raw", "curl_up", "curl_down")}
    for run in range(runs):
        _forget_remote(server, digest)
        times["up"].append(timed(lambda: remote.put_blob(digest, lambda: store.blobs.open(digest))))

        _forget_remote(server, digest)
        times["curl_up"].append(timed(lambda: _curl("-T", str(source), url)))

        target = ContentStore(tmp / f"download-{run}")
        fetch = lambda: remote.get_blob(digest, lambda body: target.blobs.put_verified_stream(body, digest))  # noqa: E731
        times["down_verified"].append(timed(fetch))
        shutil.rmtree(target.root)

        raw = tmp / f"raw-{run}"

        def fetch_raw() -> None:
            with open(raw, "wb") as out:
                remote.get_blob(digest, lambda body: shutil.copyfileobj(body, out, CHUNK))

        times["down_raw"].append(timed(fetch_raw))
        raw.unlink()

        curled = tmp / f"curl-{run}"
        times["curl_down"].append(timed(lambda: _curl("-o", str(curled), url)))
        curled.unlink()
    remote.close()
    _forget_remote(server, digest)
    source.unlink()
    shutil.rmtree(store.root)

    ours_up, ours_down, ours_raw = (_mb_s(size, times[k]) for k in ("up", "down_verified", "down_raw"))
    curl_up, curl_down = (_mb_s(size, times[k]) for k in ("curl_up", "curl_down"))
    return {
        "blob_mb": round(size / 1e6, 1),
        "algo": digest.algo,
        "runs": runs,
        "statistic": "median",
        "unit": "MB/s",
        "trtcas": {"upload": ours_up, "download_verified": ours_down, "download_raw": ours_raw},
        "curl": {"upload": curl_up, "download": curl_down},
        "ratio_vs_curl": {
            "upload": round(ours_up / curl_up, 2),
            "download_verified": round(ours_down / curl_down, 2),
            "download_raw": round(ours_raw / curl_down, 2),
        },
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-blob", action="store_true", help="skip the blob-throughput section (the --size-mb blob)")
    args = parser.parse_args()
    if shutil.which("curl") is None and not args.no_blob:
        sys.exit("remote_bench: curl is not installed")
    size = args.size_mb << 20

    result: dict = {"benchmark": "remote_cache_loopback_nginx"}
    with tempfile.TemporaryDirectory(prefix="trtcas-remote-bench-") as tmp, run_nginx() as server:
        tmp = Path(tmp)
        if not args.no_blob:
            result.update(bench_blob(tmp, server, size, args.runs))
        result["build"] = bench_build(tmp, server.url, args.runs)
    print_json(result)


if __name__ == "__main__":
    main()
