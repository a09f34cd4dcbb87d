"""Ctrl-C during a real engine build: exit 130 within 2 s, nothing left behind, and the next
build succeeds; TensorRT's own progress monitor carries progress and the cancel."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trtcas.errors import TrtcasError
from trtcas.graph.interrupt import BuildCancelled

from support.slow_models import deep_mlp
from support.targets import CONV_TARGET


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """A target whose engine takes seconds to build on the CPU (checked in the test)."""
    root = tmp_path_factory.mktemp("slow")
    (root / "trtcas.toml").write_text(CONV_TARGET.format(backend="auto"))
    deep_mlp(root / "model.onnx", depth=800)
    return root


def start_build(root: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trtcas.cli", "build", "-v", "--cache-dir", str(cache)],
                            cwd=root, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def wait_for_engine_build(proc: subprocess.Popen) -> None:
    """Until TensorRT logs its first builder line (-v streams it)."""
    for line in proc.stderr:
        if line.startswith("engine[rank0] | [I]"):
            return
    raise AssertionError("the engine build never started")


def leftovers(cache: Path) -> list[str]:
    tmp = cache / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_during_a_cold_engine_build(slow, tmp_path, presses):
    cache = tmp_path / "cache"
    proc = start_build(slow, cache)
    wait_for_engine_build(proc)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    if presses == 2:
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    code = proc.wait(timeout=30)
    waited = time.monotonic() - sent
    assert code == 130, rest
    assert waited < 2.0
    assert "cancel" in rest and "Traceback" not in rest
    assert leftovers(cache) == []
    assert not (slow / "out/engines/rank0.engine").exists()
    start = time.monotonic()
    again = subprocess.run([sys.executable, "-m", "trtcas.cli", "build", "--cache-dir", str(cache)], cwd=slow,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "built  engine[rank0]" in again.stderr  # a cancelled build cached nothing
    assert time.monotonic() - start > 2.0  # the build Ctrl-C cut short takes longer than 2 s
    assert leftovers(cache) == []
    (slow / "out/engines/rank0.engine").unlink()


class Context:
    """What the engine rule's progress monitor talks to (a RunContext's progress/cancelled)."""

    def __init__(self, cancel_after_steps=None):
        self.steps: list[tuple[str, int, int]] = []
        self.cancel_after = cancel_after_steps

    def progress(self, phase, step, total):
        self.steps.append((phase, step, total))

    def cancelled(self):
        return self.cancel_after is not None and len(self.steps) >= self.cancel_after


def parsed_conv(tmp_path):
    import onnx

    from trtcas.rules.onnx_source.parse import parse_onnx
    from trtcas.rules.trt.backend import load_backend

    import make_models

    onnx.save(make_models.make_conv_block(seed=0), str(tmp_path / "conv.onnx"))
    backend = load_backend("auto")
    return backend, parse_onnx(backend, tmp_path / "conv.onnx")


def test_the_progress_monitor_reports_phases_and_its_cancel_stops_tensorrt(tmp_path):
    from trtcas.rules.trt.engine import EngineSpec, build_plan
    from trtcas.rules.trt.monitor import monitoring

    backend, parsed = parsed_conv(tmp_path)
    ctx = Context()
    with monitoring(ctx):
        plan = build_plan(backend, parsed, EngineSpec(targets=("sm86",)), False)
    assert plan.plan and {phase for phase, _, _ in ctx.steps} >= {"Building engine"}
    assert all(0 <= step <= max(total, step) for _, step, total in ctx.steps)
    backend, parsed = parsed_conv(tmp_path)
    stop = Context(cancel_after_steps=3)
    with pytest.raises(BuildCancelled):
        with monitoring(stop):
            build_plan(backend, parsed, EngineSpec(targets=("sm86",)), False)
    assert isinstance(BuildCancelled("x"), TrtcasError)
