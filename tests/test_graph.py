import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pydot
import pytest

import trtcas.api as trtcas_build
from trtcas.cas.content_store import ContentStore
from trtcas.cas.digest import Digest
from trtcas.config import load_config
from trtcas.graph.explain import explain_builds
from trtcas.graph.history import load_build
from trtcas.graph.render import FORMATS
from trtcas.graph.rule import RULES

TESTS = Path(__file__).parent

TARGET = """
[target]
name = "words"
[output]
dir = "out"

[[action]]
id = "read_a"
rule = "test.read"
inputs = {{ src = "a.txt" }}
params = {{ repeat = {repeat}, label = "{label}" }}

[[action]]
id = "read_b"
rule = "test.read"
inputs = {{ src = "b.txt" }}

[[action]]
id = "upper_a"
rule = "test.upper"
inputs = {{ text = "@read_a:out" }}

[[action]]
id = "upper_b"
rule = "test.upper"
inputs = {{ text = "@read_b:out" }}

[[action]]
id = "join"
rule = "test.concat"
inputs = {{ x = "@upper_a:out", y = "@upper_b:out" }}
params = {{ order = ["x", "y"], sep = "{sep}" }}
materialize = {{ out = "joined.txt" }}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    runlog = tmp_path / "runs.log"
    monkeypatch.setenv("TRTCAS_TEST_RUNLOG", str(runlog))
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "b.txt").write_text("beta")

    class Project:
        root = tmp_path
        cache = tmp_path / "cache"

        def write(self, repeat=1, label="x", sep="+"):
            (tmp_path / "trtcas.toml").write_text(TARGET.format(repeat=repeat, label=label, sep=sep))

        def build(self, *actions, **kw):
            runlog.write_text("")
            kw.setdefault("cache_dir", self.cache)
            return trtcas_build.build(tmp_path / "trtcas.toml", actions, **kw)

        def runs(self):
            return sorted(runlog.read_text().split())

    p = Project()
    p.write()
    return p


def statuses(result):
    return {r.id: r.status for r in result.actions}


def test_first_build_runs_all_second_runs_nothing(project):
    first = project.build()
    assert first.ok and set(statuses(first).values()) == {"built"}
    assert (project.root / "out" / "joined.txt").read_text() == "ALPHA+BETA"
    second = project.build()
    assert set(statuses(second).values()) == {"cached"} and project.runs() == []
    assert [r.key for r in first.actions] == [r.key for r in second.actions]
    build_json = json.loads((project.root / "out" / "build.json").read_text())
    assert build_json["actions"]["join"]["key"] == first.action("join").key


def test_changing_one_input_reruns_exactly_its_downstream_cone(project):
    project.build()
    (project.root / "a.txt").write_text("ALPHA-2")
    result = project.build()
    assert project.runs() == ["join", "read_a", "upper_a"]
    assert statuses(result)["read_b"] == statuses(result)["upper_b"] == "cached"
    assert (project.root / "out" / "joined.txt").read_text() == "ALPHA-2+BETA"


def test_param_change_reruns_and_cosmetic_param_does_not(project):
    project.build()
    project.write(label="renamed for the dashboard")
    assert project.build().ok and project.runs() == []
    project.write(sep="/")
    assert project.build().ok and project.runs() == ["join"]


def test_source_path_spelling_does_not_change_keys(project):
    first = project.build()
    text = (project.root / "trtcas.toml").read_text()
    (project.root / "sub").mkdir()
    (project.root / "trtcas.toml").write_text(text.replace('src = "a.txt"', 'src = "./sub/../a.txt"'))
    (project.root / "a_copy.txt").write_text("alpha")
    text2 = (project.root / "trtcas.toml").read_text().replace('src = "b.txt"', 'src = "' + str(project.root / "b.txt") + '"')
    (project.root / "trtcas.toml").write_text(text2)
    second = project.build()
    assert [r.key for r in first.actions] == [r.key for r in second.actions] and project.runs() == []


def test_identical_keys_run_once_and_are_shared(project):
    (project.root / "b.txt").write_text("alpha")  # both branches now have the same content
    result = project.build()
    st = statuses(result)
    assert sorted([st["read_a"], st["read_b"]]) == ["built", "shared"]
    assert sorted([st["upper_a"], st["upper_b"]]) == ["built", "shared"]
    assert project.runs().count("join") == 1 and len(project.runs()) == 3
    assert result.action("read_a").key == result.action("read_b").key


def test_failing_action_caches_nothing_and_next_build_retries(project, tmp_path):
    (tmp_path / "switch").write_text("ok")
    (tmp_path / "trtcas.toml").write_text(textwrap.dedent("""
        [[action]]
        id = "flaky"
        rule = "test.fail"
        inputs = { switch = "switch" }
        materialize = { out = "flaky.txt" }
    """))
    assert project.build().ok
    before = (tmp_path / "out" / "flaky.txt").stat().st_ino
    (tmp_path / "switch").write_text("fail")
    failed = project.build()
    assert not failed.ok and failed.action("flaky").status == "failed"
    assert "the switch file says fail" in failed.error
    assert (tmp_path / "out" / "flaky.txt").stat().st_ino == before  # previous output untouched
    again = project.build()
    assert again.action("flaky").status == "failed" and project.runs() == ["flaky"]  # retried, not cached


def test_downstream_of_failure_is_skipped(project):
    project.build()
    (project.root / "a.txt").unlink()
    result = project.build()
    assert not result.ok
    st = statuses(result)
    assert st["read_a"] == "failed" and st["upper_a"] == "skipped" and st["join"] == "skipped"
    assert "a.txt does not exist" in result.error


def test_selecting_actions_builds_only_them_and_their_ancestors(project):
    result = project.build("upper_b")
    assert sorted(statuses(result)) == ["read_b", "upper_b"]
    by_rule = project.build("test.upper")
    assert sorted(statuses(by_rule)) == ["read_a", "read_b", "upper_a", "upper_b"]
    with pytest.raises(Exception, match="no action or rule named 'nope'"):
        project.build("nope")


def test_dry_run_runs_nothing_and_names_what_would_build(project):
    result = project.build(dry_run=True)
    assert project.runs() == [] and set(statuses(result).values()) == {"would-build"}
    project.build()
    (project.root / "b.txt").write_text("changed")
    dry = project.build(dry_run=True)
    assert statuses(dry) == {"read_a": "cached", "read_b": "would-build", "upper_a": "cached",
                             "upper_b": "would-build", "join": "would-build"}
    assert "read_b" in dry.action("upper_b").reason


def test_fingerprint_field_declared_by_a_rule_is_in_its_key_only(project):
    first = project.build()
    second = project.build(fingerprint_overrides={"tensorrt_rtx_version": "9.9.9"})
    assert project.runs() == ["join"]
    assert first.action("upper_a").key == second.action("upper_a").key


def test_explain_names_the_changed_components(project):
    project.build()
    project.write(sep="/")
    (project.root / "b.txt").write_text("beta-2")
    project.build(fingerprint_overrides={"tensorrt_rtx_version": "2.0"})
    store = ContentStore(project.cache)
    slug = load_config(project.root / "trtcas.toml").slug
    explanations = {e.action_id: e for e in explain_builds(load_build(store.root, slug, "previous"), load_build(store.root, slug), RULES, store.blobs)}
    join = "\n".join(explanations["join"].lines)
    assert "param sep '+' -> '/'" in join
    assert "fingerprint tensorrt_rtx_version" in join and "-> '2.0'" in join
    assert re.search(r"input `y` changed blake3:[0-9a-f]{12}\.\. -> blake3:[0-9a-f]{12}\.\.", join)
    assert explanations["read_b"].lines[0].startswith("input `src` changed")
    assert explanations["read_a"].lines == ("not re-run (cached)",)


def test_graph_formats_parse(project):
    graph = trtcas_build.plan_graph(load_config(project.root / "trtcas.toml"))
    dot = pydot.graph_from_dot_data(FORMATS["dot"](graph, {"join": "would-build"}))[0]
    assert {n.get_name().strip('"') for n in dot.get_nodes()} >= {"read_a", "join"}
    assert len(dot.get_edges()) == 4
    data = json.loads(FORMATS["json"](graph))
    assert {a["id"] for a in data["actions"]} == {"read_a", "read_b", "upper_a", "upper_b", "join"}
    assert data["actions"][-1]["depends_on"] == ["upper_a", "upper_b"]
    mermaid = FORMATS["mermaid"](graph).splitlines()
    assert mermaid[0] == "flowchart LR"
    node = re.compile(r'^    n\d+\["[^"\[\]]+"\]$')
    edge = re.compile(r"^    n\d+ -->\|[^|]*\| n\d+$")
    assert all(node.match(l) or edge.match(l) for l in mermaid[1:])
    assert sum(bool(edge.match(l)) for l in mermaid) == 4


def test_profile_and_execution_log(project, tmp_path):
    project.build(profile=tmp_path / "trace.json", jobs=2)
    trace = json.loads((tmp_path / "trace.json").read_text())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {s["name"] for s in spans} == {"read_a", "read_b", "upper_a", "upper_b", "join"}
    assert all(s["dur"] >= 0 and s["ts"] >= 0 for s in spans)
    logs = list((project.cache / "logs").rglob("*.jsonl"))
    lines = [json.loads(l) for l in logs[0].read_text().splitlines()]
    assert {l["id"] for l in lines} == {"read_a", "read_b", "upper_a", "upper_b", "join"}
    assert all(Digest.parse(l["key"]) for l in lines)


def test_two_processes_building_at_once_run_each_action_once(project, tmp_path):
    text = (tmp_path / "trtcas.toml").read_text().replace('label = "x"', 'label = "x", sleep = 0.5')
    (tmp_path / "trtcas.toml").write_text(text)
    (tmp_path / "runs.log").write_text("")
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(TESTS)!r})
        import trtcas
        from support import graph_rules; graph_rules.register()
        r = trtcas.build({str(tmp_path / 'trtcas.toml')!r}, cache_dir={str(project.cache)!r}, jobs=2)
        print(r.to_json())
    """)
    env = dict(os.environ, TRTCAS_TEST_RUNLOG=str(tmp_path / "runs.log"))
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env) for _ in range(2)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    assert all(r["ok"] for r in results)
    assert sorted((tmp_path / "runs.log").read_text().split()) == ["join", "read_a", "read_b", "upper_a", "upper_b"]
    both = [a["status"] for r in results for a in r["actions"]]
    assert both.count("built") == 5 and both.count("cached") == 5


def test_bad_target_files_give_one_line_errors(tmp_path):
    from trtcas.errors import TrtcasError
    cases = {
        "missing rule": '[[action]]\nid = "a"\n',
        "unknown rule": '[[action]]\nid = "a"\nrule = "no.such"\n',
        "unknown action": '[[action]]\nid = "a"\nrule = "test.upper"\ninputs = { text = "@ghost:out" }\n',
        "cycle": '[[action]]\nid = "a"\nrule = "test.upper"\ninputs = { text = "@b:out" }\n[[action]]\nid = "b"\nrule = "test.upper"\ninputs = { text = "@a:out" }\n',
        "bad toml": "[[action]\n",
        "duplicate": '[[action]]\nid = "a"\nrule = "test.upper"\n[[action]]\nid = "a"\nrule = "test.upper"\n',
    }
    for name, text in cases.items():
        (tmp_path / "trtcas.toml").write_text(text)
        with pytest.raises(TrtcasError) as info:
            trtcas_build.build(tmp_path / "trtcas.toml", cache_dir=tmp_path / "c")
        assert "\n" not in str(info.value), name
    with pytest.raises(TrtcasError, match="not found"):
        trtcas_build.build(tmp_path / "nope.toml", cache_dir=tmp_path / "c")
