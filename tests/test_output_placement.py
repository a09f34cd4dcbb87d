"""Outputs of LLM builds: placed as one transaction, known by the stat cache on a no-op,
``[output] checkpoint = false``, and fine-tuned weights stored as deltas (real builds:
TensorRT-RTX on the CPU, real converts)."""

import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file

import trtcas
from trtcas.cas.content_store import ContentStore
from trtcas.cas.stats import store_stats
from trtcas.rules.formats import tensors as tensors_format
from trtcas.rules.llm.convert import write_checkpoint
from trtcas.rules.llm.spec import ConvertSpec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _llama_gen import sizes_for  # noqa: E402
from _llama_gen import write_checkpoint as write_hf  # noqa: E402
from support.llm_target import llm_target  # noqa: E402

SIZES = sizes_for(3 << 20)  # ~3 MB: tensors large enough for the weight codecs, builds in seconds


def project(root: Path, checkpoint: bool = True, finetune: str | None = None) -> Path:
    write_hf(root / "hf", SIZES, finetune=finetune, noise=1e-3)
    (root / "trtcas.toml").write_text(llm_target("placed", checkpoint))
    return root


def build(root: Path, *actions: str) -> trtcas.BuildResult:
    result = trtcas.build(root / "trtcas.toml", actions, cache_dir=root / "cache")
    assert result.ok, result.error
    return result


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_checkpoint_false_places_only_engines_and_build_json(tmp_path):
    root = project(tmp_path, checkpoint=False)
    build(root)
    assert sorted(snapshot(root / "out")) == ["build.json", "engines/rank0.engine"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")  and not p.name.endswith(".lock")]


def test_checkpoint_is_the_converted_tensors_and_a_noop_reads_none_of_it(tmp_path, monkeypatch):
    root = project(tmp_path)
    build(root, "convert[rank0]")
    placed = root / "out" / "checkpoint" / "rank0.safetensors"
    expected = write_checkpoint(root / "hf", ConvertSpec(tp=1, dtype="float16"), tmp_path / "reference")[0]
    got, wanted = load_file(placed), load_file(expected)
    assert got.keys() == wanted.keys() and all(got[k].tobytes() == wanted[k].tobytes() for k in wanted)
    before = placed.stat()

    def no_rehash(*args, **kwargs):
        raise AssertionError("a no-op re-read the placed checkpoint")

    monkeypatch.setattr(tensors_format, "hash_tensors", no_rehash)
    result = build(root, "convert[rank0]")
    assert [a.status for a in result.actions] == ["cached"]
    after = placed.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_full_finetune_is_stored_as_deltas(tmp_path):
    root = project(tmp_path)
    build(root, "convert[rank0]")
    store = ContentStore(root / "cache")
    before = store_stats(store)
    project(tmp_path, finetune="full")
    build(root, "convert[rank0]")
    after = store_stats(store)
    model = sum(p.stat().st_size for p in (root / "hf").glob("*.safetensors"))
    assert after.delta_blobs > 0
    assert after.disk_bytes - before.disk_bytes < 0.2 * model
    reference = write_checkpoint(root / "hf", ConvertSpec(tp=1, dtype="float16"), tmp_path / "reference")[0]
    placed = load_file(root / "out" / "checkpoint" / "rank0.safetensors")
    wanted = load_file(reference)
    assert placed.keys() == wanted.keys()
    assert all(placed[k].tobytes() == wanted[k].tobytes() for k in wanted)


def test_a_failed_placement_leaves_the_previous_outputs_exactly(tmp_path):
    root = project(tmp_path, checkpoint=False)
    build(root)
    (root / "out" / "checkpoint").write_text("a file where the checkpoint dir would go\n")
    old = snapshot(root / "out")
    project(tmp_path, checkpoint=True, finetune="full")  # new weights: a new engine too
    proc = subprocess.run([sys.executable, "-m", "trtcas.cli", "build", str(root / "trtcas.toml"),
                           "--cache-dir", str(root / "cache")], capture_output=True, text=True)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("trtcas: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(root / "out") in errors[0]
    assert snapshot(root / "out") == old
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]


def test_outputs_inside_the_project_dir_are_replaced_per_file(tmp_path):
    root = project(tmp_path)
    text = (root / "trtcas.toml").read_text().replace("[output]", '[output]\ndir = "."')
    text = text.replace("[engine]", "[parallel]\ntp = 2\n[engine]")
    (root / "trtcas.toml").write_text(text)
    build(root, "convert[rank0]", "convert[rank1]")  # both ranks place checkpoint/config.json
    assert {p.name for p in (root / "checkpoint").iterdir()} == {"rank0.safetensors", "rank1.safetensors", "config.json"}
    assert (root / "build.json").is_file() and (root / "hf").is_dir() and (root / "trtcas.toml").read_text() == text
    project(tmp_path, finetune="full")
    (root / "trtcas.toml").write_text(text)
    build(root, "convert[rank0]", "convert[rank1]")  # replaced in place, the project dir never moved
    assert not [p for p in tmp_path.parent.iterdir() if ".staging-" in p.name]


@pytest.mark.parametrize("name", ["../escape.bin", "/abs/path.bin", ""])
def test_output_paths_outside_the_output_dir_are_refused(tmp_path, name):
    from trtcas.graph.outputs import OutputError, check_relative

    with pytest.raises(OutputError):
        check_relative(name, tmp_path / "out")

