"""The CLI for daily use: status, log, -v/-q, plain output off a terminal, messages once,
several targets, output names, explain's structured entries, Mermaid labels."""

import json
import re

import onnx
import pytest

import make_models  # examples/ is on the test path
from support.targets import conv_project, one_error_line, run_cli

ANSI = re.compile(r"\x1b\[")
# Every stderr line a successful build prints: a finished action, a note, the verdict.
OUR_LINES = re.compile(r"^(\[\d+/\d+\] +\S+  \S+  \d+\.\d\ds.*|note: .*|warning: .*|\S+: ok in .*)$")


@pytest.fixture
def conv(tmp_path):
    return conv_project(tmp_path / "conv")


def cli(root, *args, env=None):
    return run_cli(*args, "--cache-dir", root.parent / "cache", cwd=root, env=env)


def test_status_says_up_to_date_or_why_it_would_run(conv):
    before = cli(conv, "status")
    assert before.returncode == 0 and "would run" in before.stdout
    cli(conv, "build")
    assert [line.split()[1:] for line in cli(conv, "status").stdout.splitlines()] == [["up", "to", "date"]] * 2
    changed = cli(conv, "status", "--set", "engine.optimization_level=5").stdout.splitlines()
    assert changed[0].split()[1:] == ["up", "to", "date"]
    assert "would run: param effective_config.optimization_level 3 -> 5" in changed[1]
    onnx.save(make_models.make_conv_block(seed=0, weights_seed=3), str(conv / "model.onnx"))
    lines = cli(conv, "status").stdout.splitlines()
    assert "network[rank0]  would run: input `onnx` changed" in lines[0]
    assert lines[1].startswith("engine[rank0]   may run: depends on network[rank0], which would build first")
    data = json.loads(cli(conv, "status", "--json").stdout)
    assert [(a["up_to_date"], a["certain"]) for a in data[0]["actions"]] == [(False, True), (False, False)]


def test_status_says_what_cannot_run_and_exits_non_zero(conv):
    """A missing input: the action that reads it cannot run, the engine after it neither
    (never "up to date"); one error line as the build would give, and a non-zero exit."""
    model = onnx.load(str(conv / "model.onnx"))
    onnx.save_model(model, str(conv / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.data", size_threshold=0)
    assert cli(conv, "build").returncode == 0
    (conv / "model.data").unlink()
    done = cli(conv, "status")
    assert "model.data does not exist" in one_error_line(done)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("network[rank0]  cannot run: input ") and "model.data does not exist" in lines[0]
    assert lines[1] == "engine[rank0]   cannot run: an action it depends on cannot run"
    data = json.loads(cli(conv, "status", "--json").stdout)
    assert [(a["status"], a["up_to_date"]) for a in data[0]["actions"]] == [("failed", False), ("skipped", False)]
    assert "model.data does not exist" in data[0]["actions"][0]["error"]


def test_log_shows_the_builder_log_and_failed_builds_keep_theirs(conv):
    cli(conv, "build")
    log = cli(conv, "log", "engine[rank0]")
    assert log.returncode == 0 and "[I] " in log.stdout and "built in" in log.stdout
    failed = cli(conv, "build", "--set", "engine.memory_pool_limits.workspace=1")
    line = one_error_line(failed)
    assert "(its log: trtcas log 'engine[rank0]')" in line
    log = cli(conv, "log", "engine[rank0]")
    assert log.returncode == 0 and "[E] " in log.stdout and "workspace" in log.stdout
    assert "no action 'nope'" in one_error_line(cli(conv, "log", "nope"))


def test_verbose_streams_the_tensorrt_log_and_quiet_prints_nothing(conv):
    verbose = cli(conv, "build", "-v")
    assert verbose.returncode == 0 and "engine[rank0] | [I] " in verbose.stderr
    quiet = cli(conv, "build", "-q", "--set", "engine.optimization_level=2")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


@pytest.mark.parametrize("env", [{}, {"NO_COLOR": "1"}])
def test_off_a_terminal_lines_are_plain_unwrapped_and_each_said_once(conv, env):
    first = cli(conv, "build", env=env)
    assert not ANSI.search(first.stderr)
    lines = first.stderr.splitlines()
    assert all(OUR_LINES.match(line) for line in lines), lines  # nothing raw from TensorRT
    assert sum(line.startswith("note: ") for line in lines) == 1 and "[2/2]" in first.stderr
    noop = cli(conv, "build", env=env)
    assert "note:" not in noop.stderr  # the refit note only when an engine action runs
    failed = cli(conv, "build", "--set", "engine.memory_pool_limits.workspace=1", env=env)
    error = one_error_line(failed)
    assert len(error) > 100  # one long line, not wrapped at 80 columns
    assert failed.stderr.count("no tactics to implement") == 1  # the error once, not twice
    assert not ANSI.search(failed.stderr)


def test_several_targets_per_run_with_keep_going(tmp_path):
    a, b = conv_project(tmp_path / "v/a", name="a"), conv_project(tmp_path / "v/b", name="b")
    both = run_cli("build", tmp_path / "v", "--cache-dir", tmp_path / "cache", "--json")
    assert both.returncode == 0
    assert [r["target"] for r in json.loads(both.stdout)] == ["a", "b"]
    assert (a / "out/engines/rank0.engine").exists() and (b / "out/engines/rank0.engine").exists()
    (a / "model.onnx").write_bytes(b"not onnx")
    stop = run_cli("build", a / "trtcas.toml", b / "trtcas.toml", "--cache-dir", tmp_path / "cache2")
    assert stop.returncode == 1 and "b: ok" not in stop.stderr
    keep = run_cli("build", a / "trtcas.toml", b / "trtcas.toml", "-k", "--cache-dir", tmp_path / "cache2")
    assert keep.returncode == 1 and "b: ok" in keep.stderr and "model.onnx" in keep.stderr


def test_engine_names_are_configurable_so_variants_do_not_overwrite(conv):
    template = 'output.engine="{target}-O{optimization_level}-{targets}-rank{rank}.engine"'
    for level in (2, 3):
        assert cli(conv, "build", "--set", template, "--set", f"engine.optimization_level={level}").returncode == 0
    names = sorted(p.name for p in (conv / "out").glob("*.engine"))
    assert names == ["conv-O2-sm86-rank0.engine", "conv-O3-sm86-rank0.engine"]
    build_json = json.loads((conv / "out/build.json").read_text())
    assert "conv-O3-sm86-rank0.engine" in build_json["outputs"]


def test_explain_one_line_per_change_cached_omitted_and_json_entries(conv):
    cli(conv, "build")
    cli(conv, "build", "--set", "engine.optimization_level=5")
    text = cli(conv, "explain").stdout.splitlines()
    assert text == ["engine[rank0]: built", "    param effective_config.optimization_level 3 -> 5"]
    assert "network[rank0]: cached" in cli(conv, "explain", "--all").stdout
    entries = json.loads(cli(conv, "explain", "--json").stdout)
    assert entries == [{"action": "engine[rank0]", "status": "built", "changes": [{
        "component": "param effective_config.optimization_level", "before": 3, "after": 5, "detail": ""}]}]


def test_mermaid_labels_read_as_written(conv):
    out = cli(conv, "graph", "--format", "mermaid").stdout
    assert 'n0["network[rank0] (trt.network)"]' in out and 'n1["engine[rank0] (trt.engine)"]' in out
    assert "_rank0_" not in out


def test_explain_names_bindings_and_onnx_nodes(conv):
    from test_pipeline import with_leaky_relu

    model = make_models.make_conv_block(seed=0)
    onnx.save(with_leaky_relu(model, 0.1), str(conv / "model.onnx"))
    cli(conv, "build")
    changed = with_leaky_relu(model, 0.2)
    changed.graph.input[0].name = "pixels"
    for node in changed.graph.node:
        node.input[:] = ["pixels" if name == model.graph.input[0].name else name for name in node.input]
    onnx.save(changed, str(conv / "model.onnx"))
    assert cli(conv, "build").returncode == 0
    why = cli(conv, "explain", "engine[rank0]").stdout
    assert f"bindings: input 0 renamed {model.graph.input[0].name!r} -> 'pixels'" in why
    assert "input `io` changed" not in why
    leaky = next(n for n in changed.graph.node if n.op_type == "LeakyRelu").name
    assert re.search(rf"network: layer '{re.escape(leaky)}' \(L\d+\) \w+: attribute alpha 0\.1\d* -> 0\.2", why), why
    entry = json.loads(cli(conv, "explain", "engine[rank0]", "--json").stdout)[0]
    bindings = next(c for c in entry["changes"] if c["component"] == "bindings")
    assert bindings["after"]["inputs"] == ["pixels"]


def run_in_terminal(args, cwd, env=None, timeout=120):
    """``trtcas ARGS`` with stderr on a pseudo-terminal (as a person sees it); its bytes."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "trtcas.cli", *map(str, args)], cwd=cwd, stderr=follower,
                            stdout=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "120", **(env or {})})
    os.close(follower)
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(leader)
    return proc.returncode, out.decode(errors="replace")


def test_on_a_terminal_a_counter_and_tensorrts_phases_show(tmp_path):
    from support.slow_models import deep_mlp

    root = conv_project(tmp_path / "deep")
    deep_mlp(root / "model.onnx", depth=150)
    code, screen = run_in_terminal(["build", "--cache-dir", tmp_path / "cache"], cwd=root)
    assert code == 0, screen
    assert "planning deep" in screen and "building deep" in screen and "0/2" in screen
    assert "Building engine" in screen  # TensorRT's own phase names, from its progress monitor
    assert "[2/2]" in screen and re.search(r"\x1b\[3\dm", screen)  # finished lines, in color
    code, plain = run_in_terminal(["build", "--cache-dir", tmp_path / "cache2"], cwd=root, env={"NO_COLOR": "1"})
    assert code == 0 and "[2/2]" in plain and not re.search(r"\x1b\[(3|9)\dm", plain)
