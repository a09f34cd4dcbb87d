"""LLM targets: HF Llama -> TP-sharded TensorRT-LLM checkpoint -> per-rank engines, on the CPU."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

import trtcas
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest, hash_bytes
from trtcas.cas.manifest import TensorManifest
from trtcas.cas.stats import store_stats
from trtcas.config import load_config
from trtcas.errors import TrtcasError
from trtcas.graph.explain import explain_builds
from trtcas.graph.history import load_build
from trtcas.graph.rule import RULES
from trtcas.rules.llm.convert import write_checkpoint
from trtcas.rules.llm.spec import ConvertSpec

from make_tiny_llama import make_tiny_llama

TARGET = """
[target]
name = "tiny-llama"
[model]
hf = "hf"
dtype = "float16"
max_batch_size = 2
max_seq_len = 16
[parallel]
tp = {tp}
[engine]
backend = "{backend}"
targets = ["sm86"]
"""


def project(tmp_path, tp=2, backend="auto"):
    make_tiny_llama(tmp_path / "hf", seed=0)
    (tmp_path / "trtcas.toml").write_text(TARGET.format(tp=tp, backend=backend))
    return tmp_path


def build(root, **kw):
    result = trtcas.build(root / "trtcas.toml", cache_dir=root / "cache", **kw)
    assert result.ok, result.error
    return result


def status(result):
    return {r.id: r.status for r in result.actions}


def explain(root):
    store = ContentStore(root / "cache")
    slug = load_config(root / "trtcas.toml").slug
    return {e.action_id: e for e in explain_builds(load_build(store.root, slug, "previous"), load_build(store.root, slug), RULES, store.blobs)}


def test_a_max_seq_len_past_the_models_positions_is_noted_once(tmp_path):
    """TensorRT-LLM builds it too, so it is not an error; but the user hears that positions
    past max_position_embeddings (128 in the tiny model) were never trained."""
    from trtcas.rules.llm.planner import plan_llm

    root = project(tmp_path, tp=1)
    within = plan_llm(load_config(root / "trtcas.toml").data, root).notes
    beyond = plan_llm(load_config(root / "trtcas.toml", ["model.max_seq_len=200"]).data, root).notes
    assert not any("max_position_embeddings" in n for n in within)
    assert [n for n in beyond if "max_position_embeddings" in n] == [
        "max_seq_len = 200 is beyond the model's max_position_embeddings (128): positions past it are "
        "extrapolated, which the model was not trained for"]


def test_tp2_builds_engines_and_the_checkpoint_tensorrt_llm_reads(tmp_path):
    root = project(tmp_path)
    first = build(root)
    assert set(status(first).values()) == {"built"} and len(first.actions) == 6
    for rank in (0, 1):
        assert (root / "out" / "engines" / f"rank{rank}.engine").stat().st_size > 1_000_000
    # the materialized checkpoint equals what the converter writes directly
    write_checkpoint(root / "hf", ConvertSpec(tp=2, dtype="float16"), tmp_path / "reference")
    for rank in (0, 1):
        ours = load_file(root / "out" / "checkpoint" / f"rank{rank}.safetensors")
        theirs = load_file(tmp_path / "reference" / f"rank{rank}.safetensors")
        assert ours.keys() == theirs.keys()
        assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert json.loads((root / "out/checkpoint/config.json").read_text()) == json.loads((tmp_path / "reference/config.json").read_text())
    # rank networks are structurally identical; the weights are what differ
    net0, net1 = first.action("network[rank0]").outputs, first.action("network[rank1]").outputs
    assert net0["structure"] == net1["structure"] and net0["weights"] != net1["weights"]
    # on the CPU weights are embedded, so the ranks do not share, and explain says why
    assert first.action("engine[rank0]").key != first.action("engine[rank1]").key
    why = explain(root)["engine[rank1]"].lines
    assert any("does not share with engine[rank0]: input `weights` differs" in line for line in why)
    assert any("weights are embedded" in n for n in first.notes)
    outputs = [root / "out/checkpoint/rank1.safetensors", root / "out/engines/rank1.engine"]
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs]
    assert set(status(build(root)).values()) == {"cached"}
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in outputs] == before  # a no-op rewrites nothing


def logical_bytes(root):
    return store_stats(ContentStore(root / "cache")).logical_bytes


def test_ranks_share_one_engine_and_a_finetune_costs_convert_and_refits(tmp_path, refit_double):
    root = project(tmp_path, backend="refit-test-double")
    first = build(root)
    st = status(first)
    assert sorted([st["engine[rank0]"], st["engine[rank1]"]]) == ["built", "shared"]
    assert st["refit[rank0]"] == st["refit[rank1]"] == "built"
    assert first.action("engine[rank0]").key == first.action("engine[rank1]").key
    assert any("same key as engine[rank0]" in line for line in explain(root)["engine[rank1]"].lines)
    engines = [(root / f"out/engines/rank{r}.engine").read_bytes() for r in (0, 1)]
    assert engines[0] != engines[1]  # one build, two refits with each rank's weights

    before = logical_bytes(root)
    shutil.rmtree(root / "hf")
    make_tiny_llama(root / "hf", seed=0, finetune_layer=1)  # a fine-tune touching layer 1 only
    second = build(root)
    st2 = status(second)
    assert st2["convert[rank0]"] == st2["convert[rank1]"] == "built"
    # no engine build: one rank hits the cache, the other hits it too or waits on it (shared)
    assert {st2["engine[rank0]"], st2["engine[rank1]"]} <= {"cached", "shared"} and "cached" in (st2["engine[rank0]"], st2["engine[rank1]"])
    assert st2["refit[rank0]"] == st2["refit[rank1]"] == "built"
    for rank in (0, 1):
        assert first.action(f"network[rank{rank}]").outputs["structure"] == second.action(f"network[rank{rank}]").outputs["structure"]

    # store growth ~ the changed tensors (+ the refitted plans, manifests and canonical models)
    changed_tensors = {}  # by digest: replicated tensors (norms) are one blob for both ranks
    for rank in (0, 1):
        new = load_file(root / "out" / "checkpoint" / f"rank{rank}.safetensors")
        changed_tensors.update({hash_bytes(v.tobytes()): v.nbytes for k, v in new.items() if "layers.1." in k})
    changed = sum(changed_tensors.values())
    plans = sum(len(e) for e in [(root / f"out/engines/rank{r}.engine").read_bytes() for r in (0, 1)])
    growth = logical_bytes(root) - before
    full_copy = sum(v.nbytes for r in (0, 1) for v in load_file(root / "out/checkpoint" / f"rank{r}.safetensors").values())
    # the convert stored exactly the changed tensors: every other digest was already there
    store = ContentStore(root / "cache")
    def tensor_digests(result):
        return {e.digest for r in (0, 1) for e in TensorManifest.from_bytes(
            store.blobs.get_bytes(Digest.parse(result.action(f"convert[rank{r}]").outputs["weights"]))).entries}
    new_tensors = tensor_digests(second) - tensor_digests(first)
    assert sum(d.size for d in new_tensors) == changed
    # the network keeps its constants as TensorRT sees them (some transposed), a second copy
    # of the changed tensors at most; the rest is small manifests and canonical models
    assert growth - plans < 2 * changed + 64 * 1024, (growth, plans, changed)
    assert growth - plans < full_copy


@pytest.mark.parametrize("setting, message", [
    ("parallel.tp=3", "tp"),
    ('model.dtype="int4"', "int4"),
    ('model.hf="nowhere"', "no such directory"),
    ("model.max_seq_len=0", "max_seq_len = 0"),
    ("parallel.pp=2", "pp > 1 is not supported"),
])
def test_bad_llm_settings_are_one_clear_line(tmp_path, setting, message):
    root = project(tmp_path)
    with pytest.raises(TrtcasError) as info:
        trtcas.build(root / "trtcas.toml", cache_dir=root / "cache", overrides=[setting])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_truncated_hf_checkpoint_fails_the_convert_and_caches_nothing(tmp_path):
    root = project(tmp_path)
    shard = next((root / "hf").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-100])
    result = trtcas.build(root / "trtcas.toml", cache_dir=root / "cache")
    assert not result.ok and "truncated" in result.error and shard.name in result.error
    assert not (root / "out").exists()


def test_a_lost_tensor_blob_reruns_the_convert_instead_of_failing_every_build(tmp_path):
    root = project(tmp_path)
    first = build(root)
    reference = (root / "out/checkpoint/rank0.safetensors").read_bytes()
    store = ContentStore(root / "cache")
    manifest = TensorManifest.from_bytes(store.blobs.get_bytes(Digest.parse(first.action("convert[rank0]").outputs["weights"])))
    store.blobs.delete(manifest.entries[0].digest)  # quarantined by verify, or lost: the entry must not stay a hit
    shutil.rmtree(root / "out")
    again = build(root)
    assert status(again)["convert[rank0]"] == "built" and not again.warnings
    assert (root / "out/checkpoint/rank0.safetensors").read_bytes() == reference
    assert set(status(build(root)).values()) == {"cached"}


def test_ranks_failing_alike_give_one_error_line_naming_them_all(tmp_path):
    from support.targets import one_error_line, run_cli

    root = project(tmp_path)
    shard = next((root / "hf").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-100])
    line = one_error_line(run_cli("build", root / "trtcas.toml", "--cache-dir", root / "cache"))
    assert line.startswith("trtcas: error: convert[rank0], convert[rank1]: ") and "truncated" in line


@pytest.mark.parametrize("backend, stacked", [("auto", True), ("refit-test-double", False)])
def test_engines_that_embed_weights_stack_gate_and_up_and_refittable_ones_do_not(tmp_path, refit_double,
                                                                                backend, stacked):
    """The way the engine's network is written is in the engine's key (a parameter), and
    ``trtcas run`` evaluates the network written that way."""
    from trtcas.api import plan_graph
    from trtcas.rules.evaluate.run import engines_stack_linears

    root = project(tmp_path, tp=1, backend=backend)
    graph = plan_graph(load_config(root / "trtcas.toml"))
    engines = [graph.nodes[n]["action"] for n in graph.nodes if graph.nodes[n]["action"].rule == "trt.engine"]
    assert engines and all(e.params["stack_parallel_linears"] is stacked for e in engines)
    assert engines_stack_linears(graph) == {"network[rank0]": stacked}
