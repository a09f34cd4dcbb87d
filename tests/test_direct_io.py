"""DirectFile: writes of any size, at any offset, in any order, land as written, whether the
filesystem takes O_DIRECT (the disk under tmp_path: ext4 here) or not; a full
disk is one clear error and leaves no file; blobs and placed checkpoints go through it."""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trtcas.cas.atomic import DIRECT_MIN_BYTES, atomic_writer
from trtcas.cas.direct_io import BLOCK, DirectFile

from support.tmpfs import small_ext4, tmpfs


def takes_o_direct(directory: Path) -> bool:
    probe = directory / ".probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


def pieces(data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [(a, data[a:b]) for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 5 * BLOCK + 77), cuts=st.lists(st.integers(0, 10**6), max_size=12), seed=st.integers(0, 99))
def test_writes_in_any_order_land_as_written(tmp_path, size, cuts, seed):
    data = random.Random(seed).randbytes(size)
    order = pieces(data, cuts)
    random.Random(seed).shuffle(order)
    path = tmp_path / f"f{seed}-{size}"
    out = DirectFile(path)
    assert out.direct == takes_o_direct(tmp_path)
    for offset, piece in order:
        out.pwrite(piece, offset)
    out.close()
    assert path.read_bytes() == data


def test_large_unaligned_writes_from_two_threads(tmp_path):
    """The checkpoint writer's shape: tensors of odd sizes after an odd-sized header, two
    writer threads, sources both aligned (a fresh numpy array) and not (a slice of one)."""
    rng = np.random.default_rng(0)
    header = rng.bytes(1001)
    tensors = [rng.integers(0, 256, n, dtype=np.uint8) for n in (3 << 20, 12345, (1 << 20) + 3, 7, 2 << 20)]
    tensors[1] = np.ascontiguousarray(tensors[1])[1:]  # an unaligned source
    expected = header + b"".join(t.tobytes() for t in tensors)
    offsets = np.cumsum([len(header)] + [t.nbytes for t in tensors])[:-1]
    path = tmp_path / "ckpt"
    out = DirectFile(path)
    out.pwrite(header, 0)
    jobs = list(zip(offsets, tensors))
    threads = [threading.Thread(target=lambda part: [out.pwrite(t, int(o)) for o, t in part], args=(jobs[k::2],))
               for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.close()
    assert path.read_bytes() == expected


def test_flush_makes_what_was_written_whole_before_close(tmp_path):
    path = tmp_path / "f"
    out = DirectFile(path)
    first = os.urandom(BLOCK + 10)
    out.write(first)
    out.flush()
    assert path.read_bytes() == first  # the last partial block padded, then cut to length
    second = os.urandom(BLOCK * 2 + 5)
    out.write(second)  # completes the partial block written by flush, writes it again whole
    out.close()
    assert path.read_bytes() == first + second


@pytest.mark.parametrize("direct", [True, False])
def test_tmpfs_and_the_page_cache_path_get_the_same_bytes(tmp_path, direct):
    """tmpfs takes O_DIRECT on newer kernels and refuses it on older ones: either way the
    file holds what was written; ``direct=False`` is the page-cache path on any disk."""
    with tmpfs(tmp_path / "shm", size="16m") as mount:
        out = DirectFile(mount / "f", direct=direct)
        assert out.direct == (direct and takes_o_direct(mount))
        data = os.urandom(3 * BLOCK + 1)
        out.pwrite(data[5:], 5)
        out.pwrite(data[:5], 0)
        out.close()
        assert (mount / "f").read_bytes() == data


def test_falling_back_midway_keeps_every_byte(tmp_path):
    """A filesystem that opens with O_DIRECT but refuses an aligned write makes DirectFile
    go on through the page cache; the blocks it held by then are written too."""
    if not takes_o_direct(tmp_path):
        pytest.skip("this filesystem has no O_DIRECT to fall back from")
    data = os.urandom(6 * BLOCK + 123)
    path = tmp_path / "f"
    out = DirectFile(path)
    out.pwrite(data[100 : 2 * BLOCK + 50], 100)  # leaves partial blocks 0 and 2 held
    out._stop_direct()
    out.pwrite(data[2 * BLOCK + 50 :], 2 * BLOCK + 50)
    out.pwrite(data[:100], 0)
    out.close()
    assert path.read_bytes() == data


def test_a_full_disk_is_an_error_naming_the_file_and_leaves_nothing(tmp_path):
    with small_ext4(tmp_path / "disk", size_mb=8) as mount:
        target = mount / "blob"
        with pytest.raises(OSError) as caught:
            with atomic_writer(target) as pending:
                pending.write_parts([os.urandom(DIRECT_MIN_BYTES)] * 12)
        assert caught.value.errno == errno.ENOSPC
        assert str(target) in str(caught.value)
        assert not target.exists()
        assert [p.name for p in mount.iterdir() if p.name != "lost+found"] == []


def test_large_blobs_and_placed_checkpoints_go_around_the_page_cache(tmp_path, monkeypatch):
    """The two writers a convert pays for go around the page cache; small files do not."""
    from trtcas.cas import direct_io
    from trtcas.rules.formats.safetensors import SlotFileWriter, TensorSlot

    opened = []
    real = direct_io.DirectFile.__init__

    def spy(self, path, mode=0o644, direct=True):
        real(self, path, mode, direct)
        opened.append((Path(path).name, self.direct))

    monkeypatch.setattr(direct_io.DirectFile, "__init__", spy)
    with atomic_writer(tmp_path / "big") as pending:
        pending.write_parts([os.urandom(DIRECT_MIN_BYTES), b"tail"])
    with atomic_writer(tmp_path / "small") as pending:
        pending.write_parts([b"small"])
    array = np.arange(DIRECT_MIN_BYTES, dtype=np.uint8)
    with SlotFileWriter(tmp_path / "ckpt.safetensors", [TensorSlot("w", "U8", array.shape)]) as writer:
        writer.write("w", array)
        writer.finish()
    direct = takes_o_direct(tmp_path)
    assert [(name.split(".")[1] if name.startswith(".") else name, flag) for name, flag in opened] == [
        ("big", direct), ("small", False), ("ckpt.safetensors", direct)]
    assert (tmp_path / "big").stat().st_size == DIRECT_MIN_BYTES + 4
