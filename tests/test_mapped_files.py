"""A convert reads its checkpoint through the mappings its key was hashed through: the same
digests, the same converted tensors, nothing shared outside an action or after a file
changed, and no more than the budget kept mapped."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from safetensors.numpy import load_file

import trtcas
from trtcas.cas import mapped_files
from trtcas.cas.digest import PARALLEL_HASH_THRESHOLD, hash_file, hash_stream
from trtcas.rules.llm.convert import write_checkpoint
from trtcas.rules.llm.spec import ConvertSpec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _llama_gen import sizes_for  # noqa: E402
from _llama_gen import write_checkpoint as write_hf  # noqa: E402
from support.llm_target import llm_target  # noqa: E402


def big_file(path: Path, extra: int = 0) -> Path:
    path.write_bytes(os.urandom(PARALLEL_HASH_THRESHOLD + 4097 + extra))
    return path


def test_a_file_hashed_in_a_sharing_block_is_shared_while_unchanged(tmp_path):
    path = big_file(tmp_path / "shard.safetensors")
    with open(path, "rb") as stream:
        expected = hash_stream(stream)
    assert mapped_files.shared(path) is None  # outside any block
    with mapped_files.sharing():
        assert hash_file(path) == expected
        mapping = mapped_files.shared(path)
        assert mapping is not None and bytes(mapping[:64]) == path.read_bytes()[:64]
        assert mapped_files.shared(tmp_path / "other") is None
        big_file(path, extra=1)  # rewritten: another size, another mtime
        assert mapped_files.shared(path) is None
    assert mapped_files.shared(path) is None  # dropped with the block
    with mapped_files.sharing(active=False):
        hash_file(path)
        assert mapped_files.shared(path) is None


def test_no_more_than_the_budget_is_kept_mapped(tmp_path, monkeypatch):
    first, second = big_file(tmp_path / "a"), big_file(tmp_path / "b")
    monkeypatch.setattr(mapped_files, "BUDGET_MAX", first.stat().st_size + 100)
    with mapped_files.sharing():
        assert hash_file(first) == hash_file(first)
        assert hash_file(second).size == second.stat().st_size
        assert mapped_files.shared(first) is not None
        assert mapped_files.shared(second) is None  # over the budget: hashed as before




def test_a_convert_reads_the_mappings_its_key_was_hashed_through(tmp_path, monkeypatch):
    """Shards over the parallel-hash threshold (two of ~12 MB): the convert's tensors come
    from the shared mappings, and the placed checkpoint is the reference converter's."""
    write_hf(tmp_path / "hf", sizes_for(24 << 20), dtype="float16")
    assert all(p.stat().st_size >= PARALLEL_HASH_THRESHOLD for p in (tmp_path / "hf").glob("*.safetensors"))
    (tmp_path / "trtcas.toml").write_text(llm_target("mapped"))
    served = []
    real = mapped_files.shared

    def spy(path):
        mapping = real(path)
        served.append(mapping is not None)
        return mapping

    monkeypatch.setattr(mapped_files, "shared", spy)
    result = trtcas.build(tmp_path / "trtcas.toml", ["convert[rank0]"], cache_dir=tmp_path / "cache")
    assert result.ok, result.error
    assert served and all(served)
    expected = write_checkpoint(tmp_path / "hf", ConvertSpec(tp=1, dtype="float16"), tmp_path / "reference")[0]
    got, wanted = load_file(tmp_path / "out" / "checkpoint" / "rank0.safetensors"), load_file(expected)
    assert got.keys() == wanted.keys() and all(got[k].tobytes() == wanted[k].tobytes() for k in wanted)
