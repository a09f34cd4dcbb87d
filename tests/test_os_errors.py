"""Every OS error becomes one line naming the path and what to do (issue 13 item 6).

The matrix: EROFS (a read-only mount), ENOSPC (a tiny tmpfs that fills for real), EACCES (a
read-only mount stands in where root ignores permission bits: see support/tmpfs.py),
ENOTDIR / EEXIST (a cache or output dir that is a file), EISDIR (an output that is a
directory), ELOOP (a symlink loop), across the commands that write or read the cache.
"""

from __future__ import annotations

import os
import subprocess
import sys

import onnx
import pytest

import make_models
from support.targets import CONV_TARGET
from support.tmpfs import remount_read_only, tmpfs


def trtcas(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trtcas.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_one_line(result, *names):
    """Non-zero exit, no traceback, exactly one ``trtcas: error:`` line, naming ``names``."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("trtcas: error:")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert str(name) in errors[0], errors[0]
    return errors[0]


def project(root, seed=0):
    root.mkdir(parents=True, exist_ok=True)
    (root / "trtcas.toml").write_text(CONV_TARGET.format(backend="auto"))
    onnx.save(make_models.make_conv_block(seed=seed), str(root / "model.onnx"))
    return root


def test_read_only_cache_dir(tmp_path):
    p = project(tmp_path / "p")
    with tmpfs(tmp_path / "mnt", size="16m") as mnt:
        cache = mnt / "cache"
        assert trtcas("build", p / "trtcas.toml", "--cache-dir", cache).returncode == 0
        src = tmp_path / "blob"
        src.write_bytes(os.urandom(1000))
        remount_read_only(mnt)
        onnx.save(make_models.make_conv_block(seed=1), str(p / "model.onnx"))  # now something must be stored
        line = assert_one_line(trtcas("build", p / "trtcas.toml", "--cache-dir", cache), cache)
        assert "read-only" in line and "--cache-dir" in line
        assert "read-only" in assert_one_line(trtcas("cache", "put", src, "--cache-dir", cache), cache)
        assert "read-only" in assert_one_line(trtcas("cache", "config", "max-size", "1G", "--cache-dir", cache), cache)
        assert trtcas("cache", "stats", "--cache-dir", cache).returncode == 0  # reading still works
        assert trtcas("cache", "pins", "--cache-dir", cache).returncode == 0


def test_full_disk_cache(tmp_path):
    p = project(tmp_path / "p")
    with tmpfs(tmp_path / "mnt", size="40k") as mnt:
        line = assert_one_line(trtcas("build", p / "trtcas.toml", "--cache-dir", mnt / "cache"), mnt / "cache")
        assert "no space left" in line and "gc" in line
        big = tmp_path / "big"
        big.write_bytes(os.urandom(1 << 20))
        assert "no space left" in assert_one_line(trtcas("cache", "put", big, "--cache-dir", mnt / "cache"), mnt / "cache")
        leftovers = [f for f in (mnt / "cache").rglob("*") if f.is_file() and f.name.endswith(".tmp")]
        assert not leftovers


def test_cache_dir_that_is_a_file(tmp_path):
    p = project(tmp_path / "p")
    afile = tmp_path / "afile"
    afile.write_text("not a dir")
    for args in (("build", p / "trtcas.toml"), ("cache", "stats"), ("cache", "gc", "--max-size", "1G"),
                 ("cache", "verify"), ("cache", "pins")):
        assert_one_line(trtcas(*args, "--cache-dir", afile / "sub"), afile)
        assert_one_line(trtcas(*args, "--cache-dir", afile), afile)


def test_output_dir_that_is_a_file_or_read_only(tmp_path):
    p = project(tmp_path / "p")
    (p / "out").write_text("a file where the output dir goes")
    line = assert_one_line(trtcas("build", p / "trtcas.toml", "--cache-dir", tmp_path / "cache"), p / "out")
    assert "file" in line
    (p / "out").unlink()
    with tmpfs(p / "out", size="1m", read_only=True):
        line = assert_one_line(trtcas("build", p / "trtcas.toml", "--cache-dir", tmp_path / "cache"), p / "out")
        assert "read-only" in line


def test_output_that_is_a_directory(tmp_path):
    p = project(tmp_path / "p")
    (p / "out" / "engines" / "rank0.engine").mkdir(parents=True)
    (p / "out" / "engines" / "rank0.engine" / "keep").write_text("x")
    line = assert_one_line(trtcas("build", p / "trtcas.toml", "--cache-dir", tmp_path / "cache"), "rank0.engine")
    assert "directory" in line


def test_symlink_loop(tmp_path):
    p = project(tmp_path / "p")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for args in (("build", p / "trtcas.toml"), ("cache", "stats"), ("cache", "verify")):
        line = assert_one_line(trtcas(*args, "--cache-dir", loop / "cache"), loop)
        assert "symlink loop" in line or "symbolic links" in line


@pytest.mark.parametrize("errno_name", ["EROFS", "ENOSPC", "EACCES", "ENOTDIR", "EISDIR", "ELOOP"])
def test_every_errno_of_the_matrix_has_a_what_to_do(errno_name):
    import errno

    from trtcas.oserrors import describe_os_error

    code = getattr(errno, errno_name)
    text = describe_os_error(OSError(code, os.strerror(code), "/some/path"))
    assert text.startswith("/some/path ") and ";" in text and "\n" not in text


def test_cache_get_to_an_impossible_place(tmp_path):
    src = tmp_path / "blob"
    src.write_bytes(os.urandom(1000))
    digest = trtcas("cache", "put", src, "--cache-dir", tmp_path / "cache").stdout.strip()
    for dest in ("/proc/x/y", tmp_path / "blob" / "y"):
        assert_one_line(trtcas("cache", "get", digest, "-o", dest, "--cache-dir", tmp_path / "cache"))


LLM_TOO_LONG = """
[target]
name = "too-long"
[model]
hf = "hf"
dtype = "float16"
max_batch_size = 1
max_seq_len = 100000000000
[parallel]
tp = 1
[engine]
targets = ["sm86"]
[output]
dir = "out"
"""


def test_a_build_asking_for_more_memory_than_there_is_is_one_line(tmp_path):
    """A rope table for 1e11 positions cannot be allocated: one line that says out of memory
    and what to lower, no traceback. The child's address space is capped (16 GB) so the
    allocation fails the same way whatever the machine's overcommit policy."""
    import resource

    from make_tiny_llama import make_tiny_llama

    make_tiny_llama(tmp_path / "hf", seed=0)
    (tmp_path / "trtcas.toml").write_text(LLM_TOO_LONG)
    cap = 16 << 30

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    result = subprocess.run([sys.executable, "-m", "trtcas.cli", "build", str(tmp_path / "trtcas.toml"),
                             "--cache-dir", str(tmp_path / "cache")],
                            capture_output=True, text=True, preexec_fn=limit)
    line = assert_one_line(result, "network[rank0]")
    assert "out of memory" in line and "max_seq_len" in line

