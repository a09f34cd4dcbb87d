"""Builds sharing a real nginx Bazel-protocol cache: two machines, faults, auth."""

import subprocess
import sys
import threading

import onnx

import trtcas
from trtcas.cas.content_store import ContentStore
from trtcas.cas.gc import verify_store

import make_models
from support.fault_proxy import FaultProxy
from support.nginx_server import free_port
from support.remote_fixtures import TEST_TOKEN
from support.targets import CONV_TARGET as TARGET


def machine(tmp_path, name):
    """A project checkout and an empty cache dir, standing for one machine."""
    root = tmp_path / name
    root.mkdir()
    (root / "trtcas.toml").write_text(TARGET.format(backend="auto"))
    onnx.save(make_models.make_conv_block(seed=0), str(root / "model.onnx"))
    return root


def build(root, remote, **kw):
    return trtcas.build(root / "trtcas.toml", cache_dir=root / "cache", remote=remote, **kw)


def statuses(result):
    return {r.id: r.status for r in result.actions}


def test_second_machine_runs_nothing_and_gets_identical_bytes(tmp_path, nginx):
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    first = build(a, nginx.url)
    assert set(statuses(first).values()) == {"built"} and not first.warnings
    second = build(b, nginx.url)
    assert set(statuses(second).values()) == {"remote"}, second.warnings
    engine = "out/engines/rank0.engine"
    assert (a / engine).read_bytes() == (b / engine).read_bytes()
    assert verify_store(ContentStore(b / "cache")).ok
    assert set(statuses(build(b, nginx.url)).values()) == {"cached"}


def test_read_only_consumer_uploads_nothing(tmp_path, nginx):
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    build(a, nginx.url, remote_upload=False)
    assert set(statuses(build(b, nginx.url)).values()) == {"built"}


def test_unreachable_remote_builds_locally_with_one_warning(tmp_path):
    a = machine(tmp_path, "a")
    dead = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "trtcas.cli", "build", str(a / "trtcas.toml"), "--remote", dead,
                             "--cache-dir", str(a / "cache")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and (a / "out" / "engines" / "rank0.engine").exists()


def test_server_killed_mid_build_finishes_locally(tmp_path, nginx):
    project = tmp_path / "p"
    project.mkdir()
    (project / "x.txt").write_text("x")
    actions = "".join(
        f'[[action]]\nid = "step{i}"\nrule = "test.read"\ninputs = {{ src = "x.txt" }}\nparams = {{ repeat = {i + 1}, sleep = 0.15 }}\n'
        for i in range(6))
    (project / "trtcas.toml").write_text(actions)
    killer = threading.Timer(0.25, nginx.stop)
    killer.start()
    result = trtcas.build(project / "trtcas.toml", cache_dir=project / "cache", remote=nginx.url, jobs=1)
    killer.join()
    assert result.ok and set(statuses(result).values()) == {"built"}
    assert result.warnings and any("remote" in w for w in result.warnings)
    assert verify_store(ContentStore(project / "cache")).ok


def test_corrupted_bytes_from_the_server_are_rejected_and_rebuilt(tmp_path, nginx):
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    build(a, nginx.url)
    with FaultProxy(nginx.port) as proxy:
        proxy.set_mode("corrupt", path_contains="/cas/")
        result = build(b, proxy.url)
    assert result.ok
    assert "built" in statuses(result).values()
    assert any("wrong bytes" in w for w in result.warnings)
    assert verify_store(ContentStore(b / "cache")).ok  # nothing bad was written locally
    assert (a / "out/engines/rank0.engine").stat().st_size == (b / "out/engines/rank0.engine").stat().st_size


LLM_TARGET = """
[target]
name = "tiny-llama"
[model]
hf = "hf"
[parallel]
tp = 2
[engine]
targets = ["sm86"]
"""


def test_second_machine_gets_an_llm_target_whole_tensors_included(tmp_path, nginx):
    from make_tiny_llama import make_tiny_llama

    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        make_tiny_llama(root / "hf", seed=0)
        (root / "trtcas.toml").write_text(LLM_TARGET)
    assert build(a, nginx.url).ok
    second = build(b, nginx.url)  # the converts' manifests name tensors: they travel too
    assert second.ok and set(statuses(second).values()) == {"remote"}, (second.error, second.warnings)
    for name in ("checkpoint/rank0.safetensors", "checkpoint/rank1.safetensors"):
        assert (a / "out" / name).read_bytes() == (b / "out" / name).read_bytes()
    assert verify_store(ContentStore(b / "cache")).ok


def test_token_from_environment_is_used_and_never_leaks(tmp_path, nginx_token, monkeypatch, caplog):
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    monkeypatch.setenv("TRTCAS_REMOTE_TOKEN", TEST_TOKEN)
    build(a, nginx_token.url)
    ok = build(b, nginx_token.url)
    assert set(statuses(ok).values()) == {"remote"}
    monkeypatch.setenv("TRTCAS_REMOTE_TOKEN", "wrong-" + TEST_TOKEN)
    c = machine(tmp_path, "c")
    refused = build(c, nginx_token.url)
    assert refused.ok and any("401" in w for w in refused.warnings)
    texts = [refused.to_json(), ok.to_json(), caplog.text]
    texts += [p.read_text() for m in (a, b, c) for p in (m / "out").rglob("*.json")]
    texts += [p.read_text() for m in (a, b, c) for p in (m / "cache" / "logs").rglob("*.jsonl")]
    assert all(TEST_TOKEN not in t for t in texts)
