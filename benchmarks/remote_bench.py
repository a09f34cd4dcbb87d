"""Remote-cache throughput on loopback against a real nginx, next to curl on the same file.

Prints one JSON object. Speeds are MB/s (10^6 bytes per second), the median of ``--runs``
runs, page cache warm. What each figure includes:

- ``trtcas.upload``: ``RemoteCache.put_blob`` streaming the stored blob (opened through the
  BlobStore, so with its verification) to ``PUT /cas/<hex>``.
- ``trtcas.download_verified``: ``RemoteCache.get_blob`` into ``BlobStore.put_verified_stream``,
  the path a remote hit takes: hash while writing a temp file, fsync, install.
- ``trtcas.download_raw``: the same GET into a plain file, no hashing, no fsync: the
  protocol code alone, comparable with curl.
- ``curl.upload`` / ``curl.download``: ``curl -T`` / ``curl -o`` of the same file and URL.

Run: ``.venv/bin/python benchmarks/remote_bench.py [--size-mb 256] [--runs 3]``
(needs nginx: ``.ci/install-nginx.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from nginx_server import run_nginx  # noqa: E402

from trtcas.cas.content_store import ContentStore  # noqa: E402
from trtcas.cas.digest import CHUNK, Digest  # noqa: E402
from trtcas.cas.remote import RemoteCache  # noqa: E402


def _random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as out:
        for offset in range(0, size, CHUNK):
            out.write(os.urandom(min(CHUNK, size - offset)))
    return path


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _mb_s(size: int, seconds: list[float]) -> float:
    return round(size / statistics.median(seconds) / 1e6, 1)


def _forget_remote(server, digest: Digest) -> None:
    (server.data_dir / "cas" / digest.hex).unlink(missing_ok=True)


def _curl(*args: str) -> None:
    subprocess.run(["curl", "-sS", "-f", "-H", "Expect:", *args], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("curl") is None:
        sys.exit("remote_bench: curl is not installed")
    size = args.size_mb << 20

    with tempfile.TemporaryDirectory(prefix="trtcas-remote-bench-") as tmp, run_nginx() as server:
        tmp = Path(tmp)
        source = _random_file(tmp / "blob.bin", size)
        store = ContentStore(tmp / "store")
        digest = store.blobs.put_file(source)
        remote = RemoteCache(server.url, store.algo, timeout=60, env={})
        url = f"{server.url}/cas/{digest.hex}"

        times: dict[str, list[float]] = {k: [] for k in ("up", "down_verified", "down_raw", "curl_up", "curl_down")}
        for run in range(args.runs):
            _forget_remote(server, digest)
            times["up"].append(_timed(lambda: remote.put_blob(digest, lambda: store.blobs.open(digest))))

            _forget_remote(server, digest)
            times["curl_up"].append(_timed(lambda: _curl("-T", str(source), url)))

            target = ContentStore(tmp / f"download-{run}")
            fetch = lambda: remote.get_blob(digest, lambda body: target.blobs.put_verified_stream(body, digest))  # noqa: E731
            times["down_verified"].append(_timed(fetch))
            shutil.rmtree(target.root)

            raw = tmp / f"raw-{run}"

            def fetch_raw() -> None:
                with open(raw, "wb") as out:
                    remote.get_blob(digest, lambda body: shutil.copyfileobj(body, out, CHUNK))

            times["down_raw"].append(_timed(fetch_raw))
            raw.unlink()

            curled = tmp / f"curl-{run}"
            times["curl_down"].append(_timed(lambda: _curl("-o", str(curled), url)))
            curled.unlink()
        remote.close()

    ours_up, ours_down, ours_raw = (_mb_s(size, times[k]) for k in ("up", "down_verified", "down_raw"))
    curl_up, curl_down = (_mb_s(size, times[k]) for k in ("curl_up", "curl_down"))
    print(json.dumps({
        "benchmark": "remote_cache_loopback_nginx",
        "blob_mb": round(size / 1e6, 1),
        "algo": digest.algo,
        "runs": args.runs,
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
    }, indent=2))


if __name__ == "__main__":
    main()
