import json
import os
import subprocess
import sys

import pytest


def trtcas(*args, cache=None, check=True):
    cmd = [sys.executable, "-m", "trtcas.cli", *args]
    if cache is not None:
        cmd += ["--cache-dir", str(cache)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed: {result.stderr}")
    return result


def test_put_get_stats_verify_gc(tmp_path):
    cache = tmp_path / "cache"
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(50_000))
    digest = trtcas("cache", "put", str(src), cache=cache).stdout.strip()
    assert digest.startswith("blake3:") and digest.endswith("/50000")
    trtcas("cache", "get", digest, "-o", str(tmp_path / "out.bin"), cache=cache)
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    stats = json.loads(trtcas("cache", "stats", "--json", cache=cache).stdout)
    assert stats["blobs"] == 1 and stats["logical_bytes"] == 50_000
    assert "checked 1 blobs: ok" in trtcas("cache", "verify", cache=cache).stdout
    gc = json.loads(trtcas("cache", "gc", "--max-size", "1K", "--min-age", "0", "--json", cache=cache).stdout)
    assert gc["evicted_blobs"] == 1
    assert json.loads(trtcas("cache", "stats", "--json", cache=cache).stdout)["blobs"] == 0


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    src = tmp_path / "f"
    src.write_bytes(b"x")
    env = dict(os.environ, TRTCAS_CACHE_DIR=str(tmp_path / "envcache"))
    subprocess.run([sys.executable, "-m", "trtcas.cli", "cache", "put", str(src)], env=env, check=True, capture_output=True)
    assert (tmp_path / "envcache" / "store.json").exists()


@pytest.mark.parametrize("args, message", [
    (["cache", "get", "blake3:abc/1", "-o", "x"], "not a digest"),
    (["cache", "get", "blake3:" + "0" * 64 + "/1", "-o", "x"], "is not in the cache"),
    (["cache", "put", "/nonexistent/file"], "no such file"),
    (["cache", "gc", "--max-size", "lots"], "bad size 'lots'"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    result = trtcas(*args, cache=tmp_path / "cache", check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trtcas: error:") and message in lines[0]


def test_unusable_cache_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    result = trtcas("cache", "stats", cache=blocker / "sub", check=False)
    assert result.returncode == 1 and "cannot create cache dir" in result.stderr


def test_verify_exits_nonzero_on_corruption(tmp_path):
    cache = tmp_path / "cache"
    src = tmp_path / "f"
    src.write_bytes(os.urandom(1000))
    digest = trtcas("cache", "put", str(src), cache=cache).stdout.strip()
    blob = next((cache / "cas" / "blake3").rglob(digest.split(":")[1].split("/")[0]))
    os.chmod(blob, 0o644)
    blob.write_bytes(b"0" * 1000)
    result = trtcas("cache", "verify", cache=cache, check=False)
    assert result.returncode == 2 and "bad blob" in result.stdout
    assert trtcas("cache", "verify", "--repair", cache=cache).returncode == 0
    assert trtcas("cache", "verify", cache=cache).returncode == 0
