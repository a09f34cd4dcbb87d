"""The build-farm pieces that need no running cluster: placement, the engine matrix,
[execution] settings, `trtcas worker start`, and the ray scheduler's errors.

The cluster itself (routing, remote data flow, a killed node) is in test_ray_farm.py.
"""

import json
import subprocess
import sys

import pytest

import trtcas
from trtcas.config import load_config
from trtcas.errors import TrtcasError
from trtcas.graph.placement import Node, action_needs, check_placeable, unplaceable
from trtcas.graph.records import Span, write_trace
from trtcas.graph.rule import RULES
from trtcas.graph.schedulers import execution_settings
from trtcas.graph.schedulers.farm_worker import environment_mismatch

import make_models
from support.targets import CONV_TARGET, LLM_MATRIX_TARGET

RTX = "trtcas/tensorrt_rtx=1.7.1.116"


def conv_project(tmp_path, engine_extra: str = "", execution: str = ""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "model.onnx").write_bytes(make_models.make_conv_block(0).SerializeToString())
    text = CONV_TARGET.format(backend="tensorrt_rtx")
    if engine_extra:
        text = text.replace('targets = ["sm86"]\n', engine_extra + "\n")
    (tmp_path / "trtcas.toml").write_text(text + execution)
    return tmp_path


def cli(*args, python_prefix=()):
    code = "; ".join(["import sys", *python_prefix, "from trtcas.cli import main", "main(sys.argv[1:])"])
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


# ---- placement -----------------------------------------------------------------------------
def test_engine_needs_its_sms_and_the_exact_flavour_version():
    engine = RULES.get("trt.engine")
    params = {"flavour": "tensorrt_rtx", "effective_config": {"targets": ["sm86", "sm89"]}}
    env = {"tensorrt_rtx_version": "1.7.1.116", "plugins": []}
    assert action_needs(engine, params, env) == ("trtcas/sm86", "trtcas/sm89", RTX, "trtcas/worker")
    # A build on the GPU itself (no AOT targets): the SM its key names.
    gpu = {"flavour": "tensorrt", "effective_config": {"targets": ["sm90"]}}
    assert action_needs(engine, gpu, {"tensorrt_version": "10.9.0", "gpu_sm": "sm90"}) == (
        "trtcas/sm90", "trtcas/tensorrt=10.9.0", "trtcas/worker")


def test_network_needs_only_the_flavour_and_rules_without_placement_any_worker():
    network = RULES.get("trt.network")
    assert action_needs(network, {"flavour": "tensorrt_rtx"}, {"tensorrt_rtx_version": "1.7.1.116"}) == (RTX, "trtcas/worker")
    assert action_needs(RULES.get("llm.convert"), {}, {}) == ("trtcas/worker",)
    refit = RULES.get("trt.refit")
    assert "trtcas/sm86" in action_needs(refit, {"flavour": "tensorrt_rtx"}, {"tensorrt_rtx_version": "1.7.1.116", "gpu_sm": "sm86"})


def test_no_node_offering_a_resource_names_it():
    nodes = [Node("a", "host-a", frozenset({"trtcas/worker", RTX, "trtcas/sm86"})),
             Node("b", "host-b", frozenset({"trtcas/worker", "trtcas/sm89"}))]
    needs = ("trtcas/sm120", RTX, "trtcas/worker")
    why = unplaceable("engine[sm120]", needs, nodes)
    assert why.startswith("no Ray node offers trtcas/sm120 (needed by engine[sm120])") and "--sm sm120" in why
    # Both exist, but never on one node.
    split = unplaceable("engine[sm89]", ("trtcas/sm89", RTX, "trtcas/worker"), nodes)
    assert split.startswith("no single Ray node offers all of")
    assert unplaceable("engine[sm86]", ("trtcas/sm86", RTX, "trtcas/worker"), nodes) is None
    with pytest.raises(TrtcasError, match="trtcas/sm120"):
        check_placeable([("engine[sm86]", ("trtcas/sm86",)), ("engine[sm120]", needs)], nodes)
    with pytest.raises(TrtcasError, match="no live nodes"):
        check_placeable([("x", ())], [])


def test_a_worker_refuses_a_key_that_names_another_environment():
    claimed = {"tensorrt_rtx_version": "1.7.1.116", "plugins": []}
    assert environment_mismatch(claimed, dict(claimed)) == []
    wrong = environment_mismatch(claimed, {"tensorrt_rtx_version": "1.7.0.1", "plugins": []})
    assert wrong == ["tensorrt_rtx_version is '1.7.0.1' here, the key says '1.7.1.116'"]


# ---- the engine matrix -----------------------------------------------------------------------
MATRIX = 'matrix = [{ targets = ["sm86"] }, { targets = ["sm120"] }]'


def test_matrix_gives_one_engine_per_entry_with_the_keys_of_single_builds(tmp_path):
    matrix = conv_project(tmp_path / "matrix", MATRIX)
    result = trtcas.build(matrix / "trtcas.toml", cache_dir=tmp_path / "cache", jobs=2)  # two targets at once
    assert result.ok, result.error
    assert {r.id: r.status for r in result.actions} == {
        "network[rank0]": "built", "engine[sm86]": "built", "engine[sm120]": "built"}
    assert (matrix / "out/engines/sm86.engine").stat().st_size > 0 and (matrix / "out/engines/sm120.engine").exists()
    for sm in ("sm86", "sm120"):  # an entry is exactly the engine a target naming it alone would build
        single = conv_project(tmp_path / sm, f'targets = ["{sm}"]')
        alone = trtcas.build(single / "trtcas.toml", cache_dir=tmp_path / "cache")
        assert alone.action("engine[rank0]").key == result.action(f"engine[{sm}]").key
        assert alone.action("engine[rank0]").status == "cached"


def test_matrix_entries_may_be_named_and_llm_ids_keep_the_rank(tmp_path):
    from trtcas.api import plan_graph

    from make_tiny_llama import make_tiny_llama

    named = conv_project(tmp_path / "named", 'matrix = [{ name = "ampere", targets = ["sm80", "sm86"] }, { targets = ["sm89"] }]')
    graph = plan_graph(load_config(named / "trtcas.toml"))
    assert set(graph.nodes) == {"network[rank0]", "engine[ampere]", "engine[sm89]"}
    assert graph.nodes["engine[ampere]"]["action"].materialize == {"plan": "engines/ampere.engine"}
    llm = tmp_path / "llm"
    make_tiny_llama(llm / "hf", seed=0)
    (llm / "trtcas.toml").write_text(LLM_MATRIX_TARGET)
    engines = {n: a for n, a in plan_graph(load_config(llm / "trtcas.toml")).nodes(data="action") if a.rule == "trt.engine"}
    assert set(engines) == {"engine[rank0,sm86]", "engine[rank0,sm120]", "engine[rank1,sm86]", "engine[rank1,sm120]"}
    assert engines["engine[rank1,sm120]"].materialize == {"plan": "engines/rank1-sm120.engine"}


@pytest.mark.parametrize("matrix, message", [
    ("matrix = []", "non-empty list of tables"),
    ('matrix = "sm86"', "non-empty list of tables"),
    ('matrix = [{ backend = "tensorrt" }]', "cannot set backend"),
    ('matrix = [{ profiles = [] }]', "cannot set profiles"),
    ("matrix = [{ optimization_level = 2 }]", "give it targets or a name"),
    ('matrix = [{ targets = ["sm86"] }, { targets = ["sm86"] }]', "'sm86' is already entry 0"),
    ('matrix = [{ targets = ["sm90"] }]', "sm90"),
    ('matrix = [{ name = "a b", targets = ["sm86"] }]', "letters, digits"),
])
def test_bad_matrix_is_a_user_error(tmp_path, matrix, message):
    """A TrtcasError: the CLI prints it as one `trtcas: error:` line (test_cli_* check that path)."""
    project = conv_project(tmp_path, matrix)
    with pytest.raises(TrtcasError) as caught:
        trtcas.build(project / "trtcas.toml", cache_dir=tmp_path / "cache")
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not (project / "out").exists()


# ---- [execution] and the scheduler flags ---------------------------------------------------
def test_execution_settings_flags_over_the_table():
    assert execution_settings(None, None, None) == ("threads", None)
    assert execution_settings({"scheduler": "ray", "address": "10.0.0.1:6379"}, None, None) == ("ray", "10.0.0.1:6379")
    assert execution_settings({"scheduler": "ray", "address": "a:1"}, "threads", None) == ("threads", "a:1")
    assert execution_settings({"scheduler": "ray", "address": "a:1"}, None, "b:2") == ("ray", "b:2")
    assert execution_settings(None, None, "b:2") == ("ray", "b:2")  # a cluster address alone means the farm
    with pytest.raises(TrtcasError, match="--ray-address b:2 is for the ray scheduler.*'threads'"):
        execution_settings(None, "threads", "b:2")
    with pytest.raises(TrtcasError, match=r"\[execution\]: unknown setting\(s\) adress"):
        execution_settings({"adress": "x"}, None, None)
    with pytest.raises(TrtcasError, match="unknown scheduler 'slurm'"):
        execution_settings({"scheduler": "slurm"}, None, None)
    with pytest.raises(TrtcasError, match="must be a non-empty string"):
        execution_settings({"address": 6379}, None, None)


def test_without_ray_the_ray_scheduler_says_how_to_install_it(tmp_path):
    project = conv_project(tmp_path)
    done = cli("build", str(project), "--cache-dir", str(tmp_path / "cache"), "--scheduler", "ray",
               python_prefix=["sys.modules['ray'] = None"])  # as if Ray were not installed
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "trtcas: error: the ray scheduler needs Ray, which is not installed: pip install 'trtcas[ray]'"]


def test_a_cached_build_never_contacts_the_farm_and_a_miss_names_an_unreachable_head(tmp_path):
    project = conv_project(tmp_path, execution='\n[execution]\nscheduler = "ray"\naddress = "127.0.0.1:9"\n')
    done = cli("build", str(project), "--cache-dir", str(tmp_path / "cache"), "--json", "--scheduler", "threads")
    assert done.returncode == 0, done.stderr
    again = cli("build", str(project), "--cache-dir", str(tmp_path / "cache"), "--json")  # [execution]: ray
    assert again.returncode == 0, again.stderr
    records = json.loads(again.stdout)["actions"]
    assert {r["status"] for r in records} == {"cached"} and all(r["node_id"] is None for r in records)
    miss = cli("build", str(project), "--cache-dir", str(tmp_path / "empty"))
    assert miss.returncode == 1
    assert miss.stderr.strip().splitlines()[-1].startswith("trtcas: error: cannot reach the Ray head at 127.0.0.1:9")
    assert not list((tmp_path / "empty" / "ac").rglob("*"))  # nothing ran, nothing was recorded


# ---- trtcas worker start ---------------------------------------------------------------------
def test_worker_start_offers_this_hosts_targets_and_narrows_with_sm():
    done = cli("worker", "start", "--address", "10.0.0.1:6379", "--sm", "sm86", "--sm", "sm120", "--dry-run")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert set(plan["resources"]) == {"trtcas/sm86", "trtcas/sm120", RTX, "trtcas/worker"}
    assert plan["command"][1:4] == ["start", "--address", "10.0.0.1:6379"]
    everything = json.loads(cli("worker", "start", "--address", "h:1", "--dry-run").stdout)["resources"]
    assert {"trtcas/sm75", "trtcas/sm80", "trtcas/sm86", "trtcas/sm89", "trtcas/sm120"} <= set(everything)
    assert "trtcas/sm90" not in everything  # no Hopper in TensorRT-RTX
    bad = cli("worker", "start", "--address", "h:1", "--sm", "sm90", "--dry-run")
    assert bad.returncode == 1 and bad.stderr.startswith("trtcas: error: --sm sm90: this host cannot build for it")


# ---- the trace: a track per node ----------------------------------------------------------------
def test_trace_has_a_process_track_per_node(tmp_path):
    spans = [Span("network[rank0]", "trt.network", "built", 1.0, 2.0, 0, "hostA 1234"),
             Span("engine[sm86]", "trt.engine", "built", 2.0, 3.0, 1, "hostB 5678"),
             Span("engine[sm120]", "trt.engine", "cached", 2.0, 2.1, 0, "")]
    write_trace(tmp_path / "t.json", spans, 0.0)
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["name"] == "process_name"}
    assert sorted(names.values()) == ["hostA 1234", "hostB 5678", "trtcas build"]
    pid_of = {e["name"]: e["pid"] for e in events if e.get("ph") == "X"}
    assert names[pid_of["engine[sm86]"]] == "hostB 5678" and names[pid_of["engine[sm120]"]] == "trtcas build"
