"""The ONNX -> network -> engine (-> refit) pipeline with real TensorRT-RTX builds on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import trtcas
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest, hash_file
from trtcas.config import load_config
from trtcas.errors import TrtcasError
from trtcas.graph.explain import explain_builds
from trtcas.graph.history import load_build
from trtcas.graph.rule import RULES

import make_models  # examples/ is on the test path
from support.targets import CONV_TARGET as TARGET

ROOT = Path(__file__).resolve().parents[1]


class Project:
    def __init__(self, root: Path, backend="auto"):
        self.root, self.cache = root, root / "cache"
        (root / "trtcas.toml").write_text(TARGET.format(backend=backend))
        self.save(make_models.make_conv_block(seed=0))

    def save(self, model):
        onnx.save(model, str(self.root / "model.onnx"))

    def build(self, expect_fail=False, **kw):
        kw.setdefault("cache_dir", self.cache)
        result = trtcas.build(self.root / "trtcas.toml", **kw)
        assert result.ok or expect_fail, result.error
        return result

    def explain(self):
        store = ContentStore(self.cache)
        slug = load_config(self.root / "trtcas.toml").slug
        return {e.action_id: e for e in explain_builds(load_build(store.root, slug, "previous"), load_build(store.root, slug), RULES, store.blobs)}


def status(result):
    return {r.id: r.status for r in result.actions}


@pytest.fixture
def project(tmp_path):
    return Project(tmp_path)


def test_builds_a_real_engine_and_the_second_build_is_all_hits(project):
    first = project.build()
    assert status(first) == {"network[rank0]": "built", "engine[rank0]": "built"}
    engine = project.root / "out" / "engines" / "rank0.engine"
    assert engine.stat().st_size > 100_000  # a real plan, as TensorRT wrote it
    assert str(hash_file(engine)) == first.action("engine[rank0]").outputs["plan"]
    assert any("weights are embedded" in n for n in first.notes)
    second = project.build()
    assert set(status(second).values()) == {"cached"}
    build_json = json.loads((project.root / "out" / "build.json").read_text())
    assert build_json["outputs"]["engines/rank0.engine"] == first.action("engine[rank0]").outputs["plan"]
    assert build_json["fingerprint"]["tensorrt_rtx_version"]


def cosmetic_variant(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename every internal node and tensor, change doc strings and producer, reverse initializers."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    io = {v.name for v in list(m.graph.input) + list(m.graph.output)}
    renames = {}
    for node in m.graph.node:
        node.name = "renamed_" + node.name + "_x"
        node.doc_string = "a comment nobody reads"
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name and name not in io:
                    names[i] = renames.setdefault(name, f"t{len(renames)}_{name[::-1]}")
    for init in m.graph.initializer:
        init.name = renames.setdefault(init.name, f"w{len(renames)}")
    inits = list(m.graph.initializer)[::-1]
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    m.producer_name, m.producer_version, m.doc_string, m.graph.name = "someone-else", "9.9", "docs", "other_graph"
    return m


def test_cosmetic_changes_rerun_the_network_but_hit_the_engine(project):
    first = project.build()
    project.save(cosmetic_variant(make_models.make_conv_block(seed=0)))
    second = project.build()
    assert status(second) == {"network[rank0]": "built", "engine[rank0]": "cached"}
    assert first.action("network[rank0]").outputs["structure"] == second.action("network[rank0]").outputs["structure"]
    assert first.action("engine[rank0]").key == second.action("engine[rank0]").key


def test_renaming_an_engine_input_changes_the_engine_key(project):
    project.build()
    model = make_models.make_conv_block(seed=0)
    old = model.graph.input[0].name
    model.graph.input[0].name = "pixels"
    for node in model.graph.node:
        node.input[:] = ["pixels" if n == old else n for n in node.input]
    project.save(model)
    result = project.build()
    assert status(result)["engine[rank0]"] == "built"  # binding names are the engine's interface


def test_weight_only_change_keeps_structure_and_rebuilds_embedded_engine(project):
    first = project.build()
    project.save(make_models.make_conv_block(seed=0, weights_seed=7))
    second = project.build()
    net1, net2 = first.action("network[rank0]"), second.action("network[rank0]")
    assert net1.outputs["structure"] == net2.outputs["structure"]
    assert net1.outputs["weights"] != net2.outputs["weights"]
    assert status(second)["engine[rank0]"] == "built"  # CPU builds embed weights: weights are in the key
    why = "\n".join(project.explain()["engine[rank0]"].lines)
    assert "input `weights` changed" in why and "structure" not in why


def with_leaky_relu(model, alpha):
    """The conv block with its first Relu made a LeakyRelu(alpha): an attribute to change."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    relu.op_type = "LeakyRelu"
    relu.attribute.append(helper.make_attribute("alpha", alpha))
    return m


def test_structural_change_rebuilds_and_explain_diffs_the_network(project):
    project.save(with_leaky_relu(make_models.make_conv_block(seed=0), 0.1))
    first = project.build()
    project.save(with_leaky_relu(make_models.make_conv_block(seed=0), 0.2))
    second = project.build()
    assert status(second) == {"network[rank0]": "built", "engine[rank0]": "built"}
    assert first.action("network[rank0]").outputs["structure"] != second.action("network[rank0]").outputs["structure"]
    why = "\n".join(project.explain()["engine[rank0]"].lines)
    assert "input `structure` changed" not in why  # said as what in the network changed:
    assert "network: layer" in why and "alpha" in why and "0.1" in why and "0.2" in why


def test_builder_options_targets_and_version_change_the_engine_key(project):
    base = project.build().action("engine[rank0]").key
    opt = project.build(overrides=["engine.optimization_level=5"])
    assert status(opt) == {"network[rank0]": "cached", "engine[rank0]": "built"}
    assert opt.action("engine[rank0]").key != base
    tgt = project.build(overrides=['engine.targets=["sm86", "sm120"]'])
    assert tgt.action("engine[rank0]").key not in (base, opt.action("engine[rank0]").key)
    ver = project.build(fingerprint_overrides={"tensorrt_rtx_version": "1.8.0.1"}, dry_run=True)
    assert status(ver)["engine[rank0]"] == "would-build"
    unrelated = project.build(fingerprint_overrides={"tensorrt_version": "10.14"}, dry_run=True)
    assert set(status(unrelated).values()) == {"cached"}  # the other flavour's version is not in the key


def dynamic_mlp(path: Path):
    w = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])], [numpy_helper.from_array(w, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_profile_change_changes_the_engine_key(project):
    dynamic_mlp(project.root / "model.onnx")
    profile = 'engine.profiles=[{{ x = {{ min = [1, 8], opt = [4, 8], max = [{}, 8] }} }}]'
    a = project.build(overrides=[profile.format(16)])
    b = project.build(overrides=[profile.format(32)])
    assert a.action("engine[rank0]").key != b.action("engine[rank0]").key
    assert status(b)["engine[rank0]"] == "built"
    missing = project.build(expect_fail=True)
    assert not missing.ok and "dynamic shape" in missing.error and "'x'" in missing.error


@pytest.mark.parametrize("setting, message", [
    ("engine.optimization_level=9", "optimization_level 9 is out of range"),
    ('engine.targets=["sm90"]', "target 'sm90' is not available"),
    ('engine.refit="yes"', "cannot build refittable engines"),
    ("engine.colour=3", "unknown setting [engine] colour"),
    ('engine.backend="tensorrt"', "'tensorrt' is not installed"),
])
def test_bad_engine_settings_are_one_clear_line(project, setting, message):
    with pytest.raises(TrtcasError) as info:
        project.build(overrides=[setting])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_malformed_or_missing_onnx_is_a_clear_error_and_caches_nothing(project):
    (project.root / "model.onnx").write_bytes(b"\x08\x07 this is not protobuf")
    with pytest.raises(TrtcasError, match="model.onnx"):
        project.build()
    (project.root / "model.onnx").unlink()
    with pytest.raises(TrtcasError, match="not found"):
        project.build()
    assert not (project.root / "out").exists()


def test_what_the_onnx_parser_prints_itself_stays_off_the_terminal(project):
    from support.targets import one_error_line, run_cli

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    cast = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.COMPLEX64)  # the parser prints to fd 2, then fails
    project.save(helper.make_model(helper.make_graph([cast], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]))
    done = run_cli("build", project.root / "trtcas.toml", "--cache-dir", project.cache)
    assert "op Cast" in one_error_line(done)
    assert "Unsupported ONNX data type" not in done.stderr + done.stdout


def test_cli_build_json_and_graph(project):
    cmd = [sys.executable, "-m", "trtcas.cli"]
    out = subprocess.run(cmd + ["build", str(project.root / "trtcas.toml"), "--json", "--cache-dir", str(project.cache)],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert data["ok"] and data["counts"] == {"built": 2}
    graph = subprocess.run(cmd + ["graph", str(project.root / "trtcas.toml"), "--status", "--cache-dir", str(project.cache)],
                           capture_output=True, text=True, check=True).stdout
    assert "engine[rank0]  (trt.engine)  [cached]  <- network[rank0]" in graph


def test_weight_only_change_refits_and_hits_the_engine_with_a_refit_test_double(tmp_path, refit_double):
    project = Project(tmp_path, backend="refit-test-double")
    first = project.build()
    assert status(first) == {"network[rank0]": "built", "plan_shaping_weights[rank0]": "built",
                             "engine[rank0]": "built", "refit[rank0]": "built"}
    assert not first.notes
    engine_file = project.root / "out" / "engines" / "rank0.engine"
    first_bytes = engine_file.read_bytes()
    assert b"REFIT-TEST-DOUBLE:" in first_bytes
    project.save(make_models.make_conv_block(seed=0, weights_seed=3))  # a "fine-tune"
    second = project.build()
    st = status(second)
    assert st["network[rank0]"] == "built" and st["engine[rank0]"] == "cached" and st["refit[rank0]"] == "built"
    assert engine_file.read_bytes() != first_bytes
    assert first.action("engine[rank0]").key == second.action("engine[rank0]").key
    third = project.build()
    assert set(status(third).values()) == {"cached"}


def test_corrupt_cached_engine_is_quarantined_and_rebuilt_not_served(project):
    first = project.build()
    plan = Digest.parse(first.action("engine[rank0]").outputs["plan"])
    store = ContentStore(project.cache)
    blob = store.blobs.locate(plan).path
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 3] ^= 0xFF
    blob.write_bytes(bytes(data))
    (project.root / "out" / "engines" / "rank0.engine").unlink()
    second = project.build()
    assert second.ok and status(second)["engine[rank0]"] == "built"
    assert any("corrupt" in w for w in second.warnings)
    engine = (project.root / "out" / "engines" / "rank0.engine").read_bytes()
    assert bytes(data) != engine and len(engine) > 100_000
    assert list(store.blobs.quarantine_root.iterdir())
