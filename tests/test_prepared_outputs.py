"""Outputs a rule writes in placed form while it runs (``graph.prepared``): the converted
checkpoint is written during the convert and moved into the output dir, byte for byte
what placing it from the store writes; nothing is left behind, whatever happens."""

import errno
import os
import random
import subprocess
import time

import ml_dtypes
import numpy as np
import pytest

import trtcas
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.cas.gc import verify_store
from trtcas.cas.manifest import TensorManifest
from trtcas.errors import TrtcasError
from trtcas.graph.prepared import PreparedOutputs
from trtcas.rules.formats.safetensors import SlotFileWriter, TensorSlot, dtype_code, write_arrays

from make_tiny_llama import make_tiny_llama
from support.tmpfs import tmpfs

TARGET = """
[target]
name = "prepared"
[model]
hf = "hf"
dtype = "bfloat16"
max_batch_size = 1
max_seq_len = 8
[parallel]
tp = 2
[engine]
targets = ["sm86"]
[output]
dir = "{out}"
"""


def project(root, out="out"):
    make_tiny_llama(root / "hf", seed=3)
    (root / "trtcas.toml").write_text(TARGET.format(out=out))
    return root / "trtcas.toml"


def convert_only(target, cache):
    result = trtcas.build(target, ["convert[rank0]", "convert[rank1]"], cache_dir=cache)
    assert result.ok, result.error
    return result


def leftovers(cache):
    return sorted(p.name for p in (cache / "tmp").glob("prepared-*"))


def test_a_cold_convert_moves_its_prepared_checkpoint_into_place_byte_for_byte(tmp_path, monkeypatch):
    target = project(tmp_path)
    moved = []
    real_move = PreparedOutputs.move_into_place

    def spy(self, digest, dest):  # records which outputs came from a prepared file
        done = real_move(self, digest, dest)
        moved.append((dest.name, done))
        return done

    monkeypatch.setattr(PreparedOutputs, "move_into_place", spy)
    cold = convert_only(target, tmp_path / "cache")
    assert {r.status for r in cold.actions} == {"built"}
    assert sorted(moved) == [("config.json", False), ("rank0.safetensors", True), ("rank1.safetensors", True)]
    assert leftovers(tmp_path / "cache") == []
    prepared = {r: (tmp_path / f"out/checkpoint/rank{r}.safetensors").read_bytes() for r in (0, 1)}

    # the same outputs placed from the store (actions cached, nothing prepared): same bytes
    (tmp_path / "trtcas.toml").write_text(TARGET.format(out="out2"))
    moved.clear()
    warm = convert_only(target, tmp_path / "cache")
    assert {r.status for r in warm.actions} == {"cached"} and not any(done for _, done in moved)
    for rank in (0, 1):
        assert (tmp_path / f"out2/checkpoint/rank{rank}.safetensors").read_bytes() == prepared[rank]
        assert (tmp_path / f"out/checkpoint/rank{rank}.safetensors").stat().st_mode & 0o222 == 0  # read-only


def test_a_failed_convert_leaves_no_prepared_file_and_no_outputs(tmp_path):
    target = project(tmp_path)
    shard = next((tmp_path / "hf").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    result = trtcas.build(target, ["convert[rank0]"], cache_dir=tmp_path / "cache")
    assert not result.ok
    assert leftovers(tmp_path / "cache") == []
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_without_checkpoint_output_nothing_is_prepared(tmp_path, monkeypatch):
    target = project(tmp_path)
    target.write_text(target.read_text() + "checkpoint = false\n")
    offered = []
    monkeypatch.setattr(PreparedOutputs, "offer", lambda self, path, digest: offered.append(digest))
    convert_only(target, tmp_path / "cache")
    assert offered == [] and not (tmp_path / "out" / "checkpoint").exists()


def arrays(seed):
    rng = np.random.default_rng(seed)
    return {
        "b.weight": rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16),
        "a.bias": rng.standard_normal(7).astype(np.float32),
        "c.scale": rng.integers(-9, 9, (2, 2, 2)).astype(np.int8),
        "empty": np.zeros((0, 4), np.float16),
    }


def slots_of(tensors):
    return [TensorSlot(name, dtype_code(a.dtype), tuple(a.shape)) for name, a in tensors.items()]


@pytest.mark.parametrize("seed", range(4))
def test_slot_writer_in_any_order_writes_what_the_streamed_writer_writes(tmp_path, seed):
    tensors = arrays(seed)
    slots = sorted(slots_of(tensors), key=lambda s: s.name)
    write_arrays(tmp_path / "streamed", slots, ((s.name, tensors[s.name]) for s in slots))
    order = list(tensors)
    random.Random(seed).shuffle(order)
    with SlotFileWriter(tmp_path / "slots", slots) as writer:
        for name in order:
            writer.write(name, tensors[name])
        writer.finish()
    assert (tmp_path / "slots").read_bytes() == (tmp_path / "streamed").read_bytes()


def test_slot_writer_refuses_surprises_and_leaves_no_partial_file(tmp_path):
    tensors = arrays(0)
    path = tmp_path / "partial"
    with pytest.raises(TrtcasError, match="planned as"):
        with SlotFileWriter(path, slots_of(tensors)) as writer:
            writer.write("b.weight", tensors["b.weight"].astype(np.float32))
    assert not path.exists()
    with pytest.raises(TrtcasError, match="never written"):
        with SlotFileWriter(path, slots_of(tensors)) as writer:
            writer.write("a.bias", tensors["a.bias"])
            writer.finish()
    assert not path.exists()
    with pytest.raises(TrtcasError, match="came twice"):
        with SlotFileWriter(path, slots_of(tensors)) as writer:
            writer.write("a.bias", tensors["a.bias"])
            writer.write("a.bias", tensors["a.bias"])
    assert not path.exists()


def test_slot_writer_reports_a_write_that_failed_on_its_thread_and_leaves_no_file(tmp_path):
    """Writes run on the writer's own thread: a disk that fills (a real 1 MiB tmpfs) is
    raised by a later ``write`` or by ``finish``, never lost, and the file is removed."""
    big = {f"t{i}": np.full((256, 256), i, dtype=np.float32) for i in range(6)}  # 1.5 MiB in all
    with tmpfs(tmp_path / "small", size="1m") as mount:
        path = mount / "ckpt.safetensors"
        with pytest.raises(OSError) as failed:
            with SlotFileWriter(path, slots_of(big)) as writer:
                for name, array in big.items():
                    writer.write(name, array)
                writer.finish()
        assert failed.value.errno == errno.ENOSPC
        assert not path.exists()
        assert os.statvfs(mount).f_bfree == os.statvfs(mount).f_blocks  # nothing left on the disk


def test_verify_repair_removes_the_prepared_dir_a_killed_build_left(tmp_path):
    store = ContentStore(tmp_path / "cache")
    left = PreparedOutputs(store.layout.tmp_root)
    left.new_path().write_bytes(b"half a checkpoint")
    fresh = PreparedOutputs(store.layout.tmp_root)
    fresh.new_path().write_bytes(b"a running build's")
    old = time.time() - 2 * 3600
    os.utime(left.root, (old, old))
    verify_store(store, repair=True)
    assert not left.root.exists() and fresh.root.exists()


def test_an_output_dir_on_another_filesystem_gets_its_checkpoint_prepared_beside_it(tmp_path, monkeypatch):
    """A cache on one disk and the outputs on another (the usual set-up): the checkpoint is
    still written once, beside the output dir, and moved into place."""
    moved = []
    real_move = PreparedOutputs.move_into_place
    monkeypatch.setattr(PreparedOutputs, "move_into_place",
                        lambda self, digest, dest: moved.append((dest.name, self.root.parent)) or real_move(self, digest, dest))
    with tmpfs(tmp_path / "elsewhere", size="64m") as mount:  # a real second filesystem (skips with the reason if not root)
        target = project(tmp_path, out=str(mount / "out"))
        convert_only(target, tmp_path / "cache")
        assert sorted(name for name, _ in moved) == ["config.json", "rank0.safetensors", "rank1.safetensors"]
        assert {root for _, root in moved} == {mount}  # prepared beside the output dir, on its filesystem
        assert not list(mount.glob(".out.prepared-*"))  # nothing prepared is left there
        assert leftovers(tmp_path / "cache") == []
        placed = {r: (mount / f"out/checkpoint/rank{r}.safetensors").read_bytes() for r in (0, 1)}
    (tmp_path / "trtcas.toml").write_text(TARGET.format(out="again"))
    convert_only(target, tmp_path / "cache")  # placed from the store: the same bytes
    assert all((tmp_path / f"again/checkpoint/rank{r}.safetensors").read_bytes() == placed[r] for r in (0, 1))


def test_a_prepared_dir_beside_the_output_dir_is_removed_once_abandoned(tmp_path):
    with tmpfs(tmp_path / "elsewhere", size="4m") as mount:
        out = mount / "out[1]"  # glob's special characters in the name are only characters
        gone = _finished_pid()
        old = time.time() - 2 * 3600
        abandoned = mount / f".out[1].prepared-{gone}-0badc0de"
        running = mount / f".out[1].prepared-{os.getpid()}-1badc0de"  # old, but its process is alive
        recent = mount / f".out[1].prepared-{gone}-2badc0de"  # its process gone, but not yet an hour old
        for path in (abandoned, running, recent):
            (path / "writing-1").parent.mkdir()
            (path / "writing-1").write_bytes(b"half a checkpoint")
        for path in (abandoned, running):
            os.utime(path, (old, old))
        prepared = PreparedOutputs(tmp_path / "cache" / "tmp", out)
        assert prepared.enabled and prepared.root.parent == mount
        prepared.new_path().write_bytes(b"this build's")
        assert not abandoned.exists() and running.exists() and recent.exists()
        prepared.close()
        assert not prepared.root.exists()


def _finished_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid




def test_a_corrupt_tensor_found_while_placing_from_the_store_is_quarantined_and_rebuilt(tmp_path):
    """Placing decodes several tensors at once on threads: a corrupt one still fails the
    placement cleanly (no file, no temp), is quarantined, and the convert runs again."""
    target = project(tmp_path)
    first = convert_only(target, tmp_path / "cache")
    reference = (tmp_path / "out/checkpoint/rank1.safetensors").read_bytes()
    store = ContentStore(tmp_path / "cache")
    def tensors(rank):
        digest = Digest.parse(first.action(f"convert[rank{rank}]").outputs["weights"])
        return TensorManifest.from_bytes(store.blobs.get_bytes(digest)).entries

    shared = {e.digest for e in tensors(0)}  # a replicated tensor is one blob for both ranks
    largest = max((e for e in tensors(1) if e.digest not in shared), key=lambda e: e.digest.size)
    blob = store.blobs.locate(largest.digest).path
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    store.statcache.forget(blob)  # as after a restore from backup: nothing vouches for it

    (tmp_path / "trtcas.toml").write_text(TARGET.format(out="out2"))
    again = convert_only(target, tmp_path / "cache")
    assert again.action("convert[rank1]").status == "built"
    assert any("corrupt" in w for w in again.warnings), again.warnings
    assert (tmp_path / "out2/checkpoint/rank1.safetensors").read_bytes() == reference
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name or ".staging-" in p.name]
    assert store.blobs.verify(largest.digest)  # stored again, whole


def test_a_prepared_dir_that_cannot_be_made_costs_only_writing_the_file_from_the_store(tmp_path, monkeypatch):
    """Beside an output dir whose parent refuses a new directory (permissions a root test
    cannot show, so ``new_path`` is made to fail as it would), the convert runs unprepared
    and placement writes the same file from the store."""
    target = project(tmp_path)
    convert_only(target, tmp_path / "reference-cache")
    reference = (tmp_path / "out/checkpoint/rank0.safetensors").read_bytes()
    (tmp_path / "trtcas.toml").write_text(TARGET.format(out="out2"))

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self.root))

    monkeypatch.setattr(PreparedOutputs, "new_path", refuse)
    result = convert_only(target, tmp_path / "cache")
    assert {r.status for r in result.actions} == {"built"}
    assert (tmp_path / "out2/checkpoint/rank0.safetensors").read_bytes() == reference
